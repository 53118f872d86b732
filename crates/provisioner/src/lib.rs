//! Ballast provisioner: hostPath and NFS dynamic provisioning with the seed's binding rules.
//!
//! In: PersistentVolumeClaims, PersistentVolumes, StorageClasses and Nodes (watched), node
//! health from the control service (optional), the local filesystem (hostPath base directory,
//! mounted NFS export). Out: directories, PersistentVolumes (provisioned pre-bound), bind writes
//! on PVs and claims (resourceVersion-checked), Events (`Provisioning`, `ProvisioningSucceeded`,
//! `ProvisioningFailed`, `StorageClassMismatch`...), the `ballast.dev/binding-problem` claim
//! annotation, the agent's free-space Node annotation, and metrics on the admin port.
//!
//! One binary, two roles: the cluster-wide controller (binding, NFS, warnings; only while holding
//! the Lease) and, with `--node-name`, the hostPath agent of that node. A DaemonSet runs both in
//! every pod; `plan` decides which instance acts on what.

pub mod args;
pub mod error;
pub mod metrics;
pub mod paths;
pub mod plan;
pub mod quantity;
pub mod reconcile;
pub mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use args::Args;
pub use error::{Error, Result};

/// The Kubernetes API calls this service makes, for least-privilege RBAC: (group, resource, verbs).
pub const RBAC: &[(&str, &str, &[&str])] = &[
    (
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "update", "patch"],
    ),
    ("", "persistentvolumeclaims/status", &["update"]),
    (
        "",
        "persistentvolumes",
        &["get", "list", "watch", "create", "update", "delete"],
    ),
    ("", "persistentvolumes/status", &["update"]),
    (
        "storage.k8s.io",
        "storageclasses",
        &["get", "list", "watch"],
    ),
    ("", "nodes", &["get", "list", "watch", "patch"]),
    ("", "events", &["create"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// At startup, wait this long for the control service's first node-health snapshot before
/// deciding on the Nodes' own Ready condition alone.
const CONTROL_FIRST_SNAPSHOT: Duration = Duration::from_secs(5);

/// After a watch event, wait this long so a burst of events makes one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);

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

#[derive(Debug, Clone)]
pub struct Config {
    /// Run the cluster-wide controller while holding this Lease; `None` for agent only.
    pub controller: Option<ballast_runtime::leader::LeaseConfig>,
    /// Be the hostPath agent of this node.
    pub node_name: Option<String>,
    pub hostpath_base: PathBuf,
    pub nfs: Option<NfsConfig>,
    pub control_endpoint: Option<String>,
    /// Admin server address (port 0 picks one); `None` serves no admin endpoints.
    pub admin_addr: Option<SocketAddr>,
    pub kube: KubeAccess,
    /// Name in events.
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

/// Connects, binds the admin listener, starts the watches and the reconcile loop, and returns.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let Config {
        controller,
        node_name,
        hostpath_base,
        nfs,
        control_endpoint,
        admin_addr,
        kube,
        identity,
        resync,
    } = config;
    ballast_runtime::metrics::build_info("provisioner", env!("CARGO_PKG_VERSION"));
    let client = kube.client().await.map_err(Error::Client)?;
    let mut tasks = JoinSet::new();
    let readiness = ballast_runtime::admin::Readiness::new();
    readiness.register("caches");

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

    let controller_enabled = controller.is_some();
    let (leading_tx, leading) = watch::channel(false);
    if let Some(lease) = controller {
        let (rx, handle) = ballast_runtime::leader::spawn(client.clone(), lease, shutdown.clone());
        let s = shutdown.clone();
        let mut rx_forward = rx;
        tasks.spawn(async move {
            loop {
                let now = *rx_forward.borrow_and_update();
                tracing::info!(leading = now, "controller leadership");
                leading_tx.send_replace(now);
                tokio::select! {
                    _ = s.cancelled() => break,
                    changed = rx_forward.changed() => if changed.is_err() { break },
                }
            }
            leading_tx.send_replace(false);
            drop(handle.await);
            Ok(())
        });
    } else {
        // Keep the sender alive so the loop's `changed()` waits instead of failing.
        let s = shutdown.clone();
        tasks.spawn(async move {
            s.cancelled().await;
            drop(leading_tx);
            Ok(())
        });
    }

    let control = match control_endpoint.filter(|e| !e.is_empty()) {
        Some(ep) => Some(
            ballast_control::ControlClient::start(
                ballast_control::ClientOptions::new(ep),
                &shutdown,
            )
            .map_err(Error::Control)?,
        ),
        None => None,
    };
    let health = control.as_ref().map(|c| c.node_health());

    let notify = Arc::new(Notify::new());
    let claims = watch_kind::<PersistentVolumeClaim>(&client, &notify, &shutdown, &mut tasks);
    let volumes = watch_kind::<PersistentVolume>(&client, &notify, &shutdown, &mut tasks);
    let classes = watch_kind::<StorageClass>(&client, &notify, &shutdown, &mut tasks);
    let nodes = watch_kind::<Node>(&client, &notify, &shutdown, &mut tasks);

    if controller_enabled && node_name.is_none() && nfs.is_none() {
        tracing::warn!(
            "controller enabled but no backend configured: set NFS_SERVER for NFS or NODE_NAME \
             for hostPath, or nothing will be provisioned"
        );
    }
    let ctx = reconcile::Ctx {
        client,
        identity,
        node_name,
        hostpath_base,
        nfs,
        claims,
        volumes,
        classes,
        nodes,
        health,
        leading,
        said: Mutex::default(),
        last_publish: Mutex::default(),
    };
    tasks.spawn(reconcile_loop(
        ctx, control, notify, readiness, resync, shutdown,
    ));
    Ok(Running { admin_addr, tasks })
}

fn watch_kind<K>(
    client: &kube::Client,
    notify: &Arc<Notify>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<Result<()>>,
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    tasks.spawn(drive(
        stream,
        K::kind(&()).into_owned(),
        notify.clone(),
        shutdown.clone(),
    ));
    store
}

async fn drive<S, T>(
    stream: S,
    kind: String,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<T, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            item = stream.next() => match item {
                Some(Ok(_)) => notify.notify_one(),
                Some(Err(e)) => tracing::warn!(kind, error = %e, "watch failed; retrying with backoff"),
                None => return Ok(()),
            },
        }
    }
}

async fn reconcile_loop(
    ctx: reconcile::Ctx,
    // Held so its watch keeps running for as long as the loop does.
    _control: Option<ballast_control::ControlClient>,
    notify: Arc<Notify>,
    readiness: ballast_runtime::admin::Readiness,
    resync: Duration,
    shutdown: CancellationToken,
) -> Result<()> {
    let synced = async {
        let (a, b, c, d) = tokio::join!(
            ctx.claims.wait_until_ready(),
            ctx.volumes.wait_until_ready(),
            ctx.classes.wait_until_ready(),
            ctx.nodes.wait_until_ready()
        );
        a.and(b).and(c).and(d)
    };
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        res = synced => if res.is_err() { return Ok(()) },
    }
    if let Some(h) = ctx.health.clone() {
        let mut h = h;
        let known = tokio::time::timeout(CONTROL_FIRST_SNAPSHOT, h.wait_for(|v| v.is_some())).await;
        if !matches!(known, Ok(Ok(_))) {
            tracing::warn!(
                "no node health from the control service yet; using the Nodes' Ready condition meanwhile"
            );
        }
    }
    readiness.set("caches", true);
    tracing::info!(node = ?ctx.node_name, "caches synced; reconciling");
    if let Err(e) = reconcile::publish_free_space(&ctx, true).await {
        tracing::warn!(error = %reconcile::chain(&e), "failed to publish free space");
    }
    let mut leading = ctx.leading.clone();
    let mut health = ctx.health.clone();
    loop {
        reconcile::pass(&ctx).await;
        let health_changed = async {
            let alive = match health.as_mut() {
                Some(h) => h.changed().await.is_ok(),
                None => false,
            };
            if !alive {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            _ = notify.notified() => {}
            res = leading.changed() => if res.is_err() { return Ok(()) },
            _ = health_changed => {}
            _ = tokio::time::sleep(resync) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(DEBOUNCE) => {}
        }
    }
}
