//! The PV controller's writes: binding steps, phases, finalizers and the events it records.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::queue::ClaimKey;
use super::*;
use crate::apiserver::{ApiRequest, Sim, Verb, now};
use crate::auth::UserInfo;
use crate::patch::PatchType;

/// Events already recorded, by (claim uid, reason, message): the Event's namespace, name and
/// count, so a repeat is folded into it as the client-go event correlator does.
pub(super) type Recorded = HashMap<(String, &'static str, String), (String, String, u64)>;

pub(super) struct State {
    pub(super) user: UserInfo,
    /// Per claim uid: the resourceVersion last synced and when, for event pacing.
    pub(super) synced: HashMap<String, (String, Instant, ClaimKey)>,
    pub(super) recorded: Recorded,
}

pub(super) async fn write(
    sim: &Arc<Sim>,
    req: ApiRequest,
    what: &str,
    ns: &str,
    name: &str,
) -> Option<Value> {
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

pub(super) fn update(user: &UserInfo, resource: &str, obj: &Value, status: bool) -> ApiRequest {
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

pub(super) fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if !obj
        .pointer("/metadata/annotations")
        .is_some_and(Value::is_object)
    {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][key] = json!(value);
}

pub(super) fn set_phase(pv: &mut Value, phase: &str) {
    if !pv.get("status").is_some_and(Value::is_object) {
        pv["status"] = json!({});
    }
    pv["status"]["phase"] = json!(phase);
    pv["status"]["lastPhaseTransitionTime"] = json!(now());
}

/// Records an event on a claim, folding a repeat into the Event already written (count and
/// lastTimestamp), as client-go's event correlator does for the real controller.
pub(super) async fn record(sim: &Arc<Sim>, state: &mut State, pvc: &Value, note: &Note) {
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
pub(super) async fn bind(sim: &Arc<Sim>, user: &UserInfo, pv: &Value, pvc: &Value) {
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

pub(super) async fn remove_finalizer(
    sim: &Arc<Sim>,
    user: &UserInfo,
    resource: &str,
    obj: &Value,
    f: &str,
) {
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
