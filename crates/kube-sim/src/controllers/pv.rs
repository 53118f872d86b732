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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ANN_SELECTED_NODE, TICK, list, s, sleep_or_stop};
use crate::apiserver::{ApiRequest, Sim, Verb, now};
use crate::auth::UserInfo;
use crate::patch::PatchType;
use crate::selectors::LabelSelector;

mod sync;

pub use sync::*;

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

/// Events already recorded, by (claim uid, reason, message): the Event's namespace, name and
/// count, so a repeat is folded into it as the client-go event correlator does.
type Recorded = HashMap<(String, &'static str, String), (String, String, u64)>;

struct State {
    user: UserInfo,
    /// Per claim uid: the resourceVersion last synced and when, for event pacing.
    synced: HashMap<String, (String, Instant)>,
    recorded: Recorded,
}

pub fn spawn_pv_binder(sim: Arc<Sim>) {
    tokio::spawn(async move {
        let mut state = State {
            user: UserInfo::service_account("kube-system", "persistent-volume-binder"),
            synced: HashMap::new(),
            recorded: HashMap::new(),
        };
        while sleep_or_stop(&sim, TICK).await {
            pv_binder_pass(&sim, &mut state).await;
            protection_pass(&sim).await;
        }
    });
}

async fn write(sim: &Arc<Sim>, req: ApiRequest, what: &str, ns: &str, name: &str) -> Option<Value> {
    match sim.call(req).await {
        Ok(v) => {
            tracing::info!(namespace = %ns, name = %name, "pv controller: {what}");
            Some(v)
        }
        Err(e) => {
            tracing::debug!(namespace = %ns, name = %name, error = %e, "pv controller: failed to {what}");
            None
        }
    }
}

fn update(user: &UserInfo, resource: &str, obj: &Value, status: bool) -> ApiRequest {
    let req = ApiRequest::new(Verb::Update, "v1", resource, user.clone())
        .ns(s(obj, "/metadata/namespace"))
        .name(s(obj, "/metadata/name"))
        .body(obj);
    if status {
        req.subresource("status")
    } else {
        req
    }
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if !obj
        .pointer("/metadata/annotations")
        .is_some_and(Value::is_object)
    {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][key] = json!(value);
}

async fn pv_binder_pass(sim: &Arc<Sim>, state: &mut State) {
    let pvs = list(sim, "", "persistentvolumes");
    let pvcs = list(sim, "", "persistentvolumeclaims");
    let classes = list(sim, "storage.k8s.io", "storageclasses");
    let pods = if pvcs.is_empty() {
        Vec::new()
    } else {
        list(sim, "", "pods")
    };
    let volumes = Volumes::new(&pvs);
    let user = state.user.clone();
    for pvc in &pvcs {
        let decision = sync_claim(pvc, &volumes, &classes, &pods);
        let (ns, name) = (s(pvc, "/metadata/namespace"), s(pvc, "/metadata/name"));
        let uid = s(pvc, "/metadata/uid").to_string();
        let rv = s(pvc, "/metadata/resourceVersion").to_string();
        let due = state
            .synced
            .get(&uid)
            .is_none_or(|(seen, at)| *seen != rv || at.elapsed() >= RESYNC);
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
                    state.synced.insert(uid, (rv, Instant::now()));
                }
            }
            ClaimSync::External(provisioner) => {
                let mut claim = pvc.clone();
                if ann(pvc, ANN_STORAGE_PROVISIONER) != Some(provisioner.as_str()) {
                    set_annotation(&mut claim, ANN_BETA_STORAGE_PROVISIONER, &provisioner);
                    set_annotation(&mut claim, ANN_STORAGE_PROVISIONER, &provisioner);
                    let req = update(&user, "persistentvolumeclaims", &claim, false);
                    match write(
                        sim,
                        req,
                        "claim handed to its external provisioner",
                        ns,
                        name,
                    )
                    .await
                    {
                        Some(updated) => claim = updated,
                        None => continue,
                    }
                }
                if due {
                    let n = note(
                        "Normal",
                        "ExternalProvisioning",
                        external_provisioning_message(&provisioner),
                    );
                    record(sim, state, &claim, &n).await;
                    state.synced.insert(uid, (rv, Instant::now()));
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
    }
    let live: HashSet<&str> = pvcs.iter().map(|c| s(c, "/metadata/uid")).collect();
    state.synced.retain(|uid, _| live.contains(uid.as_str()));
    state
        .recorded
        .retain(|(uid, _, _), _| live.contains(uid.as_str()));

    // Volumes, against the claims as they are now (the claim pass may have bound some).
    let pvs = list(sim, "", "persistentvolumes");
    let pvcs = list(sim, "", "persistentvolumeclaims");
    let claims: HashMap<(&str, &str), &Value> = pvcs
        .iter()
        .map(|c| ((s(c, "/metadata/namespace"), s(c, "/metadata/name")), c))
        .collect();
    for pv in &pvs {
        let name = s(pv, "/metadata/name");
        match sync_volume(pv, &claims) {
            VolumeSync::Idle => {}
            VolumeSync::Phase(phase) => {
                let mut p = pv.clone();
                set_phase(&mut p, phase);
                let req = update(&user, "persistentvolumes", &p, true);
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
                let req = update(&user, "persistentvolumes", &p, false);
                if let Some(mut p) = write(sim, req, "volume unbound", "", name).await {
                    set_phase(&mut p, "Available");
                    let req = update(&user, "persistentvolumes", &p, true);
                    write(sim, req, "volume Available", "", name).await;
                }
            }
        }
    }
}

fn set_phase(pv: &mut Value, phase: &str) {
    if !pv.get("status").is_some_and(Value::is_object) {
        pv["status"] = json!({});
    }
    pv["status"]["phase"] = json!(phase);
    pv["status"]["lastPhaseTransitionTime"] = json!(now());
}

/// Records an event on a claim, folding a repeat into the Event already written (count and
/// lastTimestamp), as client-go's event correlator does for the real controller.
async fn record(sim: &Arc<Sim>, state: &mut State, pvc: &Value, note: &Note) {
    let ns = s(pvc, "/metadata/namespace").to_string();
    let claim = s(pvc, "/metadata/name").to_string();
    let key = (
        s(pvc, "/metadata/uid").to_string(),
        note.reason,
        note.message.clone(),
    );
    let t = now();
    if let Some((ev_ns, ev_name, count)) = state.recorded.get(&key).cloned() {
        let patch = json!({"count": count + 1, "lastTimestamp": t});
        let req = ApiRequest::new(
            Verb::Patch(PatchType::Strategic),
            "v1",
            "events",
            state.user.clone(),
        )
        .ns(&ev_ns)
        .name(&ev_name)
        .body(&patch);
        if sim.call(req).await.is_ok() {
            state.recorded.insert(key, (ev_ns, ev_name, count + 1));
            return;
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let ev_name = format!("{claim}.{nanos:x}");
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": ev_name, "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
            "name": claim, "uid": s(pvc, "/metadata/uid"),
            "resourceVersion": s(pvc, "/metadata/resourceVersion")},
        "reason": note.reason, "message": note.message, "type": note.type_,
        "source": {"component": COMPONENT},
        "firstTimestamp": t, "lastTimestamp": t, "count": 1, "eventTime": null,
        "reportingComponent": COMPONENT, "reportingInstance": "",
    });
    let req = ApiRequest::new(Verb::Create, "v1", "events", state.user.clone())
        .ns(&ns)
        .body(&event);
    match sim.call(req).await {
        Ok(_) => {
            tracing::info!(namespace = %ns, name = %claim, reason = note.reason, "pv controller: event");
            state.recorded.insert(key, (ns, ev_name, 1));
        }
        Err(e) => {
            tracing::debug!(namespace = %ns, name = %claim, error = %e, "pv controller: failed to record event")
        }
    }
}

/// Binds a claim and a volume the way the PV controller does (bind(): volume first, then claim;
/// each step only when needed, so finishing a half-done binding repeats nothing).
async fn bind(sim: &Arc<Sim>, user: &UserInfo, pv: &Value, pvc: &Value) {
    let pv_name = s(pv, "/metadata/name");
    let (ns, name) = (s(pvc, "/metadata/namespace"), s(pvc, "/metadata/name"));
    let uid = s(pvc, "/metadata/uid");
    let mut volume = pv.clone();
    let full_ref = s(pv, "/spec/claimRef/namespace") == ns
        && s(pv, "/spec/claimRef/name") == name
        && s(pv, "/spec/claimRef/uid") == uid;
    let chosen_by_controller = !bound_to(pv, pvc);
    if !full_ref || (chosen_by_controller && ann(pv, ANN_BOUND_BY_CONTROLLER).is_none()) {
        volume["spec"]["claimRef"] = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": ns, "name": name, "uid": uid,
            "resourceVersion": s(pvc, "/metadata/resourceVersion")});
        if chosen_by_controller {
            set_annotation(&mut volume, ANN_BOUND_BY_CONTROLLER, "yes");
        }
        let req = update(user, "persistentvolumes", &volume, false);
        match write(sim, req, "volume bound to claim", ns, name).await {
            Some(v) => volume = v,
            None => return,
        }
    }
    if s(&volume, "/status/phase") != "Bound" {
        set_phase(&mut volume, "Bound");
        let req = update(user, "persistentvolumes", &volume, true);
        match write(sim, req, "volume phase Bound", "", pv_name).await {
            Some(v) => volume = v,
            None => return,
        }
    }
    let mut claim = pvc.clone();
    let mut dirty = false;
    if s(pvc, "/spec/volumeName") != pv_name {
        claim["spec"]["volumeName"] = json!(pv_name);
        if ann(pvc, ANN_BOUND_BY_CONTROLLER).is_none() {
            set_annotation(&mut claim, ANN_BOUND_BY_CONTROLLER, "yes");
        }
        dirty = true;
    }
    if ann(pvc, ANN_BIND_COMPLETED).is_none() {
        set_annotation(&mut claim, ANN_BIND_COMPLETED, "yes");
        dirty = true;
    }
    if dirty {
        let req = update(user, "persistentvolumeclaims", &claim, false);
        match write(sim, req, "claim bound to volume", ns, name).await {
            Some(c) => claim = c,
            None => return,
        }
    }
    let modes = volume.pointer("/spec/accessModes").cloned();
    let cap = volume.pointer("/spec/capacity").cloned();
    if s(&claim, "/status/phase") != "Bound"
        || claim.pointer("/status/accessModes") != modes.as_ref()
        || claim.pointer("/status/capacity") != cap.as_ref()
    {
        if !claim.get("status").is_some_and(Value::is_object) {
            claim["status"] = json!({});
        }
        claim["status"]["phase"] = json!("Bound");
        claim["status"]["accessModes"] = modes.unwrap_or(Value::Null);
        claim["status"]["capacity"] = cap.unwrap_or(Value::Null);
        let req = update(user, "persistentvolumeclaims", &claim, true);
        write(sim, req, "claim phase Bound", ns, name).await;
    }
}

/// The pvc-protection and pv-protection controllers: remove the finalizer of a deleted claim
/// no pod uses any more, and of a deleted volume that is not Bound.
async fn protection_pass(sim: &Arc<Sim>) {
    let deleting = |items: Vec<Value>, f: &str| -> Vec<Value> {
        items
            .into_iter()
            .filter(|o| o.pointer("/metadata/deletionTimestamp").is_some() && has_finalizer(o, f))
            .collect()
    };
    let claims = deleting(
        list(sim, "", "persistentvolumeclaims"),
        FINALIZER_PVC_PROTECTION,
    );
    let pods = if claims.is_empty() {
        Vec::new()
    } else {
        list(sim, "", "pods")
    };
    let pvc_user = UserInfo::service_account("kube-system", "pvc-protection-controller");
    for claim in claims.iter().filter(|c| !claim_in_use(c, &pods)) {
        remove_finalizer(
            sim,
            &pvc_user,
            "persistentvolumeclaims",
            claim,
            FINALIZER_PVC_PROTECTION,
        )
        .await;
    }
    let pv_user = UserInfo::service_account("kube-system", "pv-protection-controller");
    for pv in deleting(list(sim, "", "persistentvolumes"), FINALIZER_PV_PROTECTION)
        .iter()
        .filter(|v| s(v, "/status/phase") != "Bound")
    {
        remove_finalizer(
            sim,
            &pv_user,
            "persistentvolumes",
            pv,
            FINALIZER_PV_PROTECTION,
        )
        .await;
    }
}

async fn remove_finalizer(sim: &Arc<Sim>, user: &UserInfo, resource: &str, obj: &Value, f: &str) {
    let mut o = obj.clone();
    if let Some(a) = o
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        a.retain(|x| x != f);
    }
    let req = update(user, resource, &o, false);
    write(
        sim,
        req,
        &format!("{f} finalizer removed"),
        s(obj, "/metadata/namespace"),
        s(obj, "/metadata/name"),
    )
    .await;
}

#[cfg(test)]
mod tests;
