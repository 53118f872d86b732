//! Ballast provisioner: hostPath and NFS dynamic provisioning, an external provisioner in the
//! Kubernetes sense (the PV controller binds; we provision what it hands us).
//!
//! One binary, two roles:
//! - the **controller** (a Deployment, one replica acting while holding the Lease) makes every
//!   API write for volumes: PVs created pre-bound, Released ones deleted, `selected-node` removed
//!   to reschedule, the binding-problem annotation, Events. For NFS it also creates and removes
//!   the directories in the export it mounts. In: claims, volumes, classes, Nodes, the agents'
//!   capacity reports, node health from the control service (optional).
//!   For hostPath it publishes the agents' reports as CSIStorageCapacity objects, so that the
//!   scheduler places pods only on nodes with a live agent.
//! - the **node agent** (a DaemonSet, with `--node-name`) creates, archives and removes the
//!   hostPath directories on its own node and reports the node's free space in a Lease of its
//!   own. In: only the volumes labelled for its node; the live API before removing data.
//!
//! Both answer to provisioner names of their own ([`Options`]), so two instances can run in one
//! cluster.
//!
//! Rooms: `objects` (names and field accessors), `plan` (the pure decisions: claim, volume,
//! placement), `controller` and `agent` (the I/O of each role), `events` (the event writer),
//! `capacity` (the agents' reports), `pv` (the volume we create), `storage` and `paths` (the
//! directories), `informer` (watches into caches), `cache` (the caches: each object once, in
//! the compact shapes of `objects`).

pub mod agent;
pub mod args;
pub mod cache;
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

use ballast_runtime::{Service, Tasks};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use agent::AgentConfig;
pub use args::Args;
pub use error::{Error, Result};

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "ballast-provisioner";

type Rbac = &'static [(&'static str, &'static str, &'static [&'static str])];

/// The controller's Kubernetes API calls, for least-privilege RBAC: (group, resource, verbs).
/// Leases only in its own namespace (its election, the agents' reports). A controller serving
/// hostPath needs [`HOSTPATH_CONTROLLER_RBAC`].
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

/// What a controller serving hostPath adds to [`CONTROLLER_RBAC`]: its CSIStorageCapacity
/// objects, in its own namespace only (it watches its own by label and writes them without
/// reading one by name).
pub const CAPACITY_RBAC: Rbac = &[(
    "storage.k8s.io",
    "csistoragecapacities",
    &["list", "watch", "create", "update", "delete"],
)];

/// A controller serving hostPath: [`CONTROLLER_RBAC`] and [`CAPACITY_RBAC`].
pub const HOSTPATH_CONTROLLER_RBAC: Rbac = &[
    CONTROLLER_RBAC[0],
    CONTROLLER_RBAC[1],
    CONTROLLER_RBAC[2],
    CONTROLLER_RBAC[3],
    CONTROLLER_RBAC[4],
    CONTROLLER_RBAC[5],
    CAPACITY_RBAC[0],
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

/// The controller's Lease when `LEASE_NAME` (or the seed's `PROVISIONER_LEASE_NAME`) is unset.
pub const DEFAULT_LEASE_NAME: &str = "ballast-provisioner";

/// The controller role.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Act only while holding this Lease; `None` acts always (a single replica, or tests).
    pub lease: Option<ballast_runtime::leader::LeaseConfig>,
    /// Serve the hostPath class: the base directory on every node (the agents' HOSTPATH_BASE).
    pub hostpath: Option<PathBuf>,
    /// Serve the NFS class.
    pub nfs: Option<NfsConfig>,
}

/// What sets an instance apart, beyond [`Config`]: the provisioner names it serves and how
/// long its agents' reports live. [`Options::default`] is what the flags default to.
#[derive(Debug, Clone)]
pub struct Options {
    /// The provisioner names served (`--hostpath-provisioner-name`, `--nfs-provisioner-name`).
    pub provisioners: plan::Provisioners,
    /// How long an agent's capacity report stays valid ([`capacity::LEASE_SECONDS`]); it is
    /// renewed every quarter of it. The controller reads each report's own duration.
    pub report_lifetime: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            provisioners: plan::Provisioners::default(),
            report_lifetime: capacity::default_lifetime(),
        }
    }
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
    /// The admin server (`/healthz`, `/readyz`, `/metrics`); port 0 picks a free one.
    pub admin_addr: SocketAddr,
    pub kube: KubeAccess,
    /// Name in events and in the agent's report.
    pub identity: String,
    pub resync: Duration,
}

/// A started provisioner: where it listens, and its tasks.
pub struct Running {
    pub admin_addr: SocketAddr,
    tasks: Tasks<Error>,
}

impl Running {
    /// Waits until every task has stopped (after shutdown, or the first failure, which stops
    /// the others and is returned); the controller's Lease is released last.
    pub async fn wait(self) -> Result<()> {
        self.tasks.wait().await
    }

    /// Ends it at once, as a crash (SIGKILL) would: nothing drains, its Lease is not released
    /// (a standby takes over once it expires). For fault tests.
    pub fn abort(self) {
        self.tasks.abort();
    }
}

/// Runs until `shutdown` is cancelled and every task has finished, with the default
/// [`Options`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    run_with(config, Options::default(), shutdown).await
}

/// [`run`] with `options`.
pub async fn run_with(config: Config, options: Options, shutdown: CancellationToken) -> Result<()> {
    start_with(config, options, shutdown).await?.wait().await
}

/// Builds the client, binds the admin listener (port 0 picks a free one), starts the roles
/// configured and returns at once with the bound address; with the default [`Options`].
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    start_with(config, Options::default(), shutdown).await
}

/// [`start`] with `options`.
pub async fn start_with(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<Running> {
    let Options {
        provisioners,
        report_lifetime,
    } = options;
    let provisioners = Arc::new(provisioners);
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
    let mut svc = Service::new("provisioner", env!("CARGO_PKG_VERSION"), &shutdown);
    metrics::describe();
    let client = svc.client(&kube).await?;

    if let Some(agent) = agent {
        let setup = agent::Setup {
            client: client.clone(),
            namespace: namespace.clone(),
            identity: identity.clone(),
            resync,
            provisioners: provisioners.clone(),
            report_lifetime,
        };
        agent::spawn(setup, agent, &mut svc);
    }
    if let Some(c) = controller {
        start_controller(
            &mut svc,
            c,
            Controller {
                client: client.clone(),
                namespace,
                identity,
                control_endpoint,
                control_client,
                resync,
                provisioners,
            },
        )?;
    }

    let (listener, admin_addr) = svc
        .bind("the admin server (--admin-port, ADMIN_PORT)", admin_addr)
        .await?;
    svc.serve_admin(listener);

    Ok(Running {
        admin_addr,
        tasks: svc.into_tasks(),
    })
}

/// What the controller gets from the process around it.
struct Controller {
    client: kube::Client,
    namespace: String,
    identity: String,
    control_endpoint: Option<String>,
    control_client: ballast_control::ControlClientArgs,
    resync: Duration,
    provisioners: Arc<plan::Provisioners>,
}

/// Starts the controller: its watches run on every replica (a new leader starts with warm
/// caches, and every replica reports ready), its writes only while this replica leads.
fn start_controller(
    svc: &mut Service<Error>,
    c: ControllerConfig,
    setup: Controller,
) -> Result<()> {
    let Controller {
        client,
        namespace,
        identity,
        control_endpoint,
        control_client,
        resync,
        provisioners,
    } = setup;
    svc.readiness().register(controller::READY);
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
                &svc.shutdown(),
            )
            .map_err(Error::Control)?,
        ),
        None => None,
    };
    let (leading, unelected) = match c.lease {
        Some(lease) => (svc.elect(&client, lease), None),
        None => {
            let (always, leading) = watch::channel(true);
            (leading, Some(always))
        }
    };
    let queue = Arc::new(queue::Queue::default());
    let backends = controller::Backends {
        hostpath: c.hostpath,
        nfs: c.nfs,
    };
    let w = controller::watch(&client, &namespace, &backends, &provisioners, &queue, svc);
    let (events, writer) = events::Events::new(client.clone(), &identity, svc.shutdown());
    svc.spawn("the event writer", async move {
        writer.await;
        Ok::<(), Error>(())
    });
    let ctx = controller::Ctx {
        events,
        client,
        namespace,
        backends,
        provisioners,
        claims: w.claims,
        volumes: w.volumes,
        classes: w.classes,
        nodes: w.nodes,
        reports: w.reports,
        capacities: w.capacities,
        health: control.as_ref().map(|c| c.node_health()),
        leading,
        warned: Default::default(),
    };
    let (readiness, shutdown) = (svc.readiness().clone(), svc.shutdown());
    svc.spawn("the controller", async move {
        // Held so its watch keeps running for as long as the controller does.
        let _control = control;
        // Without election the flag stays true: its sender lives as long as the controller.
        let _always = unelected;
        controller::run(ctx, queue, readiness, resync, shutdown).await
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostpath_controller_needs_exactly_the_controllers_rights_and_its_capacity_objects() {
        let mut want: Vec<_> = CONTROLLER_RBAC.to_vec();
        want.extend_from_slice(CAPACITY_RBAC);
        assert_eq!(HOSTPATH_CONTROLLER_RBAC, want.as_slice());
        assert!(
            CAPACITY_RBAC
                .iter()
                .all(|(_, _, verbs)| !verbs.contains(&"get") && !verbs.contains(&"patch")),
            "capacity objects are read from the watch and written whole"
        );
    }
}
