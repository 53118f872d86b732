//! Ballast provisioner: hostPath and NFS dynamic provisioning, an external provisioner in the
//! Kubernetes sense (the PV controller binds; we provision what it hands us).
//!
//! In: PersistentVolumeClaims, PersistentVolumes, StorageClasses and Nodes (watched), node
//! health from the control service (optional), the local filesystem (hostPath base directory,
//! mounted NFS export). Out: directories, PersistentVolumes (created pre-bound to their claim,
//! deleted once Released), the claim annotations `selected-node` (removed to reschedule) and
//! `ballast.dev/binding-problem`, Events (`Provisioning`, `ProvisioningSucceeded`,
//! `ProvisioningFailed`, `StorageClassMismatch`...), the agent's free-space Node annotation, and
//! metrics on the admin port. Never a claim's spec or status.
//!
//! One binary, two roles: the cluster-wide controller (NFS, warnings, rescheduling; only while
//! holding the Lease) and, with `--node-name`, the hostPath agent of that node. A DaemonSet runs
//! both in every pod; `plan` decides which instance acts on what.

pub mod args;
pub mod error;
pub mod metrics;
pub mod paths;
pub mod plan;
pub mod quantity;
pub mod queue;
pub mod reconcile;
pub mod storage;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;

use crate::queue::{Key, Queue};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use args::Args;
pub use error::{Error, Result};

/// The Kubernetes API calls this service makes, for least-privilege RBAC: (group, resource, verbs).
pub const RBAC: &[(&str, &str, &[&str])] = &[
    (
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "patch"],
    ),
    (
        "",
        "persistentvolumes",
        &["get", "list", "watch", "create", "delete"],
    ),
    (
        "storage.k8s.io",
        "storageclasses",
        &["get", "list", "watch"],
    ),
    ("", "nodes", &["get", "list", "watch", "patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// At startup, wait this long for the control service's first node-health snapshot before
/// deciding on the Nodes' own Ready condition alone.
const CONTROL_FIRST_SNAPSHOT: Duration = Duration::from_secs(5);

/// The annotation kubectl apply keeps on objects: a full copy of each, not needed here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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
    /// CA and token files for the control service.
    pub control_client: ballast_control::ControlClientArgs,
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
    ballast_runtime::metrics::prometheus();
    metrics::describe();
    let Config {
        controller,
        node_name,
        hostpath_base,
        nfs,
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
                control_client.options(ep).map_err(Error::Control)?,
                &shutdown,
            )
            .map_err(Error::Control)?,
        ),
        None => None,
    };
    let health = control.as_ref().map(|c| c.node_health());

    let queue = Arc::new(Queue::default());
    let claims = watch_kind(&client, &queue, &shutdown, &mut tasks, claim_keys);
    let volumes = watch_kind(&client, &queue, &shutdown, &mut tasks, volume_keys);
    let classes = watch_kind(&client, &queue, &shutdown, &mut tasks, class_keys);
    let nodes = watch_kind(&client, &queue, &shutdown, &mut tasks, node_keys());

    if controller_enabled && node_name.is_none() && nfs.is_none() {
        tracing::warn!(
            "controller enabled but no backend configured: set NFS_SERVER for NFS or NODE_NAME \
             for hostPath, or nothing will be provisioned"
        );
    }
    let ctx = reconcile::Ctx {
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: reconcile::COMPONENT.into(),
                instance: Some(identity.clone()),
            },
        ),
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
        ctx, control, queue, readiness, resync, shutdown,
    ));
    Ok(Running { admin_addr, tasks })
}

/// What a watch event asks of the loop: reconcile these objects, or (`None`) a full pass.
type Keys<K> = Box<dyn FnMut(&K) -> Option<Vec<Key>> + Send>;

fn claim_keys(c: &PersistentVolumeClaim) -> Option<Vec<Key>> {
    Some(vec![Key::Claim {
        namespace: c.namespace().unwrap_or_default(),
        name: c.name_any(),
    }])
}

/// A volume, and the claim it names (whose decision depends on it).
fn volume_keys(v: &PersistentVolume) -> Option<Vec<Key>> {
    let mut keys = vec![Key::Volume(v.name_any())];
    if let Some((ns, name, _)) = plan::claim_ref(v) {
        keys.push(Key::Claim {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        });
    }
    Some(keys)
}

fn class_keys(_: &StorageClass) -> Option<Vec<Key>> {
    None
}

/// Nodes change all the time (heartbeats); only a change of what placement looks at (Ready,
/// an agent's free space to two significant digits) makes a full pass.
fn node_keys() -> impl FnMut(&Node) -> Option<Vec<Key>> + Send + 'static {
    let mut seen: HashMap<String, (bool, Option<u64>)> = HashMap::new();
    move |n: &Node| {
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let free = n
            .annotations()
            .get(plan::ANN_FREE_BYTES)
            .and_then(|v| v.parse::<u64>().ok())
            .map(two_digits);
        let now = (ready, free);
        match seen.insert(n.name_any(), now) {
            Some(before) if before == now => Some(vec![]),
            _ => None,
        }
    }
}

/// `n` rounded down to two significant digits.
fn two_digits(n: u64) -> u64 {
    let mut scale = 1;
    while n / scale >= 100 {
        scale *= 10;
    }
    n / scale * scale
}

fn watch_kind<K>(
    client: &kube::Client,
    queue: &Arc<Queue>,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<Result<()>>,
    keys: impl FnMut(&K) -> Option<Vec<Key>> + Send + 'static,
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
    // The caches keep what decisions read: no managed fields, no last-applied copies.
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(|o: &mut K| {
                let meta = o.meta_mut();
                meta.managed_fields = None;
                if let Some(a) = meta.annotations.as_mut() {
                    a.remove(LAST_APPLIED);
                }
            }),
    );
    tasks.spawn(drive(
        stream,
        K::kind(&()).into_owned(),
        queue.clone(),
        Box::new(keys),
        shutdown.clone(),
    ));
    store
}

async fn drive<S, K>(
    stream: S,
    kind: String,
    queue: Arc<Queue>,
    mut keys: Keys<K>,
    shutdown: CancellationToken,
) -> Result<()>
where
    S: Stream<Item = std::result::Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            item = stream.next() => match item {
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o))) => match keys(&o) {
                    Some(ks) => ks.into_iter().for_each(|k| queue.push(k)),
                    None => queue.push_all(),
                },
                Some(Ok(watcher::Event::InitApply(o))) => {
                    // Seeds the node filter; the full pass after InitDone covers the object.
                    keys(&o);
                }
                Some(Ok(watcher::Event::InitDone)) => queue.push_all(),
                Some(Ok(watcher::Event::Init)) => {}
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
    queue: Arc<Queue>,
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
    queue.push_all();
    let mut next_resync = tokio::time::Instant::now() + resync;
    loop {
        match queue.take() {
            queue::Work::All => {
                reconcile::pass(&ctx).await;
                next_resync = tokio::time::Instant::now() + resync;
            }
            queue::Work::Keys(keys) => {
                reconcile::some(&ctx, keys).await;
                reconcile::publish_periodically(&ctx).await;
            }
        }
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
            _ = queue.wait() => {}
            res = leading.changed() => {
                if res.is_err() { return Ok(()) }
                queue.push_all();
            }
            _ = health_changed => queue.push_all(),
            _ = tokio::time::sleep_until(next_resync) => queue.push_all(),
        }
    }
}
