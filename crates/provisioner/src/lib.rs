//! Ballast provisioner: hostPath and NFS dynamic provisioning, an external provisioner in the
//! Kubernetes sense (the PV controller binds; we provision what it hands us).
//!
//! One binary, two roles:
//! - the **controller** (a Deployment, one replica acting while holding the Lease) makes every
//!   API write for volumes: PVs created pre-bound, Released ones deleted, `selected-node` removed
//!   to reschedule, the binding-problem annotation, Events. For NFS it also creates and removes
//!   the directories in the export it mounts. In: claims, volumes, classes, Nodes, the agents'
//!   capacity reports, node health from the control service (optional).
//! - the **node agent** (a DaemonSet, with `--node-name`) creates, archives and removes the
//!   hostPath directories on its own node and reports the node's free space in a Lease of its
//!   own. In: only the volumes labelled for its node; the live API before removing data.
//!
//! Rooms: `objects` (names and field accessors), `plan` (the pure decisions: claim, volume,
//! placement), `controller` and `agent` (the I/O of each role), `events` (the event writer),
//! `capacity` (the agents' reports), `pv` (the volume we create), `storage` and `paths` (the
//! directories), `informer` (watches into caches).

pub mod agent;
pub mod args;
pub mod capacity;
pub mod controller;
pub mod error;
pub mod events;
pub mod informer;
pub mod metrics;
pub mod objects;
pub mod paths;
pub mod plan;
pub mod pv;
pub mod quantity;
pub mod queue;
pub mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use agent::AgentConfig;
pub use args::Args;
pub use error::{Error, Result};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "ballast-provisioner";

type Rbac = &'static [(&'static str, &'static str, &'static [&'static str])];

/// The controller's Kubernetes API calls, for least-privilege RBAC: (group, resource, verbs).
/// Leases only in its own namespace (its election, the agents' reports).
pub const CONTROLLER_RBAC: Rbac = &[
    (
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "patch"],
    ),
    (
        "",
        "persistentvolumes",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "storage.k8s.io",
        "storageclasses",
        &["get", "list", "watch"],
    ),
    ("", "nodes", &["get", "list", "watch"]),
    ("events.k8s.io", "events", &["create"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "list", "watch", "create", "update"],
    ),
];

/// A node agent's Kubernetes API calls: read volumes (its node's, by label) and claims (the
/// live check before removing data), and write its own capacity report in its namespace. No
/// write to volumes, claims or Nodes.
pub const AGENT_RBAC: Rbac = &[
    ("", "persistentvolumes", &["get", "list", "watch"]),
    ("", "persistentvolumeclaims", &["get"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

#[derive(Debug, Clone)]
pub struct NfsConfig {
    /// Server name written into PVs (`NFS_SERVER`).
    pub server: String,
    /// Exported directory on the server; PVs point at `export_path/<directory>`.
    pub export_path: PathBuf,
    /// Where the export is reachable here; directories are created at `mount/<directory>`.
    pub mount: PathBuf,
}

/// How to reach the API server.
pub use ballast_runtime::kubeclient::KubeAccess;

/// The controller role.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Act only while holding this Lease.
    pub lease: ballast_runtime::leader::LeaseConfig,
    /// Serve the hostPath class: the base directory on every node (the agents' HOSTPATH_BASE).
    pub hostpath: Option<PathBuf>,
    /// Serve the NFS class.
    pub nfs: Option<NfsConfig>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Run the controller; `None` for an agent only.
    pub controller: Option<ControllerConfig>,
    /// Be the hostPath agent of a node.
    pub agent: Option<AgentConfig>,
    /// The provisioner's namespace, where agents' capacity reports live.
    pub namespace: String,
    pub control_endpoint: Option<String>,
    /// CA and token files for the control service.
    pub control_client: ballast_control::ControlClientArgs,
    /// Admin server address (port 0 picks one); `None` serves no admin endpoints.
    pub admin_addr: Option<SocketAddr>,
    pub kube: KubeAccess,
    /// Name in events and in the agent's report.
    pub identity: String,
    pub resync: Duration,
}

/// A started provisioner.
pub struct Running {
    pub admin_addr: Option<SocketAddr>,
    tasks: JoinSet<Result<()>>,
}

impl Running {
    /// Waits for every task to end (after shutdown), returning the first error.
    pub async fn wait(mut self) -> Result<()> {
        let mut first = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(Err(e)) = done
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Connects, binds the admin listener, starts the roles configured, and returns.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    ballast_runtime::metrics::prometheus();
    metrics::describe();
    let Config {
        controller,
        agent,
        namespace,
        control_endpoint,
        control_client,
        admin_addr,
        kube,
        identity,
        resync,
    } = config;
    ballast_runtime::metrics::build_info("provisioner", env!("CARGO_PKG_VERSION"));
    let client = kube.client().await.map_err(Error::Client)?;
    let mut tasks = JoinSet::new();
    let readiness = ballast_runtime::admin::Readiness::new();

    let admin_addr = match admin_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })?;
            let bound = listener.local_addr().ok();
            let (r, s) = (readiness.clone(), shutdown.clone());
            tasks.spawn(async move {
                ballast_runtime::admin::serve(listener, r, s)
                    .await
                    .map_err(Error::Admin)
            });
            bound
        }
        None => None,
    };

    if let Some(agent) = agent {
        readiness.register("agent");
        let setup = agent::Setup {
            client: client.clone(),
            namespace: namespace.clone(),
            identity: identity.clone(),
            readiness: readiness.clone(),
            resync,
        };
        agent::spawn(setup, agent, &mut tasks, &shutdown);
    }
    if let Some(c) = controller {
        readiness.register("controller");
        if c.hostpath.is_none() && c.nfs.is_none() {
            tracing::warn!(
                "controller enabled but no backend configured: set NFS_SERVER for NFS or \
                 PROVISIONER_HOSTPATH=true for hostPath, or nothing will be provisioned"
            );
        }
        let control = match control_endpoint.filter(|e| !e.is_empty()) {
            Some(ep) => Some(
                ballast_control::ControlClient::start(
                    control_client.options(ep).map_err(Error::Control)?,
                    &shutdown,
                )
                .map_err(Error::Control)?,
            ),
            None => None,
        };
        let leading = follow_leadership(&client, c.lease, &mut tasks, &shutdown);
        let queue = Arc::new(queue::Queue::default());
        let w = controller::watch(&client, &namespace, &queue, &mut tasks, &shutdown);
        let ctx = controller::Ctx {
            events: events::Events::new(client.clone(), &identity),
            client: client.clone(),
            backends: controller::Backends {
                hostpath: c.hostpath,
                nfs: c.nfs,
            },
            claims: w.claims,
            volumes: w.volumes,
            classes: w.classes,
            nodes: w.nodes,
            reports: w.reports,
            health: control.as_ref().map(|c| c.node_health()),
            leading,
            warned: Default::default(),
        };
        let s = shutdown.clone();
        tasks.spawn(async move {
            // Held so its watch keeps running for as long as the controller does.
            let _control = control;
            controller::run(ctx, queue, readiness, resync, s).await
        });
    }
    Ok(Running { admin_addr, tasks })
}

/// Runs the election for `lease` and forwards whether this instance leads.
fn follow_leadership(
    client: &kube::Client,
    lease: ballast_runtime::leader::LeaseConfig,
    tasks: &mut JoinSet<Result<()>>,
    shutdown: &CancellationToken,
) -> watch::Receiver<bool> {
    let (leading_tx, leading) = watch::channel(false);
    let (mut rx, handle) = ballast_runtime::leader::spawn(client.clone(), lease, shutdown.clone());
    let s = shutdown.clone();
    tasks.spawn(async move {
        loop {
            let now = *rx.borrow_and_update();
            tracing::info!(leading = now, "controller leadership");
            leading_tx.send_replace(now);
            tokio::select! {
                _ = s.cancelled() => break,
                changed = rx.changed() => if changed.is_err() { break },
            }
        }
        leading_tx.send_replace(false);
        drop(handle.await);
        Ok(())
    });
    leading
}
