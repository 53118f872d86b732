//! The controller: one elected instance makes every API write for volumes. It watches claims
//! and volumes of its own provisioners, classes, Nodes and the agents' capacity reports, asks
//! `plan` what each object needs, and applies it: PVs created pre-bound (NFS directories
//! first), PVs of Released volumes deleted, `selected-node` removed to reschedule, the
//! binding-problem annotation, events, and (hostPath) the CSIStorageCapacity objects that keep
//! the scheduler off nodes without a live agent. Never a claim's spec or status (the PV
//! controller binds), never a Node, never a directory on a node (the agents' job).
//!
//! What it caches: claims of the classes it serves and volumes provisioned by its names, so a
//! hostPath controller does not hold a cluster's NFS claims. A claim naming a volume not in the
//! cache (a static volume, maybe of another class) has that volume read from the API.
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

mod capacities;
mod claims;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::watcher::Config as WatchConfig;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, Keyed};
use crate::events::Events;
use crate::informer::{self, Change, Filter};
use crate::objects::{
    CachedClaim, CachedNode, CachedVolume, annotation, claim_class, claim_ref, named_volume,
    provisioned_by,
};
use crate::plan::{self, Backend, Provisioners, World, placement};
use crate::queue::{self, Key, Queue};
use crate::{Error, NfsConfig, Result, capacity};
use ballast_runtime::Service;

/// Reconciles at most this many objects at once: provisioning is mostly waiting for the API
/// server (the external-provisioner runs 100 workers by default). At 10,000 claims handed over
/// by a real PV controller, 64 rather than 16 took the queue wait's p99 from ≤ 500 ms to
/// ≤ 100 ms for 2 MB more RSS (BENCHMARKS.md).
const WORKERS: usize = 64;

/// Objects a full pass reconciles before it lets through what was queued meanwhile: a pass over
/// 10,000 claims and their volumes takes about a second, a chunk a few milliseconds.
const PASS_CHUNK: usize = 256;

/// At startup, wait this long for the control service's first node-health snapshot before
/// deciding on the Nodes' own Ready condition alone.
const CONTROL_FIRST_SNAPSHOT: Duration = Duration::from_secs(5);

/// Looked again this long after a report's expiry: its renewal, written just in time, has
/// reached the cache by then, and the expiry is not judged a moment early.
const EXPIRY_MARGIN: Duration = Duration::from_millis(200);

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

impl Backends {
    /// Whether `backend` is served here.
    pub fn serves(&self, backend: Backend) -> bool {
        match backend {
            Backend::HostPath => self.hostpath.is_some(),
            Backend::Nfs => self.nfs.is_some(),
        }
    }
}

pub struct Ctx {
    pub client: kube::Client,
    /// The controller's own namespace: the agents' reports, our capacity objects.
    pub namespace: String,
    pub events: Events,
    pub backends: Backends,
    pub provisioners: Arc<Provisioners>,
    pub claims: Cache<CachedClaim>,
    pub volumes: Cache<CachedVolume>,
    pub classes: Cache<StorageClass>,
    pub nodes: Cache<CachedNode>,
    /// The node agents' capacity reports.
    pub reports: Cache<Lease>,
    /// Our CSIStorageCapacity objects, when serving hostPath.
    pub capacities: Option<Capacities>,
    pub health: Option<Health>,
    pub leading: watch::Receiver<bool>,
    /// Unknown directories holding data, warned about once each.
    pub warned: Mutex<HashSet<String>>,
}

/// What every decision shares: the classes and the node facts.
pub struct Shared {
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
                Timestamp::now(),
            ),
        }
    }

    /// The world one claim's decision looks at, by name from the caches: the volume it names and
    /// the one we would have provisioned for it (`pvc-<uid>`). Constant cost per claim.
    fn world_for_claim(&self, c: &CachedClaim, shared: &Shared) -> World {
        let mut names: Vec<String> = named_volume(c).map(str::to_owned).into_iter().collect();
        if let Some(uid) = c.metadata.uid.as_deref() {
            names.push(format!("pvc-{uid}"));
        }
        names.dedup();
        World {
            claims: Vec::new(),
            volumes: names
                .iter()
                .filter_map(|n| self.volumes.get("", n))
                .collect(),
            classes: shared.classes.clone(),
            nodes: shared.nodes.clone(),
            provisioners: self.provisioners.clone(),
        }
    }

    /// The world one volume's decision looks at: the claim its claimRef names.
    fn world_for_volume(&self, v: &CachedVolume, shared: &Shared) -> World {
        let claims = claim_ref(v)
            .and_then(|(ns, name, _)| self.claims.get(ns, name))
            .into_iter()
            .collect();
        World {
            claims,
            volumes: Vec::new(),
            classes: shared.classes.clone(),
            nodes: shared.nodes.clone(),
            provisioners: self.provisioners.clone(),
        }
    }

    /// Whether this controller serves a backend, so an NFS controller and a hostPath
    /// controller, each with its own Lease, never act on the same claims.
    pub fn serves(&self, backend: Option<Backend>) -> bool {
        backend.is_some_and(|b| self.backends.serves(b))
    }
}

/// The watches the controller needs, each feeding the work queue.
pub struct Watches {
    pub claims: Cache<CachedClaim>,
    pub volumes: Cache<CachedVolume>,
    pub classes: Cache<StorageClass>,
    pub nodes: Cache<CachedNode>,
    pub reports: Cache<Lease>,
    pub capacities: Option<Capacities>,
}

/// The cache of our capacity objects, and whether it has been listed: until then nothing is
/// published (a write made on an empty cache could not delete stale objects). The controller
/// does not wait for it to provision: a capacity watch that fails (its RBAC missing after an
/// upgrade of the binary alone) stops the publishing, not the provisioning.
#[derive(Clone)]
pub struct Capacities {
    pub store: Cache<CSIStorageCapacity>,
    pub listed: Arc<AtomicBool>,
}

/// The provisioner names of the backends `backends` serves.
fn served_names(backends: &Backends, provisioners: &Provisioners) -> HashSet<String> {
    [Backend::HostPath, Backend::Nfs]
        .into_iter()
        .filter(|b| backends.serves(*b))
        .flat_map(|b| provisioners.names(b).iter().cloned())
        .collect()
}

/// Starts the controller's watches as tasks of `svc`; `namespace` holds the agents' capacity
/// reports and our capacity objects.
pub fn watch(
    client: &kube::Client,
    namespace: &str,
    backends: &Backends,
    provisioners: &Provisioners,
    queue: &Arc<Queue>,
    svc: &mut Service<Error>,
) -> Watches {
    let all = WatchConfig::default();
    let served = Arc::new(served_names(backends, provisioners));
    // A class of ours appearing may make claims cached before it ours: the claim watch lists
    // again (claims are kept by their class, and a class name may be reused).
    let new_class = Arc::new(Notify::new());
    // The claim watch starts once the classes are listed (it keeps claims by their class).
    let (classes_listed, mut classes_ready) = watch::channel(false);
    let q = queue.clone();
    let (ours, relist) = (served.clone(), new_class.clone());
    // Our classes as last listed, and as being listed again.
    let mut known: HashSet<String> = HashSet::new();
    let mut listing: HashSet<String> = HashSet::new();
    let classes = informer::watch(
        Api::all(client.clone()),
        all.clone(),
        svc,
        "the StorageClass watch",
        {
            move |c: Change<'_, StorageClass>| {
                let name = |sc: &StorageClass| sc.metadata.name.clone().unwrap_or_default();
                match c {
                    Change::Listed(sc) => {
                        if ours.contains(&sc.provisioner) {
                            listing.insert(name(sc));
                        }
                    }
                    Change::Applied(sc) => {
                        if ours.contains(&sc.provisioner) && known.insert(name(sc)) {
                            relist.notify_one();
                        }
                        q.push_all();
                    }
                    Change::Deleted(sc) => {
                        known.remove(&name(sc));
                        q.push_all();
                    }
                    Change::Synced => {
                        // A watch listing again may bring classes it missed meanwhile.
                        let relisted = *classes_listed.borrow();
                        if relisted && !known.is_superset(&listing) {
                            relist.notify_one();
                        }
                        known = std::mem::take(&mut listing);
                        classes_listed.send_replace(true);
                        q.push_all();
                    }
                }
            }
        },
    );
    let q = queue.clone();
    let (ours, class_cache) = (served.clone(), classes.clone());
    let claims = informer::watch_filtered(
        Api::all(client.clone()),
        all.clone(),
        svc,
        "the claim watch",
        Filter {
            keep: Box::new(move |c: &CachedClaim| {
                class_cache
                    .get("", claim_class(c))
                    .is_some_and(|sc| ours.contains(&sc.provisioner))
            }),
            relist: Some(new_class),
            after: Some(Box::pin(async move {
                let _ = classes_ready.wait_for(|listed| *listed).await;
            })),
        },
        {
            move |c: Change<'_, CachedClaim>| match c {
                Change::Applied(o) | Change::Deleted(o) => q.push(claim_key(o)),
                Change::Listed(_) => {}
                Change::Synced => q.push_all(),
            }
        },
    );
    let q = queue.clone();
    let ours = served.clone();
    let volumes = informer::watch_filtered(
        Api::all(client.clone()),
        all.clone(),
        svc,
        "the volume watch",
        Filter {
            keep: Box::new(move |v: &CachedVolume| {
                provisioned_by(v).is_some_and(|p| ours.contains(p))
            }),
            ..Filter::all()
        },
        {
            move |c: Change<'_, CachedVolume>| match c {
                Change::Applied(v) | Change::Deleted(v) => {
                    q.push(Key::Volume(v.name().to_owned()));
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
    let mut seen: HashMap<String, bool> = HashMap::new();
    let nodes = informer::watch(Api::all(client.clone()), all, svc, "the Node watch", {
        // Nodes change all the time (heartbeats); only a change of Ready makes a full pass.
        move |c: Change<'_, CachedNode>| match c {
            Change::Listed(n) => {
                seen.insert(n.name().to_owned(), n.ready);
            }
            Change::Applied(n) => {
                let now = n.ready;
                if seen.insert(n.name().to_owned(), now) != Some(now) {
                    q.push_all();
                }
            }
            Change::Deleted(n) => {
                seen.remove(n.name());
                q.push_all();
            }
            Change::Synced => q.push_all(),
        }
    });
    let q = queue.clone();
    let mut reported: HashMap<String, capacity::Seen> = HashMap::new();
    let reports = informer::watch(
        Api::namespaced(client.clone(), namespace),
        WatchConfig::default().labels(&format!("{}=true", capacity::LABEL_REPORT)),
        svc,
        "the capacity report watch",
        // Agents renew their reports every few seconds: only news for placement (a node's
        // first report, one back from expiry, free space moved) makes a full pass; every
        // write refreshes the capacity objects, which change only on such news too.
        move |c: Change<'_, Lease>| match c {
            Change::Listed(l) | Change::Applied(l) => {
                let node = annotation(&l.metadata, capacity::ANN_NODE).unwrap_or("");
                let before = reported.get(node).copied();
                if let Some((node, now_seen, news)) = capacity::news(before, l, Timestamp::now()) {
                    reported.insert(node, now_seen);
                    if news && matches!(c, Change::Applied(_)) {
                        q.push_all();
                    }
                }
                q.push(Key::Capacities);
            }
            Change::Deleted(l) => {
                if let Some(node) = annotation(&l.metadata, capacity::ANN_NODE) {
                    reported.remove(node);
                }
                q.push_all();
            }
            Change::Synced => q.push_all(),
        },
    );
    let capacities = backends.hostpath.is_some().then(|| {
        let q = queue.clone();
        let listed = Arc::new(AtomicBool::new(false));
        let driver = provisioners.name(Backend::HostPath);
        let done = listed.clone();
        let store = informer::watch(
            Api::namespaced(client.clone(), namespace),
            WatchConfig::default().labels(&plan::capacity::selector(driver)),
            svc,
            "the CSIStorageCapacity watch",
            // Our own writes come back here too; a sync that finds nothing to do writes nothing.
            move |c: Change<'_, CSIStorageCapacity>| match c {
                Change::Listed(_) => {}
                Change::Synced => {
                    done.store(true, Ordering::Release);
                    q.push(Key::Capacities);
                }
                Change::Applied(_) | Change::Deleted(_) => q.push(Key::Capacities),
            },
        );
        Capacities { store, listed }
    });
    Watches {
        claims,
        volumes,
        classes,
        nodes,
        reports,
        capacities,
    }
}

fn claim_key(c: &CachedClaim) -> Key {
    Key::Claim {
        namespace: c.namespace().to_owned(),
        name: c.name().to_owned(),
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
    let mut free_space = crate::metrics::FreeSpace::default();
    // Up to WORKERS reconciles at once, each key taken up as soon as a worker is free (not in
    // batches: a claim handed over waits for one worker, not for a whole batch to finish).
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        // A full pass waits for the reconciles in flight, then runs alone.
        if queue.take_pass() {
            // Every replica shows the free space it reads (a report written or expired queues
            // the capacities; a report deleted, a full pass).
            if ctx.backends.hostpath.is_some() {
                free_space.update(&ctx.reports.state(), Timestamp::now());
            }
            if *leading.borrow() {
                pass(&ctx, &queue).await;
                next_resync = tokio::time::Instant::now() + resync;
            }
        }
        while running.len() < WORKERS {
            let Some(key) = queue.pop() else { break };
            if key == Key::Capacities && ctx.backends.hostpath.is_some() {
                free_space.update(&ctx.reports.state(), Timestamp::now());
            }
            // Taken either way, so the queue does not grow while this replica is not leading.
            if *leading.borrow() {
                running.push(worker(&ctx, key));
            } else {
                queue.done(&key);
            }
        }
        // Nothing is written when an agent falls silent: look again when the first fresh
        // report expires, to withdraw its node's capacity objects.
        let expiry = next_expiry(&ctx);
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
            _ = shutdown.cancelled() => {
                // What was started finishes: a claim is never left half provisioned.
                while running.next().await.is_some() {}
                return Ok(());
            }
            Some(key) = running.next(), if !running.is_empty() => queue.done(&key),
            _ = queue.wait() => {}
            res = leading.changed() => {
                if res.is_err() {
                    while running.next().await.is_some() {}
                    return Ok(());
                }
                queue.push_all();
            }
            _ = health_changed => queue.push_all(),
            _ = tokio::time::sleep_until(next_resync) => queue.push_all(),
            _ = sleep_until_some(expiry) => queue.push(Key::Capacities),
        }
    }
}

/// One worker's reconcile of `key`, against what every decision shares as it is now; returns
/// the key for [`Queue::done`].
async fn worker(ctx: &Ctx, key: Key) -> Key {
    let shared = ctx.shared();
    one(ctx, key.clone(), &shared).await;
    key
}

/// When the first fresh capacity report expires (plus [`EXPIRY_MARGIN`]), if one will.
fn next_expiry(ctx: &Ctx) -> Option<tokio::time::Instant> {
    let now = Timestamp::now();
    let reports = ctx.reports.state();
    let at = capacity::next_expiry(reports.iter().map(|r| &**r), now)?;
    let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
    Some(tokio::time::Instant::now() + wait + EXPIRY_MARGIN)
}

async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
            if let Some(claim) = ctx.claims.get(&namespace, &name) {
                claims::reconcile(ctx, &claim, ctx.world_for_claim(&claim, shared)).await;
            }
        }
        Key::Volume(name) => {
            if let Some(pv) = ctx.volumes.get("", &name) {
                volumes::reconcile(ctx, &pv, ctx.world_for_volume(&pv, shared)).await;
            }
        }
        Key::Capacities => capacities::sync(ctx, shared).await,
    }
}

/// One full pass over every claim, every volume and the export's directories (at startup, on
/// resync and when what every decision shares changes). Linear in the objects.
async fn pass(ctx: &Ctx, queue: &Queue) {
    let shared = ctx.shared();
    let claims = ctx.claims.state();
    let volumes = ctx.volumes.state();
    // Asked for while this pass ran: its objects already passed over did not see the change.
    let mut again = false;
    for chunk in claims.chunks(PASS_CHUNK) {
        futures::stream::iter(chunk)
            .for_each_concurrent(WORKERS, |claim| async {
                // As cached now: keys run between chunks may have moved it on.
                if let Some(claim) = ctx.claims.get(claim.namespace(), claim.name()) {
                    claims::reconcile(ctx, &claim, ctx.world_for_claim(&claim, &shared)).await;
                }
            })
            .await;
        again |= between_chunks(ctx, queue).await;
    }
    for chunk in volumes.chunks(PASS_CHUNK) {
        futures::stream::iter(chunk)
            .for_each_concurrent(WORKERS, |pv| async {
                if let Some(pv) = ctx.volumes.get("", pv.name()) {
                    volumes::reconcile(ctx, &pv, ctx.world_for_volume(&pv, &shared)).await;
                }
            })
            .await;
        again |= between_chunks(ctx, queue).await;
    }
    capacities::sync(ctx, &shared).await;
    let world = World {
        claims,
        volumes,
        classes: shared.classes,
        nodes: shared.nodes,
        provisioners: ctx.provisioners.clone(),
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
    if again {
        queue.push_all();
    }
}

/// Between two chunks of a full pass: reconciles the objects whose watches fired meanwhile (a
/// claim just handed over waits for one chunk, not for the whole pass). Says whether another
/// full pass was asked for.
async fn between_chunks(ctx: &Ctx, queue: &Queue) -> bool {
    match queue.take() {
        queue::Work::All => true,
        queue::Work::Keys(keys) if keys.is_empty() => false,
        queue::Work::Keys(keys) => {
            // The free-space gauges follow the reports in the loop: it gets this one too.
            let reports_moved = keys.contains(&Key::Capacities);
            some(ctx, keys).await;
            if reports_moved {
                queue.push(Key::Capacities);
            }
            false
        }
    }
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
