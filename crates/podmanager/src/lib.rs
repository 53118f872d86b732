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
pub mod batch;
pub mod convert;
pub mod crd;
pub mod error;
pub mod health;
pub mod metrics;
pub mod plan;
pub mod pods;
pub mod reconcile;
pub mod status;
pub mod template;
#[cfg(test)]
mod testing;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ballast_runtime::leader::LeaseConfig;
use ballast_runtime::{KubeAccess, Service, Tasks};
use kube::runtime::events::{Recorder, Reporter};
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

/// Everything `start` needs, built from [`Args`] or by tests.
#[derive(Clone, Debug)]
pub struct Config {
    /// Admin endpoints; port 0 picks a free port (see [`Running::admin_addr`]).
    pub admin_addr: SocketAddr,
    /// How to reach the API server: the shared kube flags, or a client handed in.
    pub kube: KubeAccess,
    /// Only PodManagers in this namespace (`WATCH_NAMESPACE`); all namespaces when `None`.
    pub watch_namespace: Option<String>,
    /// The Lease to hold while reconciling; `None` reconciles without one (a single replica,
    /// or tests).
    pub leader_election: Option<LeaseConfig>,
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

/// A started operator: where it listens, and its tasks.
pub struct Running {
    pub admin_addr: SocketAddr,
    /// Where the conversion webhook listens, if it is served.
    pub webhook_addr: Option<SocketAddr>,
    reconciles: Arc<AtomicU64>,
    leading: watch::Receiver<bool>,
    tasks: Tasks<Error>,
}

impl Running {
    /// Reconciles this instance has run so far.
    pub fn reconcile_count(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }

    /// Whether this instance leads (always true without leader election).
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until every task has stopped (after `shutdown`, or the first failure, which
    /// stops the others and is returned); the Lease is released last.
    pub async fn wait(self) -> Result<()> {
        self.tasks.wait().await
    }

    /// Ends it at once, as a crash (SIGKILL) would: nothing drains, its Lease is not released
    /// (a standby takes over once it expires). For fault tests.
    pub fn abort(self) {
        self.tasks.abort();
    }
}

/// Runs until `shutdown` (or a task's failure).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Builds the client, binds the listeners (port 0 picks a free one), starts the operator and
/// returns at once with the bound addresses.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let Config {
        admin_addr,
        kube,
        watch_namespace,
        leader_election,
        identity,
        control_endpoint,
        control_client,
        webhook,
    } = config;
    let mut svc = Service::new("podmanager", env!("CARGO_PKG_VERSION"), &shutdown);
    // Every family described and every counter at 0 before anything is served.
    let metrics = metrics::Metrics::new();
    let client = svc.client(&kube).await?;

    let webhook_addr = match webhook {
        Some(w) => Some(webhook::start(&mut svc, &client, w).await?),
        None => None,
    };

    let (admin, admin_addr) = svc
        .bind("the admin server (--admin-port, ADMIN_PORT)", admin_addr)
        .await?;
    svc.readiness().register(READY_NODE_HEALTH);
    svc.serve_admin(admin);

    let (health, _health_task) = match &control_endpoint {
        Some(endpoint) => {
            tracing::info!(endpoint = %endpoint, "node health from the control service");
            health::watch_control(endpoint, &control_client, svc.shutdown())
                .map_err(Error::Control)?
        }
        None => health::watch_nodes(client.clone(), svc.shutdown()),
    };
    {
        let mut health = health.clone();
        let readiness = svc.readiness().clone();
        tokio::spawn(async move {
            if health.wait_for(|h| h.known).await.is_ok() {
                readiness.set(READY_NODE_HEALTH, true);
            }
        });
    }

    let reconciles = Arc::new(AtomicU64::new(0));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(identity),
        },
    );
    let (events, writer) = reconcile::event_writer(recorder, svc.shutdown());
    svc.spawn("the event writer", async move {
        writer.await;
        Ok::<(), Error>(())
    });
    let ctx = Arc::new(reconcile::Context {
        events,
        client: client.clone(),
        metrics,
        health,
        reconciles: reconciles.clone(),
        pods: Arc::default(),
    });
    tracing::info!(namespace = ?watch_namespace, "starting the PodManager operator");
    let leading = svc.run_while_leading(
        "the PodManager controller",
        &client,
        leader_election,
        move |stop| {
            let ctx = ctx.clone();
            let namespace = watch_namespace.clone();
            async move { reconcile::run_controller(ctx, namespace.as_deref(), stop).await }
        },
    );
    Ok(Running {
        admin_addr,
        webhook_addr,
        reconciles,
        leading,
        tasks: svc.into_tasks(),
    })
}
