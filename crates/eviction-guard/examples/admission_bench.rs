//! Admission latency of `/validate` as the API server sees it: TLS, HTTP/2, one connection, the
//! captured taint-eviction DELETE (refused: the longest path, message included) and the
//! node controller's status update, sequential and with concurrent callers.
//!
//! `cargo run --release -p eviction-guard --example admission_bench [requests]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_runtime::auth::Authenticator;
use ballast_runtime::tls::ReloadingTls;
use eviction_guard::callback::Callbacks;
use eviction_guard::rules::Policy;
use eviction_guard::storm::{NodeState, StormConfig};
use eviction_guard::{Guard, webhook_router};
use tokio_util::sync::CancellationToken;

const DELETE_TAINT: &str =
    include_str!("../tests/data/pod-delete-node-controller-taint-eviction.json");
const STATUS_NOT_READY: &str =
    include_str!("../tests/data/pod-status-update-node-controller-not-ready.json");
/// Concurrent callers in the second run: an API server sends many reviews at once in a storm.
const CONCURRENCY: usize = 16;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(idx).copied().unwrap_or_default()
}

async fn run(
    http: &reqwest::Client,
    url: &str,
    bodies: &[&'static str],
    n: usize,
    callers: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..callers {
        let (http, url, bodies) = (http.clone(), url.to_owned(), bodies.to_vec());
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(n / callers);
            for i in 0..n / callers {
                let body = bodies[(i + c) % bodies.len()];
                let t = Instant::now();
                let resp = http.post(&url).body(body).send().await?;
                anyhow::ensure!(resp.status() == 200, "status {}", resp.status());
                resp.bytes().await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    all.sort_unstable();
    Ok((all, started.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(4000);
    ballast_runtime::tls::install_crypto_provider();
    let guard = Guard::new(StormConfig::default(), None);
    guard.replace_workers((1..=100).map(|i| NodeState {
        name: if i == 1 {
            "node-a".to_owned()
        } else {
            format!("node-{i}")
        },
        ready: i > 10,
        since: Some(chrono::Utc::now()),
        reason: "NodeStatusUnknown".to_owned(),
        zone: None,
        out_of_service: false,
    }));
    let dir = tempfile::tempdir()?;
    let cert = ballast_runtime::tls::generate(&["localhost"])?;
    let (c, k) = cert.write_to(dir.path())?;
    let callbacks = Callbacks::new(
        guard.clone(),
        Authenticator::AllowAll,
        false,
        ballast_control::DEFAULT_SET_MODE_PER_SECOND,
    );
    let router = webhook_router(Arc::clone(&guard), Policy::default(), None, callbacks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ballast_runtime::http::serve(
        listener,
        router,
        Some(ReloadingTls::load(&c, &k)?),
        shutdown.clone(),
    ));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.ca_pem.as_bytes())?)
        .http2_prior_knowledge()
        .build()?;
    let url = format!("https://localhost:{port}/validate");
    let bodies = [DELETE_TAINT, STATUS_NOT_READY];
    run(&http, &url, &bodies, 200, 1).await?; // warm-up: handshake, allocations
    for callers in [1, CONCURRENCY] {
        let (lat, wall) = run(&http, &url, &bodies, n, callers).await?;
        println!(
            "{} reviews, {callers} caller(s): p50 {:?}  p99 {:?}  max {:?}  throughput {:.0}/s",
            lat.len(),
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or_default(),
            lat.len() as f64 / wall.as_secs_f64()
        );
    }
    shutdown.cancel();
    server.await??;
    Ok(())
}
