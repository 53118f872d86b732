//! The load generator: HTTP/2 over TLS with keep-alive connections and many concurrent
//! streams, as the API server calls a webhook. Closed loop for saturation, open loop (requests
//! sent on a schedule, latency counted from the scheduled time, so a stall is not hidden) for
//! fixed rates, and one request at a time for serial latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;

use crate::stats::{Summary, summarize};

/// A request to send again and again, and what its answer must contain.
#[derive(Clone, Debug)]
pub struct Target {
    pub method: http::Method,
    pub port: u16,
    pub path: String,
    pub body: Bytes,
    /// A byte string the answer must contain (e.g. `"allowed":false`).
    pub expect: String,
}

/// Open HTTP/2 connections to one server.
#[derive(Clone)]
pub struct Client {
    conns: Vec<SendRequest<Full<Bytes>>>,
    next: Arc<AtomicUsize>,
    target: Arc<Target>,
    uri: http::Uri,
}

fn tls_config(ca_pem: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

impl Client {
    /// Opens `connections` TLS connections (HTTP/2 by ALPN) to `localhost:<port>`.
    pub async fn connect(ca_pem: &str, target: Target, connections: usize) -> anyhow::Result<Self> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca_pem)?));
        let mut conns = Vec::new();
        for _ in 0..connections.max(1) {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", target.port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector
                .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
                .await
                .context("TLS handshake failed")?;
            let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .max_concurrent_reset_streams(1024)
                .handshake(TokioIo::new(tls))
                .await?;
            tokio::spawn(conn);
            conns.push(send);
        }
        let uri = format!("https://localhost:{}{}", target.port, target.path).parse()?;
        Ok(Client {
            conns,
            next: Arc::new(AtomicUsize::new(0)),
            target: Arc::new(target),
            uri,
        })
    }

    /// What this client sends.
    pub fn target(&self) -> Target {
        (*self.target).clone()
    }

    /// One request: the answer's status and body.
    pub async fn send(&self) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        let mut send = self.conns[i].clone();
        send.ready().await?;
        let req = http::Request::builder()
            .method(self.target.method.clone())
            .uri(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(self.target.body.clone()))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Whether the answer to one request holds `needle`.
    pub async fn answer_has(&self, needle: &str) -> anyhow::Result<bool> {
        let (_, body) = self.send().await?;
        Ok(contains(&body, needle.as_bytes()))
    }

    /// One request; fails unless the answer is 200 and holds the expected bytes.
    pub async fn call(&self) -> anyhow::Result<()> {
        let (status, body) = self.send().await?;
        if status != http::StatusCode::OK {
            bail!("answer {status}: {}", String::from_utf8_lossy(&body));
        }
        if !contains(&body, self.target.expect.as_bytes()) {
            bail!(
                "answer lacks {}: {}",
                self.target.expect,
                String::from_utf8_lossy(&body[..body.len().min(400)])
            );
        }
        Ok(())
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Requests per second with `workers` requests always in flight for `duration`.
pub async fn saturate(client: &Client, workers: usize, duration: Duration) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (c, done) = (client.clone(), done.clone());
        set.spawn(async move {
            while Instant::now() < deadline {
                c.call().await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Result of an open-loop run.
#[derive(Clone, Debug)]
pub struct RateRun {
    pub summary: Summary,
    /// Requests per second actually completed.
    pub achieved: f64,
}

/// At most this many requests in flight in an open-loop run; past it, requests wait (and their
/// latency, counted from the schedule, shows it).
const MAX_IN_FLIGHT: usize = 2000;

/// `rate` requests per second for `duration`, latency from each request's scheduled time.
pub async fn fixed_rate(client: &Client, rate: f64, duration: Duration) -> anyhow::Result<RateRun> {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut lat = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
        while sent < due {
            let scheduled = start + Duration::from_secs_f64(sent as f64 / rate);
            let slot = slots.clone().acquire_owned().await?;
            let c = client.clone();
            set.spawn(async move {
                let r = c.call().await;
                drop(slot);
                r.map(|()| scheduled.elapsed())
            });
            sent += 1;
        }
        // Collect finished ones as we go so the set stays small.
        while let Some(r) = set.try_join_next() {
            lat.push(r??);
        }
    }
    while let Some(r) = set.join_next().await {
        lat.push(r??);
    }
    let wall = start.elapsed();
    Ok(RateRun {
        summary: summarize(lat),
        achieved: total as f64 / wall.as_secs_f64(),
    })
}

/// `n` requests one after the other.
pub async fn serial(client: &Client, n: usize) -> anyhow::Result<Summary> {
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.call().await?;
        lat.push(t.elapsed());
    }
    Ok(summarize(lat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_expected_bytes() {
        assert!(contains(br#"{"allowed":false}"#, br#""allowed":false"#));
        assert!(!contains(br#"{"allowed":true}"#, br#""allowed":false"#));
        assert!(contains(b"x", b""));
    }
}
