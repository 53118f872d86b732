//! One shutdown signal for every task and server of a process, with a drain period: on the first
//! SIGTERM or SIGINT `/readyz` fails at once ([`terminating`]), the servers keep answering for
//! the drain period (so the endpoints controller and load balancers stop sending traffic before
//! the listeners close), then the token is cancelled and everything stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// Exit code after a second signal: the conventional 128 + SIGINT.
const FORCED_EXIT_CODE: i32 = 130;

/// Set on the first signal; the admin server's `/readyz` fails from then on.
static TERMINATING: AtomicBool = AtomicBool::new(false);

/// The drain flag every service carries.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct ShutdownArgs {
    /// After SIGTERM, keep serving this long with /readyz failing before the listeners close, so
    /// traffic moves to other replicas first. Keep it below the pod's
    /// terminationGracePeriodSeconds (30s by default) minus ~10s for in-flight work.
    #[arg(
        long = "shutdown-drain",
        env = "SHUTDOWN_DRAIN",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub drain: Duration,
}

/// Whether the process received its stop signal (and is draining or stopping).
pub fn terminating() -> bool {
    TERMINATING.load(Ordering::Relaxed)
}

/// A token cancelled on the first SIGTERM or SIGINT, without a drain period.
pub fn on_signals() -> CancellationToken {
    on_signals_after(Duration::ZERO)
}

/// A token cancelled `drain` after the first SIGTERM or SIGINT; [`terminating`] turns true at
/// once. A second signal exits the process at once, for an operator who does not want to wait.
pub fn on_signals_after(drain: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        TERMINATING.store(true, Ordering::Relaxed);
        tracing::info!(
            ?drain,
            "shutdown requested: not ready, serving for the drain period, then finishing \
             in-flight work (signal again to exit now)"
        );
        tokio::select! {
            () = tokio::time::sleep(drain) => {}
            () = wait_for_signal() => exit_now(),
        }
        trigger.cancel();
        wait_for_signal().await;
        exit_now();
    });
    token
}

fn exit_now() {
    tracing::warn!("second signal: exiting without waiting");
    std::process::exit(FORCED_EXIT_CODE);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        shutdown: ShutdownArgs,
    }

    #[test]
    fn drain_defaults_to_ten_seconds_and_takes_human_durations() {
        let default = Cli::try_parse_from(["svc"]).unwrap();
        assert_eq!(default.shutdown.drain, Duration::from_secs(10));
        let set = Cli::try_parse_from(["svc", "--shutdown-drain", "2m"]).unwrap();
        assert_eq!(set.shutdown.drain, Duration::from_secs(120));
        let err = Cli::try_parse_from(["svc", "--shutdown-drain", "soon"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("--shutdown-drain"), "{err}");
    }
}
