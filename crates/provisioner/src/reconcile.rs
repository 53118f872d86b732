//! The I/O layer: snapshot the caches, ask `plan` what to do, do the part that falls to this
//! instance (controller while leading, agent for its node), and record events.
//!
//! Writes: PVs (create pre-bound, delete), the claim's `selected-node` (removed to reschedule)
//! and `ballast.dev/binding-problem` annotations, the agent's Node annotations; every one with
//! the field manager [`FIELD_MANAGER`]. Never a claim's spec or status: the PV controller binds.
//!
//! Crash safety, the rules:
//! - a provisioned PV is named `pvc-<claim uid>` (or the claim's `volumeName`), so a retry after a
//!   restart finds the PV it already created (AlreadyExists is success when it names the claim);
//! - the directory is created before the PV and reused when it exists;
//! - a PV's directory is removed before the PV is deleted, so a crash in between is retried;
//! - a directory named like ours (`<pv>_<namespace>_<claim>`) is unknown when no PV of that name
//!   exists (on this node, for hostPath) and no live claim is still waiting for that volume.
//!   Each pass removes unknown directories that are empty and unchanged for a minute (a fresh
//!   one may belong to a claim not yet in this cache); a non-empty one is kept and logged (it
//!   can only be data of a Retain volume whose PV an administrator deleted).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NFSVolumeSource, Node, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;

use crate::error::{Error, Result, kube, status_code};
use crate::plan::{self, *};
use crate::queue::Key;
use crate::{NfsConfig, metrics, storage};

/// Events name this component, as external provisioners do.
pub const COMPONENT: &str = "ballast.dev/provisioner";
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "ballast-provisioner";
/// An agent republishes its node's free space at least this often (a change of free space does
/// not trigger a publish by itself, so node updates cannot drive a loop).
const PUBLISH_EVERY: Duration = Duration::from_secs(30);

/// An unknown directory is removed only once unchanged for this long: a directory another
/// instance has just created may belong to a claim not yet in our cache.
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(60);

/// A changed message for the same object and reason is written at most this often.
const EVENT_MIN_INTERVAL: Duration = Duration::from_secs(30);

pub type Said = HashMap<(String, &'static str), (String, Instant)>;

pub struct Ctx {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub identity: String,
    pub node_name: Option<String>,
    pub hostpath_base: PathBuf,
    pub nfs: Option<NfsConfig>,
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
    pub classes: Store<StorageClass>,
    pub nodes: Store<Node>,
    pub health: Option<watch::Receiver<ballast_control::client::NodeHealthView>>,
    pub leading: watch::Receiver<bool>,
    /// Last message per (object uid, reason) and when it was written: an event is written
    /// only when the message changes, and then at most every EVENT_MIN_INTERVAL.
    pub said: Mutex<Said>,
    pub last_publish: Mutex<Option<Instant>>,
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
            nodes: plan::node_facts(&self.nodes.state(), ready.as_ref(), unix_now()),
        }
    }

    /// The world one claim's decision looks at, by name from the caches: the volume it names and
    /// the one we would have provisioned for it (`pvc-<uid>`). Constant cost per claim.
    fn world_for_claim(&self, c: &PersistentVolumeClaim, shared: &Shared) -> World {
        let mut names: Vec<String> = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|n| !n.is_empty())
            .into_iter()
            .collect();
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
        let claims = plan::claim_ref(v)
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

    /// Whether this process acts on a decision. The controller part acts only for the backends
    /// this process is set up for (NFS with `nfs`, hostPath as an agent), so an NFS Deployment
    /// and a hostPath DaemonSet, each with its own Lease, never act on the same claims.
    fn is_mine(&self, actor: &Actor, backend: Option<Backend>, leading: bool) -> bool {
        match actor {
            Actor::Controller => leading && backend.is_some_and(|b| self.serves(b)),
            Actor::Node(n) => self.node_name.as_deref() == Some(n.as_str()),
        }
    }

    pub fn serves(&self, backend: Backend) -> bool {
        match backend {
            Backend::HostPath => self.node_name.is_some(),
            Backend::Nfs => self.nfs.is_some(),
        }
    }

    fn lock_said(&self) -> std::sync::MutexGuard<'_, Said> {
        // A poisoned map of last messages is still a valid map: at worst an event repeats.
        self.said.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reconciles at most this many objects at once: provisioning is mostly waiting for the API
/// server (the external-provisioner runs 100 workers by default; fewer keep its load modest).
const WORKERS: usize = 16;

/// Reconciles the claims and volumes a batch of watch events asked for, several at once (each
/// key appears once in a batch, so no object is reconciled twice concurrently).
pub async fn some(ctx: &Ctx, keys: Vec<Key>) {
    let shared = ctx.shared();
    let leading = *ctx.leading.borrow();
    futures::stream::iter(keys)
        .for_each_concurrent(WORKERS, |key| one(ctx, key, &shared, leading))
        .await;
}

async fn one(ctx: &Ctx, key: Key, shared: &Shared, leading: bool) {
    match key {
        Key::Claim { namespace, name } => {
            if let Some(claim) = ctx.claims.get(&ObjectRef::new(&name).within(&namespace)) {
                reconcile_claim(ctx, &claim, shared, leading).await;
            }
        }
        Key::Volume(name) => {
            if let Some(pv) = ctx.volumes.get(&ObjectRef::new(&name)) {
                reconcile_volume(ctx, &pv, shared, leading).await;
            }
        }
    }
}

async fn reconcile_claim(ctx: &Ctx, claim: &PersistentVolumeClaim, shared: &Shared, leading: bool) {
    let world = ctx.world_for_claim(claim, shared);
    let plan = plan::decide_claim(claim, &world);
    if !ctx.is_mine(&plan.actor, plan::claim_backend(claim, &world), leading) {
        return;
    }
    let provisioning = matches!(
        plan.action,
        ClaimAction::Provision(_) | ClaimAction::Reschedule { .. }
    );
    if let Err(e) = apply_claim(ctx, claim, &world, plan.action).await {
        claim_failed(ctx, claim, provisioning, &e).await;
    }
}

async fn reconcile_volume(ctx: &Ctx, pv: &PersistentVolume, shared: &Shared, leading: bool) {
    let world = ctx.world_for_volume(pv, shared);
    let plan = plan::decide_volume(pv, &world);
    if !ctx.is_mine(&plan.actor, plan::volume_backend(pv, &world), leading) {
        return;
    }
    if let Err(e) = apply_volume(ctx, pv, plan.action).await {
        let name = pv.metadata.name.as_deref().unwrap_or("");
        log_error(&e, &format!("volume {name}"));
        if !e.is_conflict() {
            metrics::failed(volume_class(pv), "reclaim", e.label());
        }
    }
}

/// One full pass over every claim, every volume and the directories this instance owns (at
/// startup, on resync and when what every decision shares changes). Linear in the objects.
pub async fn pass(ctx: &Ctx) {
    let shared = ctx.shared();
    let leading = *ctx.leading.borrow();
    let claims = ctx.claims.state();
    let volumes = ctx.volumes.state();
    futures::stream::iter(&claims)
        .for_each_concurrent(WORKERS, |claim| {
            reconcile_claim(ctx, claim, &shared, leading)
        })
        .await;
    futures::stream::iter(&volumes)
        .for_each_concurrent(WORKERS, |pv| reconcile_volume(ctx, pv, &shared, leading))
        .await;
    let world = World {
        claims,
        volumes,
        classes: shared.classes,
        nodes: shared.nodes,
    };
    if let Some(node) = ctx.node_name.clone() {
        sweep(ctx, &ctx.hostpath_base, &world, Some(&node));
        if let Err(e) = publish_free_space(ctx, false).await {
            log_error(&e, &format!("node {node}"));
        }
    }
    if leading && let Some(nfs) = &ctx.nfs {
        sweep(ctx, &nfs.mount, &world, None);
    }
    let live: std::collections::HashSet<&str> = world
        .claims
        .iter()
        .filter_map(|c| c.metadata.uid.as_deref())
        .collect();
    ctx.lock_said()
        .retain(|(uid, reason), _| live.contains(uid.as_str()) || *reason == "orphan");
}

/// An agent's periodic free-space report between full passes.
pub async fn publish_periodically(ctx: &Ctx) {
    if let Err(e) = publish_free_space(ctx, false).await {
        log_error(&e, "free space");
    }
}

fn log_error(e: &Error, what: &str) {
    if e.is_conflict() {
        tracing::debug!(
            object = what,
            "write conflict; will re-read and decide again"
        );
    } else {
        tracing::warn!(object = what, error = %chain(e), "reconcile step failed");
    }
}

/// The error with its sources, for events and logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

async fn claim_failed(ctx: &Ctx, claim: &PersistentVolumeClaim, provisioning: bool, e: &Error) {
    log_error(e, &claim_key(claim));
    if e.is_conflict() {
        return;
    }
    let operation = if provisioning { "provision" } else { "bind" };
    let reason = if provisioning {
        "ProvisioningFailed"
    } else {
        "BindingFailed"
    };
    if event(ctx, &claim_ref(claim), "Warning", reason, chain(e)).await {
        metrics::failed(plan::claim_class(claim), operation, e.label());
    }
}

fn claim_key(c: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        c.metadata.namespace.as_deref().unwrap_or(""),
        c.metadata.name.as_deref().unwrap_or("")
    )
}

fn claim_ref(c: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.clone(),
        name: c.metadata.name.clone(),
        uid: c.metadata.uid.clone(),
        resource_version: c.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn post() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Records an Event unless the same message was last said for this object and reason, or
/// another one less than EVENT_MIN_INTERVAL ago (messages quoting free space change often).
/// Says whether it was new. Event failures are logged, never fatal.
async fn event(
    ctx: &Ctx,
    obj: &ObjectReference,
    type_: &str,
    reason: &'static str,
    message: String,
) -> bool {
    let key = (obj.uid.clone().unwrap_or_default(), reason);
    {
        let mut said = ctx.lock_said();
        let quiet = said
            .get(&key)
            .is_some_and(|(last, at)| *last == message || at.elapsed() < EVENT_MIN_INTERVAL);
        if quiet {
            return false;
        }
        said.insert(key, (message.clone(), Instant::now()));
    }
    let target = format!(
        "{}/{}",
        obj.namespace.as_deref().unwrap_or(""),
        obj.name.as_deref().unwrap_or("")
    );
    tracing::info!(object = %target, reason, %message, "event");
    let ev = Event {
        type_: if type_ == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(message),
        action: "Provision".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, obj).await {
        tracing::warn!(object = %target, reason, error = %e, "failed to record event");
    }
    true
}

async fn apply_claim(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    world: &World,
    action: ClaimAction,
) -> Result<()> {
    match action {
        ClaimAction::Nothing(_) => Ok(()),
        ClaimAction::ClearProblem => {
            let (ns, name) = ns_name(claim);
            let patch =
                serde_json::json!({"metadata": {"annotations": {ANN_BINDING_PROBLEM: null}}});
            Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
                .patch(name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map_err(kube(format!("clear binding problem of claim {ns}/{name}")))?;
            Ok(())
        }
        ClaimAction::Reschedule { node, message } => reschedule(ctx, claim, &node, message).await,
        ClaimAction::Refuse { reason, message } => {
            if event(ctx, &claim_ref(claim), "Warning", reason, message.clone()).await {
                metrics::failed(plan::claim_class(claim), "bind", "refused");
            }
            let current = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_BINDING_PROBLEM));
            if current != Some(&message) {
                let ns = claim.metadata.namespace.as_deref().unwrap_or("");
                let name = claim.metadata.name.as_deref().unwrap_or("");
                let patch = serde_json::json!({"metadata": {"annotations": {ANN_BINDING_PROBLEM: message}}});
                Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
                    .patch(name, &patch_params(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube(format!("annotate claim {ns}/{name}")))?;
            }
            Ok(())
        }
        ClaimAction::Fail { message } => {
            if event(
                ctx,
                &claim_ref(claim),
                "Warning",
                "ProvisioningFailed",
                message,
            )
            .await
            {
                metrics::failed(plan::claim_class(claim), "provision", "placement");
            }
            Ok(())
        }
        ClaimAction::Provision(p) => provision(ctx, claim, world, p).await,
    }
}

fn ns_name(c: &PersistentVolumeClaim) -> (&str, &str) {
    (
        c.metadata.namespace.as_deref().unwrap_or(""),
        c.metadata.name.as_deref().unwrap_or(""),
    )
}

/// The selected node cannot take the volume: say why, and remove `selected-node` so the
/// scheduler picks again (as the external-provisioner's ProvisioningReschedule does). The
/// removal carries the resourceVersion read, so a node the scheduler selected meanwhile stays.
async fn reschedule(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    node: &str,
    message: String,
) -> Result<()> {
    if event(
        ctx,
        &claim_ref(claim),
        "Warning",
        "ProvisioningFailed",
        message,
    )
    .await
    {
        metrics::failed(plan::claim_class(claim), "provision", "placement");
    }
    let (ns, name) = ns_name(claim);
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": claim.metadata.resource_version,
        "annotations": {ANN_SELECTED_NODE: null},
    }});
    Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .patch(name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(kube(format!("remove selected node of claim {ns}/{name}")))?;
    tracing::info!(claim = %format!("{ns}/{name}"), %node, "selected node removed; the scheduler picks again");
    Ok(())
}

enum Source {
    HostPath { path: PathBuf, node: String },
    Nfs { server: String, path: PathBuf },
}

async fn provision(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    world: &World,
    p: Provision,
) -> Result<()> {
    let started = Instant::now();
    let key = claim_key(claim);
    let (base, source) = match (p.backend, &ctx.nfs) {
        (Backend::HostPath, _) => {
            let node = p.node.clone().unwrap_or_default();
            let path = ctx.hostpath_base.join(&p.directory);
            (ctx.hostpath_base.clone(), Source::HostPath { path, node })
        }
        (Backend::Nfs, Some(nfs)) => (
            nfs.mount.clone(),
            Source::Nfs {
                server: nfs.server.clone(),
                path: nfs.export_path.join(&p.directory),
            },
        ),
        (Backend::Nfs, None) => {
            return Err(Error::Config(
                "NFS is not configured here: set NFS_SERVER and mount the export".into(),
            ));
        }
    };
    if let Source::HostPath { node, .. } = &source {
        let free = storage::free_bytes(&base)?;
        if free < p.capacity {
            let message = format!(
                "node \"{node}\" has only {} free under {} but the claim requests {} (free space \
                 is checked before placing a hostPath volume)",
                crate::quantity::human(free),
                base.display(),
                crate::quantity::human(p.capacity)
            );
            if plan::selected_node(claim).is_some() {
                return reschedule(ctx, claim, node, message).await;
            }
            if event(
                ctx,
                &claim_ref(claim),
                "Warning",
                "ProvisioningFailed",
                message,
            )
            .await
            {
                metrics::failed(&p.class, "provision", "space");
            }
            return Ok(());
        }
    }
    event(
        ctx,
        &claim_ref(claim),
        "Normal",
        "Provisioning",
        format!("External provisioner is provisioning volume for claim \"{key}\""),
    )
    .await;
    storage::create(&base, &p.directory)?;
    let class = world
        .classes
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(p.class.as_str()));
    let desired = build_volume(claim, &p, class.map(|c| &**c), source);
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match api.create(&post(), &desired).await {
        Ok(_) => {
            metrics::provisioned(&p.class, started.elapsed());
            tracing::info!(claim = %key, volume = %p.volume, directory = %p.directory, node = ?p.node, "created volume pre-bound to its claim");
            event(
                ctx,
                &claim_ref(claim),
                "Normal",
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {}", p.volume),
            )
            .await;
        }
        Err(e) if status_code(&e) == Some(409) => {
            // Created by another replica, or by us before a restart: success if it names this
            // claim, and that replica has said so already.
            let existing = api
                .get(&p.volume)
                .await
                .map_err(kube(format!("read PersistentVolume {}", p.volume)))?;
            if !plan::refers_to(&existing, claim) {
                return Err(Error::Config(format!(
                    "PersistentVolume \"{}\" already exists and is not reserved for claim \"{key}\"",
                    p.volume
                )));
            }
            tracing::debug!(claim = %key, volume = %p.volume, "volume already provisioned");
        }
        Err(e) => return Err(kube(format!("create PersistentVolume {}", p.volume))(e)),
    }
    if p.backend == Backend::HostPath {
        publish_free_space(ctx, true).await?;
    }
    Ok(())
}

fn build_volume(
    claim: &PersistentVolumeClaim,
    p: &Provision,
    class: Option<&StorageClass>,
    source: Source,
) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .unwrap_or_else(|| Quantity(p.capacity.to_string()));
    let access_modes = spec
        .access_modes
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    let mut pv_spec = PersistentVolumeSpec {
        capacity: Some([("storage".to_owned(), request)].into_iter().collect()),
        access_modes: Some(access_modes),
        persistent_volume_reclaim_policy: Some(
            class
                .and_then(|c| c.reclaim_policy.clone())
                .unwrap_or_else(|| "Delete".into()),
        ),
        storage_class_name: Some(p.class.clone()),
        mount_options: class.and_then(|c| c.mount_options.clone()),
        volume_mode: Some("Filesystem".into()),
        claim_ref: Some(claim_ref(claim)),
        ..Default::default()
    };
    match source {
        Source::HostPath { path, node } => {
            pv_spec.host_path = Some(HostPathVolumeSource {
                path: path.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            });
            pv_spec.node_affinity = Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: LABEL_HOSTNAME.into(),
                            operator: "In".into(),
                            values: Some(vec![node]),
                        }]),
                        ..Default::default()
                    }],
                }),
            });
        }
        Source::Nfs { server, path } => {
            pv_spec.nfs = Some(NFSVolumeSource {
                server,
                path: path.to_string_lossy().into_owned(),
                read_only: None,
            });
        }
    }
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(p.volume.clone()),
            annotations: Some(
                [
                    (
                        ANN_PROVISIONED_BY.to_owned(),
                        p.backend.provisioner().to_owned(),
                    ),
                    (ANN_DIRECTORY.to_owned(), p.directory.clone()),
                ]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        },
        spec: Some(pv_spec),
        status: None,
    }
}

async fn apply_volume(ctx: &Ctx, pv: &PersistentVolume, action: VolumeAction) -> Result<()> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    match action {
        VolumeAction::Nothing(_) => Ok(()),
        VolumeAction::Delete {
            backend,
            directory,
            archive,
        } => {
            let base: &Path = match (backend, &ctx.nfs) {
                (Backend::HostPath, _) => &ctx.hostpath_base,
                (Backend::Nfs, Some(nfs)) => &nfs.mount,
                (Backend::Nfs, None) => {
                    return Err(Error::Config(
                        "NFS is not configured here: cannot delete NFS volumes".into(),
                    ));
                }
            };
            let Some(live) = still_released(ctx, pv).await? else {
                return Ok(());
            };
            if let Some(dir) = &directory {
                if archive {
                    storage::archive(base, dir)?;
                } else {
                    storage::remove(base, dir)?;
                }
            }
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: live.metadata.uid.clone(),
                    resource_version: live.metadata.resource_version.clone(),
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Err(e) if status_code(&e) != Some(404) => {
                    return Err(kube(format!("delete volume {name}"))(e));
                }
                _ => {}
            }
            metrics::deleted(volume_class(pv));
            let fate = if archive { "archived" } else { "removed" };
            tracing::info!(volume = %name, directory = ?directory, fate, "reclaimed volume");
            if backend == Backend::HostPath {
                publish_free_space(ctx, true).await?;
            }
            Ok(())
        }
    }
}

/// The live volume, if the API still shows it Released and no live claim holds it: data is
/// removed on the API's word, never on cache evidence alone.
async fn still_released(ctx: &Ctx, pv: &PersistentVolume) -> Result<Option<PersistentVolume>> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let live = Api::<PersistentVolume>::all(ctx.client.clone())
        .get_opt(&name)
        .await
        .map_err(kube(format!("read volume {name}")))?;
    let Some(live) = live.filter(|l| l.metadata.uid == pv.metadata.uid) else {
        return Ok(None);
    };
    if plan::phase_of_volume(&live) != "Released" || live.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Some((ns, claim, uid)) = plan::claim_ref(&live) else {
        return Ok(Some(live));
    };
    let holder = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(kube(format!("read claim {ns}/{claim}")))?;
    let held = holder.is_some_and(|c| {
        (uid.is_empty() || c.metadata.uid.as_deref() == Some(uid))
            && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(name.as_str())
    });
    if held {
        tracing::warn!(volume = %name, claim = %format!("{ns}/{claim}"), "volume is Released but its claim still holds it; keeping the data");
        return Ok(None);
    }
    Ok(Some(live))
}

/// Removes empty unknown directories under `base` (see the module doc for the rule).
fn sweep(ctx: &Ctx, base: &Path, world: &World, node: Option<&str>) {
    let dirs = match storage::list(base) {
        Ok(d) => d,
        Err(e) => return log_error(&e, &base.display().to_string()),
    };
    for dir in plan::orphans(&dirs, world, node) {
        match storage::remove_if_idle(base, &dir, ORPHAN_MIN_AGE) {
            Ok(storage::Idle::Removed) => {
                tracing::info!(directory = %dir, "removed unknown empty directory")
            }
            Ok(storage::Idle::Recent) => {}
            Ok(storage::Idle::NotEmpty) => {
                let first = ctx
                    .lock_said()
                    .insert((dir.clone(), "orphan"), (String::new(), Instant::now()))
                    .is_none();
                if first {
                    tracing::warn!(
                        directory = %dir,
                        "directory belongs to no volume or claim but holds data; kept"
                    );
                }
            }
            Err(e) => log_error(&e, &dir),
        }
    }
}

/// Publishes this node's free space under the base path as a Node annotation, so every
/// instance can place hostPath volumes; at most every PUBLISH_EVERY unless `force`.
pub async fn publish_free_space(ctx: &Ctx, force: bool) -> Result<()> {
    let Some(node) = &ctx.node_name else {
        return Ok(());
    };
    {
        // Stamped before trying, so a failing publish is retried (and logged) once per period,
        // not on every pass.
        let mut last = ctx.last_publish.lock().unwrap_or_else(|e| e.into_inner());
        if !force && last.is_some_and(|t| t.elapsed() < PUBLISH_EVERY) {
            return Ok(());
        }
        *last = Some(Instant::now());
    }
    let free = storage::free_bytes(&ctx.hostpath_base)?;
    let patch = serde_json::json!({"metadata": {"annotations": {
        ANN_FREE_BYTES: free.to_string(),
        ANN_REPORTED_AT: unix_now().to_string(),
    }}});
    Api::<Node>::all(ctx.client.clone())
        .patch(node, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(kube(format!("publish free space on node {node}")))?;
    Ok(())
}

fn unix_now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}
