//! Helpers the verbs share: metadata access, body parsing, shape checks, status strategy,
//! error mapping and the scale subresource's conversions.

use super::*;

pub(super) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub(super) fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just set to an object"),
    }
}

pub(super) fn finalizers(obj: &Value) -> Vec<String> {
    strings_at(obj, "/metadata/finalizers")
}

/// The strings of the array at `pointer` (missing, or not an array: none).
pub(super) fn strings_at(obj: &Value, pointer: &str) -> Vec<String> {
    obj.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The object without metadata and status: what `metadata.generation` tracks.
pub(super) fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

pub(super) fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..NAME_SUFFIX_LEN)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

pub(super) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let v: Value = serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("failed to decode the request body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body is not an object"));
    }
    Ok(v)
}

/// metadata, spec and status are objects in every kind served: refuse anything else (422) so
/// no later step has to cope with them. A custom resource's spec and status are its schema's
/// business (a type error with the schema's message).
pub(super) fn check_shape(rt: &ResourceType, obj: &Value, custom: bool) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::invalid(
            rt,
            "",
            "the object must be a JSON object",
        ));
    }
    let fields: &[&str] = if custom {
        &["metadata"]
    } else {
        &["metadata", "spec", "status"]
    };
    for field in fields {
        if let Some(v) = obj.get(*field)
            && !(v.is_object() || v.is_null())
        {
            let name = meta_str(obj, "name").unwrap_or_default();
            return Err(ApiError::invalid(
                rt,
                name,
                format!("{field}: Invalid value: must be an object"),
            ));
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(v) = obj.get("metadata").and_then(|m| m.get(field))
            && !(v.is_object() || v.is_null())
        {
            let name = meta_str(obj, "name").unwrap_or_default();
            return Err(ApiError::invalid(
                rt,
                name,
                format!("metadata.{field}: Invalid value: must be a map of strings"),
            ));
        }
    }
    if rt.group == "admissionregistration.k8s.io" && rt.resource.ends_with("webhookconfigurations")
    {
        crate::admission::validate_configuration(obj)
            .map_err(|e| ApiError::invalid(rt, meta_str(obj, "name").unwrap_or_default(), e))?;
    }
    Ok(())
}

/// What a status update keeps of `new`, as the kind's status strategy (`PrepareForUpdate`):
/// built-in kinds reset `spec` only and keep the metadata written through `/status` (pods also
/// keep their ownerReferences and QoS class, VolumeAttachments their labels, annotations,
/// finalizers and ownerReferences); custom resources take nothing but `status`.
pub(super) fn status_update(rt: &ResourceType, old: &Value, mut new: Value) -> Value {
    let builtin = crate::resources::builtins()
        .iter()
        .any(|b| b.group == rt.group && b.resource == rt.resource);
    if !builtin || !new.is_object() || !new.get("metadata").is_some_and(Value::is_object) {
        let mut o = old.clone();
        match new.get("status") {
            Some(s) => o["status"] = s.clone(),
            None => {
                if let Some(m) = o.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return o;
    }
    match old.get("spec") {
        Some(spec) => new["spec"] = spec.clone(),
        None => {
            if let Some(m) = new.as_object_mut() {
                m.remove("spec");
            }
        }
    }
    // The QoS class is immutable; old kubelets dropped it, so the server backfills it.
    if rt.group.is_empty()
        && rt.resource == "pods"
        && new.pointer("/status/qosClass").is_none()
        && let Some(qos) = old.pointer("/status/qosClass").cloned()
        && new.get("status").is_some_and(Value::is_object)
    {
        new["status"]["qosClass"] = qos;
    }
    let reset: &[&str] = match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "pods") => &["ownerReferences"],
        ("storage.k8s.io", "volumeattachments") => {
            &["labels", "annotations", "finalizers", "ownerReferences"]
        }
        _ => &[],
    };
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let m = meta_mut(&mut new);
    for field in reset {
        match old_meta.get(*field) {
            Some(v) => {
                m.insert((*field).into(), v.clone());
            }
            None => {
                m.remove(*field);
            }
        }
    }
    new
}

/// Go's `omitempty`: the API server never stores (nor shows webhooks) empty metadata maps and
/// lists, so a JSON patch adding under `/metadata/labels` of an object created with
/// `labels: {}` fails there as it does here.
pub(super) fn omit_empty_meta(obj: &mut Value) {
    let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    for field in [
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "managedFields",
        "generateName",
    ] {
        let empty = match m.get(field) {
            Some(Value::Null) => true,
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if empty {
            m.remove(field);
        }
    }
}

/// Normalizes and validates the metadata of an object about to be stored (422 Invalid).
pub(super) fn validate_meta(
    rt: &ResourceType,
    obj: &mut Value,
    creating: bool,
) -> Result<(), ApiError> {
    omit_empty_meta(obj);
    let errs = crate::validation::validate_meta(rt, obj, creating);
    if errs.is_empty() {
        return Ok(());
    }
    let name = meta_str(obj, "name").unwrap_or_default().to_string();
    tracing::debug!(resource = %rt.qualified(), name = %name, errors = errs.len(), "refused: invalid metadata");
    Err(ApiError::invalid_fields(rt, &name, &errs))
}

/// `fieldValidation=Strict` refuses what the schema would prune (400, as the API server).
pub(super) fn strict_fields(
    rt: &ResourceType,
    req: &ApiRequest,
    pruned: &[String],
) -> Result<(), ApiError> {
    if pruned.is_empty() || req.query.get("fieldValidation") != Some("Strict") {
        return Ok(());
    }
    let unknown: Vec<String> = pruned
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    Err(ApiError::bad_request(format!(
        "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
        unknown.join(", "),
        kind = rt.kind,
        v = rt.version
    )))
}

pub(super) fn store_err(e: StoreError, rt: &ResourceType, name: &str) -> ApiError {
    match e {
        StoreError::AlreadyExists => ApiError::already_exists(rt, name),
        StoreError::NotFound => ApiError::not_found(rt, name),
        StoreError::Conflict { .. } => ApiError::conflict(rt, name),
        StoreError::Gone { requested, oldest } => {
            ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
        }
    }
}

/// A client patch that cannot be decoded is a 400; one that does not apply a 422 with the
/// generic message and empty details (`NewGenericServerResponse`), as the API server answers.
pub(super) fn patch_error(e: patch::PatchError) -> ApiError {
    match e {
        patch::PatchError::Parse(m) => ApiError::bad_request(m),
        patch::PatchError::Apply(m) => {
            tracing::debug!(error = %m, "client patch does not apply");
            let mut err = ApiError::new(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
            );
            err.details = Some(json!({}));
            err
        }
    }
}

pub(super) fn write_options(kind: &str, req: &ApiRequest) -> Value {
    let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if let Some(fm) = req.query.get("fieldManager") {
        o["fieldManager"] = json!(fm);
    }
    if let Some(fv) = req.query.get("fieldValidation") {
        o["fieldValidation"] = json!(fv);
    }
    if req.query.get("dryRun") == Some("All") {
        o["dryRun"] = json!(["All"]);
    }
    if req.query.flag("force") {
        o["force"] = json!(true);
    }
    o
}

/// autoscaling/v1 Scale of an object with a scale subresource.
pub(super) fn to_scale(rt: &ResourceType, obj: &Value) -> Value {
    let (spec_path, status_path, selector_path) = match &rt.scale_paths {
        Some(p) => (
            p.spec_replicas.clone(),
            p.status_replicas.clone(),
            p.label_selector.clone(),
        ),
        None => ("spec.replicas".into(), "status.replicas".into(), None),
    };
    let at = |path: &str| {
        path.split('.')
            .try_fold(obj, |cur, seg| cur.get(seg))
            .cloned()
    };
    let mut status = json!({"replicas": at(&status_path).unwrap_or(json!(0))});
    if let Some(sel) = selector_path.and_then(|p| at(&p)) {
        status["selector"] = sel;
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj.pointer("/metadata/name"),
            "namespace": obj.pointer("/metadata/namespace"),
            "uid": obj.pointer("/metadata/uid"),
            "resourceVersion": obj.pointer("/metadata/resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": at(&spec_path).unwrap_or(json!(0))},
        "status": status,
    })
}

/// The object with its replica count set from a Scale.
pub(super) fn from_scale(rt: &ResourceType, obj: &Value, replicas: Value) -> Value {
    let spec_path = rt
        .scale_paths
        .as_ref()
        .map(|p| p.spec_replicas.clone())
        .unwrap_or_else(|| "spec.replicas".into());
    let mut out = obj.clone();
    let segs: Vec<&str> = spec_path.split('.').collect();
    let mut cur = &mut out;
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i + 1 == segs.len() {
            cur[*seg] = replicas.clone();
            break;
        }
        if cur.get(*seg).is_none() {
            cur[*seg] = json!({});
        }
        cur = &mut cur[*seg];
    }
    present(rt, out)
}
