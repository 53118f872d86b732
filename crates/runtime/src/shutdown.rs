//! One shutdown signal for every task and server of a process.

pub use tokio_util::sync::CancellationToken;

/// Exit code after a second signal: the conventional 128 + SIGINT.
const FORCED_EXIT_CODE: i32 = 130;

/// A token cancelled on the first SIGTERM or SIGINT. A second signal exits the process at once,
/// for an operator who does not want to wait for in-flight work.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing in-flight work (signal again to exit now)");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(FORCED_EXIT_CODE);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "failed to listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
