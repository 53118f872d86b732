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
    /// The JSON patch library's own message (gopkg.in/evanphx/json-patch.v4, which the API
    /// server uses), e.g. `add operation does not apply: doc is missing path: "/a/b": missing value`.
    #[error("{0}")]
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
            let ops = decode_json_patch(patch)?;
            apply_json_patch(&mut out, &ops).map_err(PatchError::Apply)?;
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

/// Decodes a JSON patch document: an array of operation objects.
pub fn decode_json_patch(patch: &[u8]) -> Result<Vec<Value>, PatchError> {
    let v: Value = serde_json::from_slice(patch).map_err(|e| PatchError::Parse(e.to_string()))?;
    match v {
        Value::Array(ops) if ops.iter().all(Value::is_object) => Ok(ops),
        _ => Err(PatchError::Parse(
            "json: cannot unmarshal into Go value of type jsonpatch.Patch".into(),
        )),
    }
}

/// What json-patch.v4 wraps its errors around.
const ERR_MISSING: &str = "missing value";
const ERR_INVALID_INDEX: &str = "invalid index referenced";
const ERR_TEST_FAILED: &str = "test failed";

fn decode_key(k: &str) -> String {
    k.replace("~1", "/").replace("~0", "~")
}

/// A present, non-null child (the library treats JSON null as absent).
fn child<'a>(doc: &'a Value, key: &str) -> Result<Option<&'a Value>, String> {
    match doc {
        Value::Object(m) => Ok(m.get(key).filter(|v| !v.is_null())),
        Value::Array(a) => {
            let i = array_index(key, a.len())?;
            Ok(a.get(i))
        }
        _ => Ok(None),
    }
}

/// strconv.Atoi plus negative indices from the end, as the library accepts them.
fn array_index(key: &str, len: usize) -> Result<usize, String> {
    let idx: i64 = key
        .parse()
        .map_err(|_| format!("strconv.Atoi: parsing {key:?}: invalid syntax"))?;
    let len = len as i64;
    let resolved = if idx < 0 { idx + len } else { idx };
    if resolved < 0 || resolved >= len {
        return Err(format!(
            "Unable to access invalid index: {idx}: {ERR_INVALID_INDEX}"
        ));
    }
    Ok(resolved as usize)
}

/// `findObject`: the container holding the last path segment, by a pointer to it, and that
/// segment; `None` when a parent is missing or not a container.
fn find_parent(doc: &Value, path: &str) -> Option<(String, String)> {
    let split: Vec<&str> = path.split('/').collect();
    if split.len() < 2 {
        return None;
    }
    let mut cur = doc;
    let mut pointer = String::new();
    for part in &split[1..split.len() - 1] {
        let next = child(cur, &decode_key(part)).ok().flatten()?;
        if !(next.is_object() || next.is_array()) {
            return None;
        }
        pointer.push('/');
        pointer.push_str(part);
        cur = next;
    }
    Some((pointer, decode_key(split[split.len() - 1])))
}

fn container_mut<'a>(doc: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    if pointer.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(pointer)
    }
}

fn op_str<'a>(op: &'a Value, field: &str) -> Option<&'a str> {
    op.get(field).and_then(Value::as_str)
}

fn add_at(doc: &mut Value, path: &str, value: Value, what: &str) -> Result<(), String> {
    let Some((parent, key)) = find_parent(doc, path) else {
        return Err(format!(
            "{what} operation does not apply: doc is missing path: \"{path}\": {ERR_MISSING}"
        ));
    };
    match container_mut(doc, &parent) {
        Some(Value::Object(m)) => {
            m.insert(key, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if key == "-" {
                a.push(value);
                return Ok(());
            }
            let idx: i64 = key.parse().map_err(|_| {
                format!(
                    "error in add for path: '{path}': strconv.Atoi: parsing {key:?}: invalid syntax"
                )
            })?;
            let len = a.len() as i64;
            let resolved = if idx < 0 { idx + len } else { idx };
            if resolved < 0 || resolved > len {
                return Err(format!(
                    "error in add for path: '{path}': Unable to access invalid index: {idx}: {ERR_INVALID_INDEX}"
                ));
            }
            a.insert(resolved as usize, value);
            Ok(())
        }
        _ => Err(format!(
            "{what} operation does not apply: doc is missing path: \"{path}\": {ERR_MISSING}"
        )),
    }
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let Some((parent, key)) = find_parent(doc, path) else {
        return Err(format!(
            "remove operation does not apply: doc is missing path: \"{path}\": {ERR_MISSING}"
        ));
    };
    match container_mut(doc, &parent) {
        Some(Value::Object(m)) => m.remove(&key).ok_or_else(|| {
            format!(
                "error in remove for path: '{path}': Unable to remove nonexistent key: {key}: {ERR_MISSING}"
            )
        }),
        Some(Value::Array(a)) => {
            let len = a.len();
            let i = array_index(&key, len).map_err(|_| {
                format!(
                    "error in remove for path: '{path}': Unable to remove invalid index: {key}: {ERR_INVALID_INDEX}"
                )
            })?;
            Ok(a.remove(i))
        }
        _ => Err(format!(
            "remove operation does not apply: doc is missing path: \"{path}\": {ERR_MISSING}"
        )),
    }
}

fn get_at(doc: &Value, path: &str) -> Result<Option<Value>, String> {
    if path.is_empty() {
        return Ok(Some(doc.clone()));
    }
    let Some((parent, key)) = find_parent(doc, path) else {
        return Err(String::new());
    };
    let container = if parent.is_empty() {
        doc
    } else {
        doc.pointer(&parent).unwrap_or(&Value::Null)
    };
    child(container, &key).map(|v| v.cloned())
}

/// Applies JSON patch operations with the semantics and messages of json-patch.v4, the library
/// the API server applies client and webhook JSON patches with: `add` under a missing parent
/// fails; `test` for null passes on an absent path (kube-runtime's finalizer helper relies on
/// it); `replace` of an absent object key sets it.
pub fn apply_json_patch(doc: &mut Value, ops: &[Value]) -> Result<(), String> {
    for op in ops {
        let kind = op_str(op, "op").unwrap_or("unknown");
        let path = op_str(op, "path");
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match kind {
            "add" => {
                let path = path
                    .ok_or_else(|| format!("add operation failed to decode path: {ERR_MISSING}"))?;
                add_at(doc, path, value, "add")?;
            }
            "remove" => {
                let path = path.ok_or_else(|| {
                    format!("remove operation failed to decode path: {ERR_MISSING}")
                })?;
                remove_at(doc, path)?;
            }
            "replace" => {
                let path = path.ok_or_else(|| {
                    format!("replace operation failed to decode path: operation missing path field: {ERR_MISSING}")
                })?;
                if path.is_empty() {
                    if !(value.is_object() || value.is_array()) {
                        return Err("replace operation value must be object or array".into());
                    }
                    *doc = value;
                    continue;
                }
                let Some((parent, key)) = find_parent(doc, path) else {
                    return Err(format!(
                        "replace operation does not apply: doc is missing path: {path}: {ERR_MISSING}"
                    ));
                };
                match container_mut(doc, &parent) {
                    Some(Value::Object(m)) => {
                        m.insert(key, value);
                    }
                    Some(Value::Array(a)) => {
                        let i = array_index(&key, a.len()).map_err(|_| {
                            format!("replace operation does not apply: doc is missing key: {path}: {ERR_MISSING}")
                        })?;
                        a[i] = value;
                    }
                    _ => {
                        return Err(format!(
                            "replace operation does not apply: doc is missing path: {path}: {ERR_MISSING}"
                        ));
                    }
                }
            }
            "move" | "copy" => {
                let from = op_str(op, "from").ok_or_else(|| {
                    format!("{kind} operation failed to decode from: operation, missing from field: {ERR_MISSING}")
                })?;
                let path = path.ok_or_else(|| {
                    format!("{kind} operation failed to decode path: operation missing path field: {ERR_MISSING}")
                })?;
                if find_parent(doc, from).is_none() {
                    return Err(format!(
                        "{kind} operation does not apply: doc is missing from path: {from}: {ERR_MISSING}"
                    ));
                }
                let v = if kind == "move" {
                    remove_at(doc, from)
                        .map_err(|e| format!("error in move for path: '{from}': {e}"))?
                } else {
                    get_at(doc, from)
                        .ok()
                        .flatten()
                        .ok_or_else(|| format!("error in copy for from: '{from}': {ERR_MISSING}"))?
                };
                if find_parent(doc, path).is_none() {
                    return Err(format!(
                        "{kind} operation does not apply: doc is missing destination path: {path}: {ERR_MISSING}"
                    ));
                }
                add_at(doc, path, v, kind)?;
            }
            "test" => {
                let path = path.ok_or_else(|| {
                    format!("test operation failed to decode path: operation missing path field: {ERR_MISSING}")
                })?;
                let found = get_at(doc, path).map_err(|_| {
                    format!("test operation does not apply: is missing path: {path}: {ERR_MISSING}")
                })?;
                let ok = match found {
                    None => value.is_null(),
                    Some(v) => v == value,
                };
                if !ok {
                    return Err(format!("testing value {path} failed: {ERR_TEST_FAILED}"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
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
    fn json_patch_add_under_a_missing_parent_fails_with_the_libraries_message() {
        let mut target = pod();
        target["metadata"].as_object_mut().unwrap().remove("labels");
        let err = apply_patch(
            &target,
            PatchType::Json,
            br#"[{"op":"add","path":"/metadata/labels/mutated","value":"yes"}]"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"add operation does not apply: doc is missing path: "/metadata/labels/mutated": missing value"#
        );
    }

    #[test]
    fn json_patch_errors_read_like_the_api_servers() {
        let cases: &[(&[u8], &str)] = &[
            (
                br#"[{"op":"remove","path":"/metadata/annotations/x"}]"#,
                r#"remove operation does not apply: doc is missing path: "/metadata/annotations/x": missing value"#,
            ),
            (
                br#"[{"op":"remove","path":"/metadata/labels/x"}]"#,
                "error in remove for path: '/metadata/labels/x': Unable to remove nonexistent key: x: missing value",
            ),
            (
                br#"[{"op":"replace","path":"/spec/nothing/x","value":1}]"#,
                "replace operation does not apply: doc is missing path: /spec/nothing/x: missing value",
            ),
            (
                br#"[{"op":"add","path":"/spec/containers/5","value":{}}]"#,
                "error in add for path: '/spec/containers/5': Unable to access invalid index: 5: invalid index referenced",
            ),
            (
                br#"[{"op":"test","path":"/metadata/name","value":"q"}]"#,
                "testing value /metadata/name failed: test failed",
            ),
        ];
        for (patch, message) in cases {
            let err = apply_patch(&pod(), PatchType::Json, patch).unwrap_err();
            assert_eq!(err.to_string(), *message);
        }
    }

    #[test]
    fn json_patch_replace_of_an_absent_key_sets_it_and_arrays_take_dash_and_indices() {
        let out = apply_patch(
            &pod(),
            PatchType::Json,
            br#"[{"op":"replace","path":"/metadata/labels/new","value":"1"},
                 {"op":"add","path":"/spec/containers/-","value":{"name":"last"}},
                 {"op":"add","path":"/spec/containers/0","value":{"name":"first"}},
                 {"op":"move","from":"/metadata/labels/a","path":"/metadata/labels/moved"},
                 {"op":"copy","from":"/metadata/name","path":"/metadata/labels/copied"}]"#,
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"new": "1", "moved": "1", "copied": "p"})
        );
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["first", "app", "side", "last"]);
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
