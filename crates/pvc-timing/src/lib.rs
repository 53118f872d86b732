//! pvc-timing: the phase history of every PersistentVolumeClaim, and its time to bind.
//!
//! In: AdmissionReviews for PVC CREATE/UPDATE (incl. `/status`) from the API server; a watch on
//! PVCs. Out: a JSON patch keeping the `pvc-timing` annotation
//! (`{"currentPhase":..,"timings":[{"phase":..,"time":..}]}`, the seed's shape); a one-time
//! `webhook-trigger: "<unix seconds>"` annotation on Bound claims (controller, leader-elected);
//! metrics `pvc_phase_transitions_total{phase}` and `pvc_time_to_bound_seconds{storage_class}`,
//! counted by the controller from the stored history.
//!
//! The pure decisions live in [`timing`] (the history fold), [`admission::mutate`] (the patch)
//! and [`controller::plan`] (trigger, what to count); the rest is I/O.

pub mod admission;
pub mod args;
pub mod controller;
pub mod error;
pub mod metrics;
pub mod timing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use ballast_runtime::admin::Readiness;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::admission::{Clock, FixedClock, SystemClock};
pub use crate::args::Args;
pub use crate::controller::ControllerConfig;
pub use crate::error::{Error, Result};

/// The Kubernetes API calls this service makes, for least-privilege RBAC:
/// (API group, resource, verbs). The webhook itself calls nothing.
pub const RBAC: &[(&str, &str, &[&str])] = &[
    // controller: watch claims, add webhook-trigger and the counted mark.
    (
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "patch"],
    ),
    // controller: a time-to-bound label names only classes that exist.
    ("storage.k8s.io", "storageclasses", &["get"]),
    // leader election.
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// How often the serving certificate files are checked for rotation.
const CERT_RELOAD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
/// Readiness check registered while the webhook listener is being set up.
const WEBHOOK_READY: &str = "webhook";

/// Where the webhook listens and with which certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    /// (certificate, key) PEM files; None serves plain HTTP (`--local`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Generate the certificate into `tls`'s files at start-up (no cert-manager).
    pub self_signed: Option<SelfSigned>,
}

/// The self-signed bootstrap: Secret and webhook configuration, in the service's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    pub args: ballast_runtime::bootstrap::SelfSignedArgs,
    pub namespace: String,
}

/// How to reach the API server (the controller, and the webhook's self-signed bootstrap).
pub use ballast_runtime::kubeclient::KubeAccess;

/// The whole service; a None component is off.
#[derive(Debug, Clone)]
pub struct Config {
    pub webhook: Option<WebhookConfig>,
    pub controller: Option<ControllerConfig>,
    /// The admin server (`/healthz`, `/readyz`, `/metrics`); None in tests that need none.
    pub admin_addr: Option<SocketAddr>,
    pub kube: KubeAccess,
}

/// A started service: where it listens, and its tasks.
pub struct Running {
    pub webhook_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    tasks: JoinSet<Result<()>>,
}

impl Running {
    /// Waits for every task to end (after shutdown), returning the first error.
    pub async fn wait(mut self) -> Result<()> {
        let mut first = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let result = joined.map_err(Error::Task).and_then(|r| r);
            if let (Err(err), Ok(())) = (result, &first) {
                first = Err(err);
            }
        }
        first
    }
}

/// Runs until `shutdown` is cancelled and every task has finished.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Binds the listeners (port 0 picks a free one), starts every enabled component and returns
/// at once with the bound addresses.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    start_with_clock(config, Arc::new(SystemClock), shutdown).await
}

/// [`start`] with a chosen clock (tests).
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<Running> {
    let Config {
        webhook,
        controller,
        admin_addr,
        kube,
    } = config;
    ballast_runtime::metrics::build_info("pvc-timing", env!("CARGO_PKG_VERSION"));
    metrics::describe();
    let readiness = Readiness::new();
    let mut tasks = JoinSet::new();

    let client = if needs_client(webhook.as_ref(), controller.as_ref()) {
        Some(kube.client().await.map_err(Error::KubeClient)?)
    } else {
        None
    };

    let mut webhook_addr = None;
    if let Some(mut webhook) = webhook {
        if let (Some(self_signed), Some(client), Some((cert, _))) =
            (&webhook.self_signed, &client, &webhook.tls)
        {
            let cert_dir = cert.parent().unwrap_or_else(|| std::path::Path::new("."));
            let paths = ballast_runtime::bootstrap::prepare(
                &self_signed.args,
                client,
                &self_signed.namespace,
                ballast_runtime::bootstrap::WebhookKind::Mutating,
                cert_dir,
            )
            .await
            .map_err(Error::Bootstrap)?;
            if let Some(paths) = paths {
                webhook.tls = Some(paths);
            }
        }
        readiness.register(WEBHOOK_READY);
        let (listener, addr) = bind("the webhook", webhook.addr).await?;
        webhook_addr = Some(addr);
        let tls = match &webhook.tls {
            Some((cert, key)) => {
                let tls =
                    ballast_runtime::tls::ReloadingTls::load(cert, key).map_err(Error::Tls)?;
                drop(tls.spawn_reloader(CERT_RELOAD_INTERVAL, shutdown.clone()));
                Some(tls)
            }
            None => None,
        };
        let router = Router::new().route(
            admission::PATH,
            ballast_runtime::admission::route(
                admission::WEBHOOK_NAME,
                Arc::new(admission::Webhook::new(clock.clone())),
            ),
        );
        tracing::info!(%addr, tls = tls.is_some(), path = admission::PATH, "serving the pvc-timing webhook");
        readiness.set(WEBHOOK_READY, true);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            ballast_runtime::http::serve(listener, router, tls, stop)
                .await
                .map_err(|source| Error::Serve {
                    what: "the webhook",
                    source,
                })
        });
    }

    if let (Some(controller), Some(client)) = (controller, client) {
        let stop = shutdown.clone();
        let clock = clock.clone();
        tasks.spawn(async move { controller::run(client, controller, clock, stop).await });
    }

    let mut bound_admin = None;
    if let Some(addr) = admin_addr {
        let (listener, addr) = bind("the admin server", addr).await?;
        bound_admin = Some(addr);
        let stop = shutdown.clone();
        tasks.spawn(async move {
            ballast_runtime::admin::serve(listener, readiness, stop)
                .await
                .map_err(|source| Error::Serve {
                    what: "the admin server",
                    source,
                })
        });
    }

    Ok(Running {
        webhook_addr,
        admin_addr: bound_admin,
        tasks,
    })
}

/// The API is needed by the controller, and by the webhook only to bootstrap its certificate.
fn needs_client(webhook: Option<&WebhookConfig>, controller: Option<&ControllerConfig>) -> bool {
    controller.is_some()
        || webhook.is_some_and(|w| {
            w.tls.is_some()
                && w.self_signed
                    .as_ref()
                    .is_some_and(|s| s.args.self_signed_secret.is_some())
        })
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { what, addr, source })?;
    Ok((listener, local))
}
