//! PodManager operator (DESIGN §8): keeps `spec.replicas` pods named `<name>-<ordinal>` running
//! `spec.image` for every `PodManager` (`apps.mycompany.com/v1`).
//!
//! In: PodManagers and the pods they own (watched), node health (Node objects, or the control
//! service's node health and interception state with `--control-endpoint`), a leader Lease.
//! Out: pod creates and deletes, PodManager status (status subresource) and finalizer, Events,
//! metrics and `/healthz` `/readyz` `/metrics` on the admin port.
//!
//! [`plan`] and [`status`] decide (pure); [`reconcile`] reads and writes the API.

pub mod args;
pub mod convert;
pub mod crd;
pub mod error;
pub mod health;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod status;
pub mod template;
#[cfg(test)]
mod testing;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ballast_runtime::admin::Readiness;
use ballast_runtime::leader::{self, LeaseConfig};
use kube::runtime::events::{Recorder, Reporter};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use args::{Args, Command};
pub use crd::{PodManager, PodManagerSpec, PodManagerStatus};
pub use error::{Error, Result};

/// Label naming the owning PodManager (seed name; `kubectl get pods -l podmanager=NAME`).
pub const LABEL_NAME: &str = "podmanager";
/// Label with the owning PodManager's uid (seed name).
pub const LABEL_UID: &str = "podmanager-uid";
/// Finalizer that lets the operator delete the pods before the PodManager goes.
pub const FINALIZER: &str = "podmanager.ballast.dev/cleanup";
/// Reporting controller name on Events.
pub const CONTROLLER_NAME: &str = "podmanager";
/// Longest wait for in-flight reconciles when stopping (shorter than a pod's 30s grace period).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause before restarting a controller that ended on its own, so a failure cannot spin.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Readiness check: node health has been read once.
const READY_NODE_HEALTH: &str = "node-health";

/// The Kubernetes API calls the operator makes, for least-privilege RBAC:
/// (API group, resource, verbs).
pub const RBAC: &[(&str, &str, &[&str])] = &[
    // watch through list+watch; finalizer add/remove by patch.
    (
        "apps.mycompany.com",
        "podmanagers",
        &["list", "watch", "patch"],
    ),
    ("apps.mycompany.com", "podmanagers/status", &["patch"]),
    // blockOwnerDeletion on the pods' owner reference.
    ("apps.mycompany.com", "podmanagers/finalizers", &["update"]),
    ("", "pods", &["list", "watch", "create", "delete"]),
    // Only without --control-endpoint.
    ("", "nodes", &["list", "watch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    // Leader election (ballast_runtime::leader reads, creates and replaces its Lease).
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// Everything `run` needs, built from [`Args`] or by tests.
#[derive(Clone, Debug)]
pub struct Config {
    /// Admin endpoints; port 0 picks a free port (see [`Running::admin_addr`]).
    pub admin_addr: SocketAddr,
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Only PodManagers in this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// `None` reconciles without a Lease (a single replica, or tests).
    pub leader_election: Option<LeaderElection>,
    /// Instance name on Events.
    pub identity: String,
    /// Control service (e.g. `http://eviction-guard.ballast-system.svc:9090`) for node health
    /// and eviction protection; Node objects' Ready condition when `None`.
    pub control_endpoint: Option<String>,
    /// CA and token files for the control service.
    pub control_client: ballast_control::ControlClientArgs,
    /// The v1/v2 conversion webhook, served by every replica; `None` serves none.
    pub webhook: Option<webhook::WebhookConfig>,
}

/// A started operator.
pub struct Running {
    admin_addr: SocketAddr,
    webhook_addr: Option<SocketAddr>,
    reconciles: Arc<AtomicU64>,
    leading: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    /// Where the admin endpoints listen.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the conversion webhook listens, if it is served.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhook_addr
    }

    /// Reconciles this instance has run so far.
    pub fn reconcile_count(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }

    /// Whether this instance leads (always true without leader election).
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until the operator has stopped (after the shutdown token is cancelled).
    pub async fn join(self) -> Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(error = %join, "operator task ended abnormally");
                Ok(())
            }
        }
    }
}

/// Builds the client from the config, binds the admin port and runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    let client = ballast_runtime::kubeclient::client(
        config.kubeconfig.as_deref(),
        config.context.as_deref(),
    )
    .await
    .map_err(Error::Client)?;
    let admin = TcpListener::bind(config.admin_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.admin_addr,
            source,
        })?;
    start(config, client, admin, shutdown).await?.join().await
}

/// Starts the operator with an injected client and a bound admin listener; returns at once.
pub async fn start(
    config: Config,
    client: kube::Client,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> Result<Running> {
    let Config {
        admin_addr: _,
        kubeconfig: _,
        context: _,
        namespace,
        leader_election,
        identity,
        control_endpoint,
        control_client,
        webhook,
    } = config;
    ballast_runtime::metrics::build_info("podmanager", env!("CARGO_PKG_VERSION"));
    let admin_addr = admin.local_addr().map_err(|source| Error::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;

    let webhook_addr = match webhook {
        Some(w) => Some(webhook::start(&client, w, shutdown.clone()).await?.0),
        None => None,
    };

    let readiness = Readiness::new();
    readiness.register(READY_NODE_HEALTH);
    let admin_task = tokio::spawn(ballast_runtime::admin::serve(
        admin,
        readiness.clone(),
        shutdown.clone(),
    ));

    let (health, _health_task) = match &control_endpoint {
        Some(endpoint) => {
            tracing::info!(endpoint = %endpoint, "node health from the control service");
            health::watch_control(endpoint, &control_client, shutdown.clone())
                .map_err(Error::Control)?
        }
        None => health::watch_nodes(client.clone(), shutdown.clone()),
    };
    {
        let mut health = health.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            if health.wait_for(|h| h.known).await.is_ok() {
                readiness.set(READY_NODE_HEALTH, true);
            }
        });
    }

    // Without election the flag stays true; its sender must outlive the controller.
    let (always_leading, unelected) = watch::channel(true);
    let (leading, lease_task) = match leader_election {
        Some(le) => {
            let cfg = LeaseConfig {
                namespace: le.namespace,
                name: le.name,
                identity: le.identity,
                lease_duration: le.lease_duration,
                renew_every: le.renew_every,
            };
            let (rx, task) = leader::spawn(client.clone(), cfg, shutdown.clone());
            (rx, Some(task))
        }
        None => (unelected, None),
    };

    let reconciles = Arc::new(AtomicU64::new(0));
    let ctx = Arc::new(reconcile::Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER_NAME.into(),
                instance: Some(identity),
            },
        ),
        client,
        metrics: metrics::Metrics::new(),
        health,
        reconciles: reconciles.clone(),
    });

    let leading_out = leading.clone();
    let task = tokio::spawn(async move {
        lead_and_reconcile(ctx, namespace, leading, shutdown).await;
        drop(always_leading);
        if let Some(task) = lease_task {
            // The Lease is released on shutdown; wait so a successor can take over at once.
            let _ = task.await;
        }
        match admin_task.await {
            Ok(result) => result.map_err(Error::Admin),
            Err(_) => Ok(()),
        }
    });
    Ok(Running {
        admin_addr,
        webhook_addr,
        reconciles,
        leading: leading_out,
        task,
    })
}

/// Runs the controller whenever this instance leads; stops it (finishing in-flight reconciles)
/// when leadership is lost or on shutdown.
async fn lead_and_reconcile(
    ctx: Arc<reconcile::Context>,
    namespace: Option<String>,
    mut leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    loop {
        // biased: once shutdown is cancelled, never start another controller.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            ok = until(&mut leading, true) => if !ok { return },
        }
        tracing::info!(namespace = ?namespace, "leading: starting the PodManager controller");
        let stop = shutdown.child_token();
        let controller = reconcile::run_controller(ctx.clone(), namespace.as_deref(), stop.clone());
        tokio::pin!(controller);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                drain(controller).await;
                return;
            }
            _ = &mut controller => {
                tracing::warn!(namespace = ?namespace, "the PodManager controller ended; restarting it");
                tokio::time::sleep(RESTART_DELAY).await;
            }
            _ = until(&mut leading, false) => {
                tracing::info!(namespace = ?namespace, "lost leadership: stopping the PodManager controller");
                stop.cancel();
                drain(controller).await;
            }
        }
    }
}

/// Lets in-flight reconciles finish after the stop signal, within [`DRAIN_TIMEOUT`]: a
/// controller whose caches never synced does not finish by itself.
async fn drain(controller: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(DRAIN_TIMEOUT, controller)
        .await
        .is_err()
    {
        tracing::warn!("the PodManager controller did not stop in time; dropping it");
    }
}

/// Waits until the flag equals `want`; false when the flag's sender is gone.
async fn until(flag: &mut watch::Receiver<bool>, want: bool) -> bool {
    flag.wait_for(|v| *v == want).await.is_ok()
}
