//! The controller: one elected instance makes every API write for volumes. It watches claims,
//! volumes, classes, Nodes and the agents' capacity reports, asks `plan` what each object
//! needs, and applies it: PVs created pre-bound (NFS directories first), PVs of Released
//! volumes deleted, `selected-node` removed to reschedule, the binding-problem annotation, and
//! events. Never a claim's spec or status (the PV controller binds), never a Node, never a
//! directory on a node (the agents' job).
//!
//! Crash safety, the rules:
//! - a provisioned PV is named `pvc-<claim uid>` (or the claim's `volumeName`), so a retry after a
//!   restart, or a second controller racing, finds the PV already created (AlreadyExists is
//!   success when it names the claim);
//! - an NFS directory is created before its PV and reused when it exists, and removed before
//!   its PV is deleted, so a crash in between is retried;
//! - a directory in the export named like ours (`<pv>_<namespace>_<claim>`) is unknown when no
//!   PV of that name exists and no live claim is still waiting for that volume. Each pass
//!   removes unknown directories that are empty and unchanged for a minute (a fresh one may
//!   belong to a claim not yet in this cache); a non-empty one is kept and logged.

mod claims;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Config as WatchConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::informer::{self, Change};
use crate::objects::{claim_ref, named_volume};
use crate::plan::{self, Backend, World, placement};
use crate::queue::{self, Key, Queue};
use crate::{Error, NfsConfig, Result, capacity};
use ballast_runtime::Service;

/// Reconciles at most this many objects at once: provisioning is mostly waiting for the API
/// server (the external-provisioner runs 100 workers by default; fewer keep its load modest).
const WORKERS: usize = 16;

/// At startup, wait this long for the control service's first node-health snapshot before
/// deciding on the Nodes' own Ready condition alone.
const CONTROL_FIRST_SNAPSHOT: Duration = Duration::from_secs(5);

/// The controller's readiness check: ready once its caches have synced (leading or not).
pub const READY: &str = "controller";

pub type Health = watch::Receiver<ballast_control::client::NodeHealthView>;

/// What the controller serves.
#[derive(Debug, Clone)]
pub struct Backends {
    /// The hostPath class: the base directory on every node (the agents' `HOSTPATH_BASE`).
    pub hostpath: Option<PathBuf>,
    pub nfs: Option<NfsConfig>,
}

pub struct Ctx {
    pub client: kube::Client,
    pub events: Events,
    pub backends: Backends,
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
    pub nodes: Store<Node>,
    /// The node agents' capacity reports.
    pub reports: Store<Lease>,
    pub health: Option<Health>,
    pub leading: watch::Receiver<bool>,
    /// Unknown directories holding data, warned about once each.
    pub warned: Mutex<HashSet<String>>,
}

/// What every decision shares: the classes and the node facts.
struct Shared {
    classes: Vec<Arc<StorageClass>>,
    nodes: plan::Nodes,
}

impl Ctx {
    fn shared(&self) -> Shared {
        let ready: Option<BTreeMap<String, bool>> = self.health.as_ref().and_then(|h| {
            h.borrow()
                .as_ref()
                .map(|m| m.iter().map(|(n, h)| (n.clone(), h.ready)).collect())
        });
        Shared {
            classes: self.classes.state(),
            nodes: placement::node_facts(
                &self.nodes.state(),
                &self.reports.state(),
                ready.as_ref(),
                k8s_openapi::jiff::Timestamp::now(),
            ),
        }
    }

    /// The world one claim's decision looks at, by name from the caches: the volume it names and
    /// the one we would have provisioned for it (`pvc-<uid>`). Constant cost per claim.
    fn world_for_claim(&self, c: &PersistentVolumeClaim, shared: &Shared) -> World {
        let mut names: Vec<String> = named_volume(c).map(str::to_owned).into_iter().collect();
        if let Some(uid) = c.metadata.uid.as_deref() {
            names.push(format!("pvc-{uid}"));
        }
        names.dedup();
        World {
            claims: Vec::new(),
            volumes: names
                .iter()
                .filter_map(|n| self.volumes.get(&ObjectRef::new(n)))
                .collect(),
            classes: shared.classes.clone(),
            nodes: shared.nodes.clone(),
        }
    }

    /// The world one volume's decision looks at: the claim its claimRef names.
    fn world_for_volume(&self, v: &PersistentVolume, shared: &Shared) -> World {
        let claims = claim_ref(v)
            .and_then(|(ns, name, _)| self.claims.get(&ObjectRef::new(name).within(ns)))
            .into_iter()
            .collect();
        World {
            claims,
            volumes: Vec::new(),
            classes: shared.classes.clone(),
            nodes: shared.nodes.clone(),
        }
    }

    /// Whether this controller serves a backend, so an NFS controller and a hostPath
    /// controller, each with its own Lease, never act on the same claims.
    pub fn serves(&self, backend: Option<Backend>) -> bool {
        match backend {
            Some(Backend::HostPath) => self.backends.hostpath.is_some(),
            Some(Backend::Nfs) => self.backends.nfs.is_some(),
            None => false,
        }
    }
}

/// The watches the controller needs, each feeding the work queue.
pub struct Watches {
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
    pub nodes: Store<Node>,
    pub reports: Store<Lease>,
}

/// Starts the controller's watches as tasks of `svc`; `namespace` holds the agents' capacity
/// reports.
pub fn watch(
    client: &kube::Client,
    namespace: &str,
    queue: &Arc<Queue>,
    svc: &mut Service<Error>,
) -> Watches {
    let all = WatchConfig::default();
    let q = queue.clone();
    let claims = informer::watch(
        Api::all(client.clone()),
        all.clone(),
        svc,
        "the claim watch",
        {
            move |c: Change<'_, PersistentVolumeClaim>| match c {
                Change::Applied(o) | Change::Deleted(o) => q.push(claim_key(o)),
                Change::Listed(_) => {}
                Change::Synced => q.push_all(),
            }
        },
    );
    let q = queue.clone();
    let volumes = informer::watch(
        Api::all(client.clone()),
        all.clone(),
        svc,
        "the volume watch",
        {
            move |c: Change<'_, PersistentVolume>| match c {
                Change::Applied(v) | Change::Deleted(v) => {
                    q.push(Key::Volume(v.metadata.name.clone().unwrap_or_default()));
                    if let Some((ns, name, _)) = claim_ref(v) {
                        q.push(Key::Claim {
                            namespace: ns.to_owned(),
                            name: name.to_owned(),
                        });
                    }
                }
                Change::Listed(_) => {}
                Change::Synced => q.push_all(),
            }
        },
    );
    let q = queue.clone();
    let classes = informer::watch(
        Api::all(client.clone()),
        all.clone(),
        svc,
        "the StorageClass watch",
        {
            move |c: Change<'_, StorageClass>| {
                if !matches!(c, Change::Listed(_)) {
                    q.push_all();
                }
            }
        },
    );
    let q = queue.clone();
    let mut seen: HashMap<String, bool> = HashMap::new();
    let nodes = informer::watch(Api::all(client.clone()), all, svc, "the Node watch", {
        // Nodes change all the time (heartbeats); only a change of Ready makes a full pass.
        move |c: Change<'_, Node>| match c {
            Change::Listed(n) => {
                seen.insert(n.metadata.name.clone().unwrap_or_default(), node_ready(n));
            }
            Change::Applied(n) => {
                let now = node_ready(n);
                if seen.insert(n.metadata.name.clone().unwrap_or_default(), now) != Some(now) {
                    q.push_all();
                }
            }
            Change::Deleted(n) => {
                seen.remove(n.metadata.name.as_deref().unwrap_or(""));
                q.push_all();
            }
            Change::Synced => q.push_all(),
        }
    });
    let q = queue.clone();
    let reports = informer::watch(
        Api::namespaced(client.clone(), namespace),
        WatchConfig::default().labels(&format!("{}=true", capacity::LABEL_REPORT)),
        svc,
        "the capacity report watch",
        // Reports are written only when free space moves by a few percent, or to renew.
        move |c: Change<'_, Lease>| {
            if !matches!(c, Change::Listed(_)) {
                q.push_all();
            }
        },
    );
    Watches {
        claims,
        volumes,
        classes,
        nodes,
        reports,
    }
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn claim_key(c: &PersistentVolumeClaim) -> Key {
    Key::Claim {
        namespace: c.metadata.namespace.clone().unwrap_or_default(),
        name: c.metadata.name.clone().unwrap_or_default(),
    }
}

/// Reconciles while leading: the objects whose watches fired, and a full pass at start, on
/// resync, and when what every decision shares changes.
pub async fn run(
    ctx: Ctx,
    queue: Arc<Queue>,
    readiness: ballast_runtime::admin::Readiness,
    resync: Duration,
    shutdown: CancellationToken,
) -> Result<()> {
    let synced = async {
        let (a, b, c, d, e) = tokio::join!(
            ctx.claims.wait_until_ready(),
            ctx.volumes.wait_until_ready(),
            ctx.classes.wait_until_ready(),
            ctx.nodes.wait_until_ready(),
            ctx.reports.wait_until_ready()
        );
        a.and(b).and(c).and(d).and(e)
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
    readiness.set(READY, true);
    tracing::info!("controller caches synced; reconciling while leading");
    let mut leading = ctx.leading.clone();
    let mut health = ctx.health.clone();
    queue.push_all();
    let mut next_resync = tokio::time::Instant::now() + resync;
    loop {
        if *leading.borrow() {
            match queue.take() {
                queue::Work::All => {
                    pass(&ctx).await;
                    next_resync = tokio::time::Instant::now() + resync;
                }
                queue::Work::Keys(keys) => some(&ctx, keys).await,
            }
        } else {
            // Not leading: nothing to do but keep the queue from growing.
            queue.take();
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

/// Reconciles the claims and volumes a batch of watch events asked for, several at once (each
/// key appears once in a batch, so no object is reconciled twice concurrently).
async fn some(ctx: &Ctx, keys: Vec<Key>) {
    let shared = ctx.shared();
    futures::stream::iter(keys)
        .for_each_concurrent(WORKERS, |key| one(ctx, key, &shared))
        .await;
}

async fn one(ctx: &Ctx, key: Key, shared: &Shared) {
    match key {
        Key::Claim { namespace, name } => {
            if let Some(claim) = ctx.claims.get(&ObjectRef::new(&name).within(&namespace)) {
                claims::reconcile(ctx, &claim, ctx.world_for_claim(&claim, shared)).await;
            }
        }
        Key::Volume(name) => {
            if let Some(pv) = ctx.volumes.get(&ObjectRef::new(&name)) {
                volumes::reconcile(ctx, &pv, ctx.world_for_volume(&pv, shared)).await;
            }
        }
    }
}

/// One full pass over every claim, every volume and the export's directories (at startup, on
/// resync and when what every decision shares changes). Linear in the objects.
async fn pass(ctx: &Ctx) {
    let shared = ctx.shared();
    let claims = ctx.claims.state();
    let volumes = ctx.volumes.state();
    futures::stream::iter(&claims)
        .for_each_concurrent(WORKERS, |claim| {
            claims::reconcile(ctx, claim, ctx.world_for_claim(claim, &shared))
        })
        .await;
    futures::stream::iter(&volumes)
        .for_each_concurrent(WORKERS, |pv| {
            volumes::reconcile(ctx, pv, ctx.world_for_volume(pv, &shared))
        })
        .await;
    let world = World {
        claims,
        volumes,
        classes: shared.classes,
        nodes: shared.nodes,
    };
    if let Some(nfs) = &ctx.backends.nfs {
        volumes::sweep(ctx, &nfs.mount, &world);
    }
    let live: HashSet<&str> = world
        .claims
        .iter()
        .filter_map(|c| c.metadata.uid.as_deref())
        .collect();
    ctx.events.forget_all_but(&live);
}

/// Logs a failed step: a lost write race quietly (the next event decides again).
pub fn log_error(e: &crate::Error, what: &str) {
    if e.is_conflict() {
        tracing::debug!(
            object = what,
            "write conflict; will re-read and decide again"
        );
    } else {
        tracing::warn!(object = what, error = %crate::error::chain(e), "reconcile step failed");
    }
}
