//! Serving an axum router over HTTP/1.1 and HTTP/2, with or without TLS, with a graceful stop:
//! on shutdown the listener closes, in-flight requests finish (up to a deadline), then return.
//! Every request carries its connection's remote address (see [`crate::peer`]).
//!
//! Serving is bounded ([`Limits`]): a cap on open connections, deadlines for the TLS handshake,
//! for reading request headers and for an idle connection, HTTP/2 stream and keep-alive limits,
//! and a deadline on each request's handler. A slow, idle or greedy client costs a bounded amount
//! of memory and cannot hold the server's slots forever; that matters most for a fail-closed
//! webhook, where a stuck server stops pod deletions cluster-wide.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::error::{Error, Result};
use crate::peer::ConnectInfo;
use crate::tls::ReloadingTls;

/// How long in-flight requests get to finish once serving stops. With the drain period before it
/// (`--shutdown-drain`, 10s) this stays below Kubernetes' default 30s termination grace period,
/// so the pod exits cleanly; handlers have a deadline well under it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Bounds on what clients may hold. [`Limits::default`] suits a webhook called by the API server
/// with `timeoutSeconds: 5` and an admin or gRPC port; tests shorten the timeouts.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Connections open at once; past it the server stops accepting until one closes (the
    /// kernel's backlog holds the rest), so memory stays bounded whatever clients do.
    pub max_connections: usize,
    /// A client must finish the TLS handshake within this.
    pub handshake_timeout: Duration,
    /// An HTTP/1 request's headers must arrive within this (also closes an idle keep-alive
    /// HTTP/1 connection after it): the slow-header ("slowloris") defence.
    pub header_read_timeout: Duration,
    /// A connection on which no byte moved either way for this long is closed. HTTP/2
    /// connections in use stay alive through keep-alive pings.
    pub idle_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Interval of HTTP/2 keep-alive pings; a peer that does not answer within
    /// `keep_alive_timeout` is dropped (a dead API server connection is noticed).
    pub keep_alive_interval: Duration,
    /// See `keep_alive_interval`.
    pub keep_alive_timeout: Duration,
    /// A handler must produce its response head within this, else the client gets 503. Below
    /// the webhooks' `timeoutSeconds` (5s), so the API server sees our answer, not its timeout.
    /// Streaming responses (gRPC watches) are bounded only until their head.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_concurrent_streams: 250,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(4),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, with the default [`Limits`].
/// With `tls`, connections are TLS (the certificate follows reloads); without, plain HTTP (the
/// `--local` mode and the admin port).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<ReloadingTls>,
    shutdown: CancellationToken,
) -> Result<()> {
    serve_with(listener, router, tls, shutdown, Limits::default()).await
}

/// [`serve`] with explicit [`Limits`].
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    tls: Option<ReloadingTls>,
    shutdown: CancellationToken,
    limits: Limits,
) -> Result<()> {
    let local = listener.local_addr().map_err(Error::Serve)?;
    let acceptor = tls.map(|tls| TlsAcceptor::from(tls.server_config()));
    let builder = builder(&limits);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let router = with_deadline(router, limits.request_timeout);
    tracing::debug!(addr = %local, tls = acceptor.is_some(), "serving");

    loop {
        // Take a connection slot first: at the cap, stop accepting rather than grow.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
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
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let activity = Activity::new();
            let stream = Tracked::new(stream, activity.clone());
            let served = async {
                match acceptor {
                    Some(acceptor) => {
                        let tls = match tokio::time::timeout(
                            limits.handshake_timeout,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return Ok(());
                            }
                        };
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    None => {
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                }
            };
            tokio::select! {
                result = served => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                }
                () = activity.idle_for(limits.idle_timeout) => {
                    tracing::debug!(%peer, "closed an idle connection");
                }
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

fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keep_alive_interval)
        .keep_alive_timeout(limits.keep_alive_timeout);
    builder
}

/// Answers 503 when a handler has not produced its response head within `deadline`.
fn with_deadline(router: Router, deadline: Duration) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(deadline, next.run(req)).await {
                Ok(response) => response,
                Err(_) => {
                    tracing::warn!(?deadline, "a request missed its deadline");
                    (
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("the request did not complete within {deadline:?}\n"),
                    )
                        .into_response()
                }
            }
        },
    ))
}

/// When a connection last moved a byte, shared between its I/O and its idle watch.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// An I/O stream that records activity on every read and write that moved bytes.
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S> Tracked<S> {
    fn new(inner: S, activity: Activity) -> Self {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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

    async fn get_status(addr: SocketAddr, path: &str) -> u16 {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(String::new())
            .unwrap();
        sender.send_request(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn a_handler_past_its_deadline_gets_503_and_the_server_goes_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" }));
        let limits = Limits {
            request_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_with(listener, router, None, shutdown.clone(), limits));
        let started = Instant::now();
        assert_eq!(get_status(addr, "/slow").await, 503);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(get_status(addr, "/fast").await, 200);
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn past_the_connection_cap_new_clients_wait_until_a_slot_frees() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "ok" }));
        let limits = Limits {
            max_connections: 1,
            ..Limits::default()
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_with(listener, router, None, shutdown.clone(), limits));
        let holder = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Let the server accept the holder before the second client arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = tokio::spawn(get_status(addr, "/"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "served past the cap");
        drop(holder);
        let status = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("served once the slot freed")
            .unwrap();
        assert_eq!(status, 200);
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_with(
            listener,
            Router::new(),
            None,
            shutdown.clone(),
            limits,
        ));
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
            .await
            .expect("closed by the server within the idle timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
