//! Serving an axum router over HTTP/1.1 and HTTP/2, with or without TLS, with a graceful stop:
//! on shutdown the listener closes, in-flight requests finish (up to a deadline), then return.

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::tls::ReloadingTls;

/// How long a client may take to finish the TLS handshake; a stalled client must not hold a
/// connection slot forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after shutdown; below Kubernetes' default 30s
/// termination grace period so the pod exits cleanly.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` is cancelled. With `tls`, connections are
/// TLS (the certificate follows reloads); without, plain HTTP (the `--local` mode and the admin
/// port).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<ReloadingTls>,
    shutdown: CancellationToken,
) -> Result<()> {
    let local = listener.local_addr().map_err(Error::Serve)?;
    let acceptor = tls.map(|tls| TlsAcceptor::from(tls.server_config()));
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tracing::debug!(addr = %local, tls = acceptor.is_some(), "serving");

    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(addr = %local, error = %err, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    watcher.watch(conn.into_owned()).await
                }
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(addr = %local, "in-flight requests did not finish before the drain deadline");
    }
    Ok(())
}
