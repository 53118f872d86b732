//! What the API server adds to new objects before admission (defaulting and the built-in
//! admission plugins the suite relies on), and small status helpers shared by the controllers.

use serde_json::{Value, json};

use crate::resources::ResourceType;
use crate::settings::Settings;
use crate::store::{StorageKey, Store};

/// Taints the node lifecycle controller sets on nodes that stop reporting.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Finalizers of the StorageObjectInUseProtection admission plugin, removed by the pvc- and
/// pv-protection controllers.
pub const FINALIZER_PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const FINALIZER_PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The API server's timestamps: RFC 3339 in UTC, to the second.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn is(rt: &ResourceType, group: &str, resource: &str) -> bool {
    rt.group == group && rt.resource == resource
}

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string()).or_insert(v);
    }
}

/// Whether a pod's tolerations already cover NoExecute taints with `key`.
pub fn toleration_seconds(pod: &Value, key: &str) -> Option<Option<u64>> {
    let tols = pod.pointer("/spec/tolerations").and_then(Value::as_array)?;
    tols.iter()
        .find(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or_default();
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
            let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
            (k == key || (k.is_empty() && op == "Exists"))
                && (effect.is_empty() || effect == "NoExecute")
        })
        .map(|t| t.get("tolerationSeconds").and_then(Value::as_u64))
}

fn default_pod(pod: &mut Value, settings: &Settings) {
    if !pod.get("spec").is_some_and(Value::is_object) {
        pod["spec"] = json!({});
    }
    let spec = &mut pod["spec"];
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "serviceAccountName", json!("default"));
    set_default(spec, "serviceAccount", json!("default"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "priority", json!(0));
    let mut has_resources = false;
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers {
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            let pull = if image.ends_with(":latest") || !image.contains(':') {
                "Always"
            } else {
                "IfNotPresent"
            };
            set_default(c, "imagePullPolicy", json!(pull));
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
            if c.get("resources")
                .and_then(Value::as_object)
                .is_some_and(|r| !r.is_empty())
            {
                has_resources = true;
            }
        }
    }
    // DefaultTolerationSeconds admission plugin, with the simulator's (short) default.
    let mut tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let probe = json!({"spec": {"tolerations": tolerations.clone()}});
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        if toleration_seconds(&probe, key).is_none() {
            tolerations.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                    "tolerationSeconds": settings.default_toleration_seconds}),
            );
        }
    }
    spec["tolerations"] = json!(tolerations);
    let qos = if has_resources {
        "Burstable"
    } else {
        "BestEffort"
    };
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
}

/// Defaulting and mutating built-in admission for a create, before webhooks see the object.
pub fn prepare_create(rt: &ResourceType, obj: &mut Value, settings: &Settings, store: &Store) {
    if is(rt, "", "pods") {
        default_pod(obj, settings);
    } else if is(rt, "", "persistentvolumeclaims") {
        obj["status"] = json!({});
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        set_default(&mut obj["spec"], "volumeMode", json!("Filesystem"));
        // StorageObjectInUseProtection admission plugin: enabled with the PV controller, whose
        // protection part removes the finalizer again.
        if settings.pv_binder {
            add_protection_finalizer("persistentvolumeclaims", obj);
        }
        // DefaultStorageClass admission plugin.
        if obj.pointer("/spec/storageClassName").is_none() {
            let (classes, _) =
                store.list(&StorageKey::new("storage.k8s.io", "storageclasses"), None);
            if let Some(default) = classes.iter().find(|c| {
                c.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                    .and_then(Value::as_str)
                    == Some("true")
            }) {
                obj["spec"]["storageClassName"] = default["metadata"]["name"].clone();
            }
        }
    } else if is(rt, "", "persistentvolumes") {
        obj["status"] = json!({});
        if !obj.get("spec").is_some_and(Value::is_object) {
            obj["spec"] = json!({});
        }
        set_default(
            &mut obj["spec"],
            "persistentVolumeReclaimPolicy",
            json!("Retain"),
        );
        set_default(&mut obj["spec"], "volumeMode", json!("Filesystem"));
        if settings.pv_binder {
            add_protection_finalizer("persistentvolumes", obj);
        }
    } else if is(rt, "", "namespaces") {
        let name = obj["metadata"]["name"].clone();
        if !obj
            .pointer("/metadata/labels")
            .is_some_and(Value::is_object)
        {
            obj["metadata"]["labels"] = json!({});
        }
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
    } else if is(rt, "apiextensions.k8s.io", "customresourcedefinitions") {
        let names = obj.pointer("/spec/names").cloned().unwrap_or_default();
        let stored: Vec<Value> = obj
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        let t = now();
        obj["status"] = json!({
            "acceptedNames": names,
            "storedVersions": stored,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": t},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": t},
            ],
        });
    } else if rt.has_subresource("status")
        && !is(rt, "", "nodes")
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
}

/// What the API server sets after admission on a create (status defaults webhooks do not see).
pub fn after_admission_create(rt: &ResourceType, obj: &mut Value) {
    if (is(rt, "", "persistentvolumeclaims") || is(rt, "", "persistentvolumes"))
        && obj.pointer("/status/phase").is_none()
    {
        obj["status"]["phase"] = json!("Pending");
    }
}

/// Sets a status condition, keeping lastTransitionTime when the status does not change.
pub fn set_condition(
    obj: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    if !obj["status"].get("conditions").is_some_and(Value::is_array) {
        obj["status"]["conditions"] = json!([]);
    }
    let t = now();
    let Some(conds) = obj["status"]["conditions"].as_array_mut() else {
        return;
    };
    let mut cond =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": t});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    match conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(existing) => {
            if existing.get("status").and_then(Value::as_str) == Some(status) {
                cond["lastTransitionTime"] = existing
                    .get("lastTransitionTime")
                    .cloned()
                    .unwrap_or(json!(t));
            }
            if let Some(p) = existing.get("lastHeartbeatTime") {
                cond["lastHeartbeatTime"] = p.clone();
            }
            *existing = cond;
        }
        None => conds.push(cond),
    }
}

/// A condition's status ("True"/"False"/"Unknown"), if present.
pub fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))?
        .get("status")?
        .as_str()
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == f))
}

/// Adds the protection finalizer to a new claim or volume (StorageObjectInUseProtection).
pub fn add_protection_finalizer(resource: &str, obj: &mut Value) {
    let f = match resource {
        "persistentvolumeclaims" => FINALIZER_PVC_PROTECTION,
        "persistentvolumes" => FINALIZER_PV_PROTECTION,
        _ => return,
    };
    if has_finalizer(obj, f) {
        return;
    }
    if !obj
        .pointer("/metadata/finalizers")
        .is_some_and(Value::is_array)
    {
        obj["metadata"]["finalizers"] = json!([]);
    }
    if let Some(a) = obj["metadata"]["finalizers"].as_array_mut() {
        a.push(json!(f));
    }
}
