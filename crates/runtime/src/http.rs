//! Serving an axum router over HTTP/1.1 and HTTP/2, with or without TLS, with a graceful stop:
//! on shutdown the listener closes, in-flight requests finish (up to a deadline), then return.
//! Every request carries its connection's remote address (see [`crate::peer`]).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::{Error, Result};
use crate::peer::ConnectInfo;
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
        // Handlers read the client's address from the request (see `peer`).
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        ));
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::routing::get;

    use super::*;

    #[tokio::test]
    async fn handlers_see_the_clients_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, None, shutdown.clone()));

        // A client bound to a known local port, so the expected address is exact.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client_addr = socket.local_addr().unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/peer")
            .header(http::header::HOST, addr.to_string())
            .body(String::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, client_addr.to_string());

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
