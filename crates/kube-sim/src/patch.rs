//! Patch application: JSON patch (RFC 6902), JSON merge patch (RFC 7386), and approximations of
//! strategic merge patch and server-side apply.
//!
//! Strategic merge is approximated by a merge patch in which lists of objects with a well-known
//! merge key (containers by `name`, conditions by `type`, ...) are merged item by item, the
//! `$patch: delete` / `$patch: replace` directives are honoured and other `$` directives dropped.
//! Server-side apply is approximated by a strategic merge of the applied configuration (no field
//! ownership, no conflicts, fields absent from the configuration are never removed).

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("failed to parse patch: {0}")]
    Parse(String),
    #[error("failed to apply JSON patch: {0}")]
    Apply(String),
}

/// Merge keys of strategic-merge lists, by field name. Good enough for the kinds served here.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "conditions" => "type",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "addresses" => "type",
        "taints" => "key",
        _ => return None,
    })
}

/// Lists of scalars that strategic merge treats as sets (merged, not replaced).
fn is_set_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

pub fn apply_patch(target: &Value, kind: PatchType, patch: &[u8]) -> Result<Value, PatchError> {
    let mut out = target.clone();
    match kind {
        PatchType::Json => {
            let p: json_patch::Patch =
                serde_json::from_slice(patch).map_err(|e| PatchError::Parse(e.to_string()))?;
            // As the API server's JSON patch library does, a `test` for null passes when the
            // path is absent (kube-runtime's finalizer helper relies on it).
            let ops = p.0.into_iter().filter(|op| match op {
                json_patch::PatchOperation::Test(t) => {
                    !(t.value.is_null() && out.pointer(t.path.as_str()).is_none())
                }
                _ => true,
            });
            let p = json_patch::Patch(ops.collect());
            json_patch::patch(&mut out, &p).map_err(|e| PatchError::Apply(e.to_string()))?;
        }
        PatchType::Merge => {
            let p: Value =
                serde_json::from_slice(patch).map_err(|e| PatchError::Parse(e.to_string()))?;
            json_patch::merge(&mut out, &p);
        }
        PatchType::Strategic => {
            let p: Value =
                serde_json::from_slice(patch).map_err(|e| PatchError::Parse(e.to_string()))?;
            strategic_merge(&mut out, &p);
        }
        PatchType::Apply => {
            let p = parse_apply(patch)?;
            strategic_merge(&mut out, &p);
        }
    }
    Ok(out)
}

/// Apply bodies are YAML (a superset of JSON).
pub fn parse_apply(patch: &[u8]) -> Result<Value, PatchError> {
    serde_json::from_slice(patch).or_else(|_| {
        serde_yaml::from_slice::<Value>(patch).map_err(|e| PatchError::Parse(e.to_string()))
    })
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(pm) = patch else {
        *target = strip_directives(patch);
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(tm) = target else { return };
    for (k, pv) in pm {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match (tm.get_mut(k), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => strategic_merge(tv, pv),
            (Some(Value::Array(ta)), Value::Array(pa)) => {
                if let Some(key) = merge_key(k) {
                    merge_keyed_list(ta, pa, key);
                } else if is_set_list(k) {
                    for item in pa {
                        if !ta.contains(item) {
                            ta.push(item.clone());
                        }
                    }
                } else {
                    *ta = pa.iter().map(strip_directives).collect();
                }
            }
            _ => {
                let mut fresh = Value::Null;
                if pv.is_object() {
                    strategic_merge(&mut fresh, pv);
                } else {
                    fresh = strip_directives(pv);
                }
                tm.insert(k.clone(), fresh);
            }
        }
    }
}

fn merge_keyed_list(target: &mut Vec<Value>, patch: &[Value], key: &str) {
    for item in patch {
        let Some(id) = item.get(key).cloned() else {
            target.push(strip_directives(item));
            continue;
        };
        let pos = target.iter().position(|t| t.get(key) == Some(&id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut target[i], item),
            (None, false) => target.push(strip_directives(item)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x"]},
               "spec": {"containers": [{"name": "app", "image": "v1"}, {"name": "side", "image": "s1"}]},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    #[test]
    fn merge_patch_sets_and_removes_keys_and_replaces_lists() {
        let out = apply_patch(
            &pod(),
            PatchType::Merge,
            br#"{"metadata":{"labels":{"a":null,"b":"2"}},"spec":{"containers":[{"name":"only"}]}}"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "only"}]));
    }

    #[test]
    fn json_patch_applies_operations_and_fails_on_bad_test() {
        let out = apply_patch(
            &pod(),
            PatchType::Json,
            br#"[{"op":"add","path":"/metadata/labels/b","value":"2"},{"op":"remove","path":"/metadata/finalizers/0"}]"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"]["b"], "2");
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        let err = apply_patch(
            &pod(),
            PatchType::Json,
            br#"[{"op":"test","path":"/metadata/name","value":"other"}]"#,
        );
        assert!(err.is_err());
    }

    #[test]
    fn json_patch_test_for_null_passes_on_an_absent_path_and_fails_on_a_present_one() {
        let patch = br#"[{"op":"test","path":"/metadata/annotations","value":null},
                         {"op":"add","path":"/metadata/annotations","value":{"a":"1"}}]"#;
        let mut target = pod();
        target["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("annotations");
        let out = apply_patch(&target, PatchType::Json, patch).unwrap();
        assert_eq!(out["metadata"]["annotations"], json!({"a": "1"}));
        target["metadata"]["annotations"] = json!({"x": "y"});
        assert!(apply_patch(&target, PatchType::Json, patch).is_err());
    }

    #[test]
    fn strategic_merge_merges_lists_by_key_and_honours_delete() {
        let out = apply_patch(
            &pod(),
            PatchType::Strategic,
            br#"{"spec":{"containers":[{"name":"app","image":"v2"},{"name":"side","$patch":"delete"},{"name":"new","image":"n"}]},
                 "status":{"conditions":[{"type":"DisruptionTarget","status":"True"}]},
                 "metadata":{"finalizers":["y"],"$setElementOrder/finalizers":["x","y"]}}"#,
        )
        .unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "app", "image": "v2"}, {"name": "new", "image": "n"}])
        );
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        assert!(out["metadata"].get("$setElementOrder/finalizers").is_none());
    }

    #[test]
    fn apply_accepts_yaml_and_keeps_unmentioned_fields() {
        let out = apply_patch(
            &pod(),
            PatchType::Apply,
            b"metadata:\n  labels:\n    b: '2'\n",
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        assert_eq!(out["spec"]["containers"][0]["image"], "v1");
    }
}
