//! The admin server on port 8080: `/healthz` (the process answers), `/readyz` (every registered
//! check passes: caches synced, leader state known) and `/metrics` (Prometheus text).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// How often histogram storage is compacted when nothing scrapes /metrics.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Named readiness checks. The process is ready when every registered check is set ready.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    checks: Arc<RwLock<BTreeMap<String, bool>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check that starts not ready.
    pub fn register(&self, check: &str) {
        self.write().entry(check.to_owned()).or_insert(false);
    }

    /// Marks a check ready or not (registering it if needed).
    pub fn set(&self, check: &str, ready: bool) {
        self.write().insert(check.to_owned(), ready);
    }

    /// Whether every check is ready.
    pub fn is_ready(&self) -> bool {
        self.read().values().all(|ready| *ready)
    }

    /// The checks that are not ready yet, by name.
    pub fn pending(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, bool>> {
        // A poisoned lock only means a writer panicked mid-insert of a bool: the map is intact.
        self.checks.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, bool>> {
        self.checks.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The admin routes, for services that mount them on a listener of their own choosing.
pub fn router(readiness: Readiness) -> Router {
    let handle = crate::metrics::prometheus();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> impl IntoResponse {
    if crate::shutdown::terminating() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n".to_owned(),
        );
    }
    let pending = readiness.pending();
    if pending.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", pending.join(", ")),
        )
    }
}

/// Serves the admin routes over plain HTTP until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<()> {
    let handle = crate::metrics::prometheus();
    let upkeep_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = upkeep_stop.cancelled() => return,
                _ = ticker.tick() => handle.run_upkeep(),
            }
        }
    });
    crate::http::serve(listener, router(readiness), None, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_registered_check() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready(), "no checks means ready");
        readiness.register("nodes-synced");
        readiness.register("leader-known");
        assert!(!readiness.is_ready());
        readiness.set("nodes-synced", true);
        assert_eq!(readiness.pending(), vec!["leader-known".to_owned()]);
        readiness.set("leader-known", true);
        assert!(readiness.is_ready());
        readiness.register("nodes-synced");
        assert!(readiness.is_ready(), "registering again keeps the state");
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics_until_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let readiness = Readiness::new();
        readiness.register("cache");
        let shutdown = CancellationToken::new();
        // Recording before the recorder exists would go nowhere: services install it first.
        crate::metrics::prometheus();
        let server = tokio::spawn(serve(listener, readiness.clone(), shutdown.clone()));
        metrics::counter!("admin_test_hits_total").increment(1);

        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("http://{addr}{path}")).send();
        let health = get("/healthz").await.unwrap();
        assert_eq!(health.status(), 200);
        let ready = get("/readyz").await.unwrap();
        assert_eq!(ready.status(), 503);
        assert_eq!(ready.text().await.unwrap(), "not ready: cache\n");
        readiness.set("cache", true);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let metrics = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(metrics.contains("admin_test_hits_total 1"), "{metrics}");

        shutdown.cancel();
        server.await.unwrap().unwrap();
        assert!(
            get("/healthz").await.is_err(),
            "listener closed after shutdown"
        );
    }
}
