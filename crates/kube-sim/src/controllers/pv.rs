//! The PV controller (`persistent-volume-binder`) and the PVC/PV protection controllers, as
//! kube-controller-manager runs them (pkg/controller/volume/persistentvolume and
//! pkg/controller/volume/{pvc,pv}protection):
//! - a claim without `volumeName` binds to a volume pre-bound to it (`claimRef` naming it, uid
//!   empty or equal), else to the smallest Available volume of its class, access modes and
//!   volume mode that fits (not for WaitForFirstConsumer classes: the scheduler binds those);
//! - otherwise, for a class whose provisioner is external, the controller hands the claim over:
//!   it sets `volume.kubernetes.io/storage-provisioner` (and the beta twin) and emits the
//!   `ExternalProvisioning` event, again on every sync while the claim waits (claim update or
//!   resync every 15 s), folded into one Event whose count grows; WaitForFirstConsumer claims
//!   wait for `volume.kubernetes.io/selected-node` first (`WaitForFirstConsumer` /
//!   `WaitForPodScheduled` events);
//! - a claim naming a volume binds to it when the volume is free and satisfies the claim
//!   (else `VolumeMismatch`), or when the volume's `claimRef` names the claim;
//! - binding writes, in order: the volume's `claimRef` (full reference with uid;
//!   `bound-by-controller` when the controller chose the volume), the volume's phase, the claim's
//!   `volumeName` with `bind-completed` (and `bound-by-controller` when it set the name), then
//!   the claim's status (phase, capacity, access modes);
//! - volumes: Available without a claim, Bound with one, Released when their claim is gone (an
//!   external provisioner deletes those of reclaim policy Delete), unbound again when the
//!   controller had bound them to a claim that took another volume;
//! - bound claims whose volume is gone are `Lost`;
//! - protection: deleting a claim still used by a scheduled, non-terminated pod, or a Bound
//!   volume, waits;
//!   the `kubernetes.io/pvc-protection` / `pv-protection` finalizers (added at creation while
//!   this controller runs, as the StorageObjectInUseProtection admission plugin does) are
//!   removed once nothing uses the object.
//!
//! Like kube-controller-manager, it works per object: watch events fill a claim queue and a
//! volume queue ([`queue`]), each queued object is synced alone, and every object is synced
//! again every [`RESYNC`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::{ANN_SELECTED_NODE, list, s};
use crate::apiserver::Sim;
use crate::auth::UserInfo;
use crate::selectors::LabelSelector;
use crate::store::{Event, StorageKey};

pub mod queue;
mod sync;
mod writes;

pub use queue::{Queues, VolumeCache, enqueue};
pub use sync::*;
use writes::*;

pub use crate::defaults::{
    FINALIZER_PV_PROTECTION, FINALIZER_PVC_PROTECTION, add_protection_finalizer,
};

pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// `source.component` and `reportingComponent` of the controller's events.
pub const COMPONENT: &str = "persistentvolume-controller";
/// kube-controller-manager's `--pvclaimbinder-sync-period`: every claim is synced again this
/// often, so the event of a waiting claim repeats at this pace.
pub const RESYNC: Duration = Duration::from_secs(15);

/// How often claims waiting with a note are looked at for their repeat (the note itself
/// repeats every [`RESYNC`]).
const NOTE_CHECK: Duration = Duration::from_secs(1);

/// The PV controller and the protection controllers, driven by watch events: each event queues
/// the claims and volumes it affects ([`queue::enqueue`]) and only those are synced, one by one;
/// every claim and volume is synced again every [`RESYNC`], as kube-controller-manager does.
pub fn spawn_pv_binder(sim: Arc<Sim>) {
    tokio::spawn(async move {
        let mut state = State {
            user: UserInfo::service_account("kube-system", "persistent-volume-binder"),
            synced: HashMap::new(),
            recorded: HashMap::new(),
        };
        let mut cache = VolumeCache::default();
        let mut queues = Queues::default();
        let Some(mut events) = Feeds::start(&sim) else {
            return;
        };
        relist(&sim, &mut state, &mut cache, &mut queues);
        let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + RESYNC, RESYNC);
        let mut notes = tokio::time::interval(NOTE_CHECK);
        loop {
            if queues.is_empty() {
                tokio::select! {
                    _ = sim.shutdown.cancelled() => return,
                    _ = resync.tick() => relist(&sim, &mut state, &mut cache, &mut queues),
                    _ = notes.tick() => notes_due(&state, &mut queues),
                    got = events.recv() => match got {
                        Ok(event) => enqueue(&event, &mut cache, &mut queues),
                        Err(RecvError::Lagged(_)) => relist(&sim, &mut state, &mut cache, &mut queues),
                        Err(RecvError::Closed) => return,
                    },
                }
            }
            // Take every event already there, so a burst is one batch.
            loop {
                match events.try_recv() {
                    Ok(event) => enqueue(&event, &mut cache, &mut queues),
                    Err(TryRecvError::Lagged(_)) => {
                        relist(&sim, &mut state, &mut cache, &mut queues)
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => return,
                }
            }
            let work = std::mem::take(&mut queues);
            sync_queued(&sim, &mut state, &cache, work).await;
        }
    });
}

/// The resource types whose events [`enqueue`] files.
const WATCHED: [(&str, &str); 4] = [
    ("", "persistentvolumeclaims"),
    ("", "persistentvolumes"),
    ("storage.k8s.io", "storageclasses"),
    ("", "pods"),
];

/// The controller's informers: one live feed per watched resource type, so a burst of one type
/// (pods, say) cannot push the claim and volume feeds behind.
struct Feeds(Vec<broadcast::Receiver<Arc<Event>>>);

impl Feeds {
    fn start(sim: &Sim) -> Option<Self> {
        WATCHED
            .iter()
            .map(|(group, resource)| {
                let key = StorageKey::new(group, resource);
                sim.store.watch(&key, None).ok().map(|start| start.live)
            })
            .collect::<Option<Vec<_>>>()
            .map(Feeds)
    }

    /// The next event of any feed; `Lagged` when one fell behind.
    async fn recv(&mut self) -> Result<Arc<Event>, RecvError> {
        let next = self.0.iter_mut().map(|rx| Box::pin(rx.recv()));
        futures::future::select_all(next).await.0
    }

    /// An event already waiting on any feed; `Lagged` when one fell behind.
    fn try_recv(&mut self) -> Result<Arc<Event>, TryRecvError> {
        let mut closed = 0;
        for rx in &mut self.0 {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Closed) => closed += 1,
                other => return other,
            }
        }
        if closed == self.0.len() {
            Err(TryRecvError::Closed)
        } else {
            Err(TryRecvError::Empty)
        }
    }
}

/// Reads every volume again and queues every claim and volume (start, resync, or a watch that
/// fell behind); forgets the claims that are gone.
fn relist(sim: &Sim, state: &mut State, cache: &mut VolumeCache, queues: &mut Queues) {
    cache.replace(list(sim, "", "persistentvolumes"));
    let claims = list(sim, "", "persistentvolumeclaims");
    let live: HashSet<&str> = claims.iter().map(|c| s(c, "/metadata/uid")).collect();
    state.synced.retain(|uid, _| live.contains(uid.as_str()));
    state
        .recorded
        .retain(|(uid, _, _), _| live.contains(uid.as_str()));
    queues.claims.extend(claims.iter().map(|c| {
        let (ns, name) = (s(c, "/metadata/namespace"), s(c, "/metadata/name"));
        (ns.to_string(), name.to_string())
    }));
    queues.volumes.extend(cache.by_name.keys().cloned());
}

/// Queues the waiting claims whose note is due again.
fn notes_due(state: &State, queues: &mut Queues) {
    for (_, at, key) in state.synced.values() {
        if at.elapsed() >= RESYNC {
            queues.claims.insert(key.clone());
        }
    }
}

/// Syncs what the queues hold: claims (then their protection), then volumes (then theirs).
async fn sync_queued(sim: &Arc<Sim>, state: &mut State, cache: &VolumeCache, mut work: Queues) {
    if work.pending_claims || !work.released_by_pods.is_empty() {
        for c in list(sim, "", "persistentvolumeclaims") {
            let ns = s(&c, "/metadata/namespace");
            let pending = work.pending_claims && s(&c, "/status/phase") != "Bound";
            let released = c.pointer("/metadata/deletionTimestamp").is_some()
                && work.released_by_pods.contains(ns);
            if pending || released {
                let name = s(&c, "/metadata/name");
                work.claims.insert((ns.to_string(), name.to_string()));
            }
        }
    }
    let claims_key = StorageKey::new("", "persistentvolumeclaims");
    if !work.claims.is_empty() {
        let classes = list(sim, "storage.k8s.io", "storageclasses");
        let pods_key = StorageKey::new("", "pods");
        let mut pods: HashMap<String, Vec<Value>> = HashMap::new();
        for (ns, name) in &work.claims {
            let Some(pvc) = sim.store.get(&claims_key, ns, name) else {
                continue;
            };
            let pods = pods
                .entry(ns.clone())
                .or_insert_with(|| sim.store.list(&pods_key, Some(ns)).0);
            let key = (ns.clone(), name.clone());
            let volumes = Volumes::new(cache.for_claim(&key, s(&pvc, "/spec/volumeName")));
            sync_claim_once(sim, state, &volumes, &classes, pods, &pvc).await;
            if let Some(pvc) = sim.store.get(&claims_key, ns, name) {
                protect_claim(sim, &pvc, pods).await;
            }
        }
    }
    let volumes_key = StorageKey::new("", "persistentvolumes");
    for name in &work.volumes {
        let Some(pv) = sim.store.get(&volumes_key, "", name) else {
            continue;
        };
        sync_volume_once(sim, state, &pv).await;
        if let Some(pv) = sim.store.get(&volumes_key, "", name) {
            protect_volume(sim, &pv).await;
        }
    }
}

/// syncClaim with its writes.
async fn sync_claim_once(
    sim: &Arc<Sim>,
    state: &mut State,
    volumes: &Volumes<'_>,
    classes: &[Value],
    pods: &[Value],
    pvc: &Value,
) {
    let decision = sync_claim(pvc, volumes, classes, pods);
    let (ns, name) = (s(pvc, "/metadata/namespace"), s(pvc, "/metadata/name"));
    let key = (ns.to_string(), name.to_string());
    let uid = s(pvc, "/metadata/uid").to_string();
    let rv = s(pvc, "/metadata/resourceVersion").to_string();
    let due = state
        .synced
        .get(&uid)
        .is_none_or(|(seen, at, _)| *seen != rv || at.elapsed() >= RESYNC);
    let user = state.user.clone();
    if matches!(
        decision,
        ClaimSync::Idle | ClaimSync::Bind(_) | ClaimSync::Lost(_)
    ) {
        // No longer waiting: no note to repeat.
        state.synced.remove(&uid);
    }
    match decision {
        ClaimSync::Idle => {}
        ClaimSync::Bind(volume) => {
            if let Some(pv) = volumes.by_name.get(volume.as_str()) {
                bind(sim, &user, pv, pvc).await;
            }
        }
        ClaimSync::Pending(note) => {
            if due && let Some(note) = note {
                record(sim, state, pvc, &note).await;
                state.synced.insert(uid, (rv, Instant::now(), key));
            }
        }
        ClaimSync::External(provisioner) => {
            let mut claim = pvc.clone();
            if ann(pvc, ANN_STORAGE_PROVISIONER) != Some(provisioner.as_str()) {
                set_annotation(&mut claim, ANN_BETA_STORAGE_PROVISIONER, &provisioner);
                set_annotation(&mut claim, ANN_STORAGE_PROVISIONER, &provisioner);
                let req = update(&user, "persistentvolumeclaims", &claim, false);
                let what = "claim handed to its external provisioner";
                match write(sim, req, what, ns, name).await {
                    Some(updated) => claim = updated,
                    None => return,
                }
            }
            if due {
                let n = note(
                    "Normal",
                    "ExternalProvisioning",
                    external_provisioning_message(&provisioner),
                );
                record(sim, state, &claim, &n).await;
                state.synced.insert(uid, (rv, Instant::now(), key));
            }
        }
        ClaimSync::Lost(note) => {
            if s(pvc, "/status/phase") != "Lost" {
                let mut claim = pvc.clone();
                claim["status"]["phase"] = json!("Lost");
                let req = update(&user, "persistentvolumeclaims", &claim, true);
                if write(sim, req, "claim Lost", ns, name).await.is_some() {
                    record(sim, state, pvc, &note).await;
                }
            }
        }
    }
    if pvc.pointer("/metadata/deletionTimestamp").is_some() {
        // A claim being deleted waits for nothing more from this controller.
        state.synced.remove(s(pvc, "/metadata/uid"));
    }
}

/// syncVolume with its writes, against the claim as it is now.
async fn sync_volume_once(sim: &Arc<Sim>, state: &State, pv: &Value) {
    let name = s(pv, "/metadata/name");
    let (claim_ns, claim_name) = (
        s(pv, "/spec/claimRef/namespace"),
        s(pv, "/spec/claimRef/name"),
    );
    let claim = if claim_name.is_empty() {
        None
    } else {
        let key = StorageKey::new("", "persistentvolumeclaims");
        sim.store.get(&key, claim_ns, claim_name)
    };
    let claims: HashMap<(&str, &str), &Value> = claim
        .iter()
        .map(|c| ((s(c, "/metadata/namespace"), s(c, "/metadata/name")), c))
        .collect();
    let user = &state.user;
    match sync_volume(pv, &claims) {
        VolumeSync::Idle => {}
        VolumeSync::Phase(phase) => {
            let mut p = pv.clone();
            set_phase(&mut p, phase);
            let req = update(user, "persistentvolumes", &p, true);
            write(sim, req, &format!("volume {phase}"), "", name).await;
        }
        VolumeSync::Unbind => {
            let mut p = pv.clone();
            p["spec"]["claimRef"] = Value::Null;
            if let Some(a) = p
                .pointer_mut("/metadata/annotations")
                .and_then(Value::as_object_mut)
            {
                a.remove(ANN_BOUND_BY_CONTROLLER);
            }
            let req = update(user, "persistentvolumes", &p, false);
            if let Some(mut p) = write(sim, req, "volume unbound", "", name).await {
                set_phase(&mut p, "Available");
                let req = update(user, "persistentvolumes", &p, true);
                write(sim, req, "volume Available", "", name).await;
            }
        }
    }
}

/// pvc-protection: removes the finalizer of a deleted claim no pod uses any more.
async fn protect_claim(sim: &Arc<Sim>, pvc: &Value, pods: &[Value]) {
    if pvc.pointer("/metadata/deletionTimestamp").is_some()
        && has_finalizer(pvc, FINALIZER_PVC_PROTECTION)
        && !claim_in_use(pvc, pods)
    {
        let user = UserInfo::service_account("kube-system", "pvc-protection-controller");
        let resource = "persistentvolumeclaims";
        remove_finalizer(sim, &user, resource, pvc, FINALIZER_PVC_PROTECTION).await;
    }
}

/// pv-protection: removes the finalizer of a deleted volume that is not Bound.
async fn protect_volume(sim: &Arc<Sim>, pv: &Value) {
    if pv.pointer("/metadata/deletionTimestamp").is_some()
        && has_finalizer(pv, FINALIZER_PV_PROTECTION)
        && s(pv, "/status/phase") != "Bound"
    {
        let user = UserInfo::service_account("kube-system", "pv-protection-controller");
        let resource = "persistentvolumes";
        remove_finalizer(sim, &user, resource, pv, FINALIZER_PV_PROTECTION).await;
    }
}

#[cfg(test)]
mod tests;
