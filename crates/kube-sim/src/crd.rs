//! Custom resources the way apiextensions-apiserver serves them: each version's structural
//! schema and scale paths, one storage version, and conversion between versions (`None`: only
//! `apiVersion` changes; `Webhook`: a `ConversionReview` v1 to `clientConfig.url`).
//!
//! Objects are stored in the storage version and served in the requested one: on read, list and
//! watch the stored object is defaulted with the storage version's schema, converted, then pruned
//! and defaulted with the requested version's; on write the request is pruned, defaulted and
//! validated in its own version and converted to the storage version. A conversion failure is the
//! API server's 500 `conversion webhook for <group/version, Kind=...> failed: ...`.
//! `clientConfig.service` cannot be reached from loopback: such calls fail like an unreachable
//! webhook.

use std::cmp::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::schema::{self, ScaleSpec};

/// One version of a CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionInfo {
    pub name: String,
    pub served: bool,
    pub schema: Option<Value>,
    pub scale: Option<ScaleSpec>,
}

/// `spec.conversion`.
#[derive(Debug, Clone, PartialEq)]
pub enum Conversion {
    None,
    Webhook {
        url: Option<String>,
        service: Option<Value>,
        ca_bundle: String,
    },
}

/// What serving one custom resource needs from its CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct CrdInfo {
    pub group: String,
    pub kind: String,
    pub storage_version: String,
    pub versions: Vec<VersionInfo>,
    pub conversion: Conversion,
}

impl CrdInfo {
    /// From a CustomResourceDefinition object (`None` when malformed).
    pub fn from_crd(crd: &Value) -> Option<Self> {
        let spec = crd.get("spec")?;
        let group = spec.get("group")?.as_str()?.to_string();
        let kind = spec.pointer("/names/kind")?.as_str()?.to_string();
        let mut versions = Vec::new();
        let mut storage_version = None;
        for v in spec.get("versions")?.as_array()? {
            let name = v.get("name")?.as_str()?.to_string();
            if v.get("storage").and_then(Value::as_bool) == Some(true) {
                storage_version = Some(name.clone());
            }
            let scale = v.pointer("/subresources/scale").map(|s| {
                let path = |k: &str, default: &str| {
                    s.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or(default)
                        .to_string()
                };
                ScaleSpec {
                    spec_replicas_path: path("specReplicasPath", ".spec.replicas"),
                    status_replicas_path: path("statusReplicasPath", ".status.replicas"),
                    label_selector_path: s
                        .get("labelSelectorPath")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                }
            });
            versions.push(VersionInfo {
                served: v.get("served").and_then(Value::as_bool) != Some(false),
                schema: v.pointer("/schema/openAPIV3Schema").cloned(),
                scale,
                name,
            });
        }
        let storage_version =
            storage_version.or_else(|| versions.first().map(|v| v.name.clone()))?;
        let conversion = match spec.pointer("/conversion/strategy").and_then(Value::as_str) {
            Some("Webhook") => {
                let cc = spec
                    .pointer("/conversion/webhook/clientConfig")
                    .cloned()
                    .unwrap_or_default();
                Conversion::Webhook {
                    url: cc.get("url").and_then(Value::as_str).map(str::to_string),
                    service: cc.get("service").cloned(),
                    ca_bundle: cc
                        .get("caBundle")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                }
            }
            _ => Conversion::None,
        };
        Some(Self {
            group,
            kind,
            storage_version,
            versions,
            conversion,
        })
    }

    fn version(&self, name: &str) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.name == name)
    }

    pub fn api_version(&self, version: &str) -> String {
        format!("{}/{version}", self.group)
    }

    pub fn storage_api_version(&self) -> String {
        self.api_version(&self.storage_version)
    }

    /// Prunes and defaults `obj` with `version`'s schema; returns the pruned paths.
    pub fn decode(&self, version: &str, obj: &mut Value) -> Vec<String> {
        let Some(s) = self.version(version).and_then(|v| v.schema.as_ref()) else {
            return Vec::new();
        };
        let pruned = schema::prune(obj, s);
        schema::apply_defaults(obj, s);
        pruned
    }

    /// The paths `version`'s schema would prune from `obj` (which is left as it is).
    pub fn unknown_fields(&self, version: &str, obj: &Value) -> Vec<String> {
        match self.version(version).and_then(|v| v.schema.as_ref()) {
            Some(s) => schema::prune(&mut obj.clone(), s),
            None => Vec::new(),
        }
    }

    /// Schema and scale validation of a write through `subresource` (None, status or scale).
    pub fn validate(
        &self,
        version: &str,
        obj: &Value,
        subresource: Option<&str>,
    ) -> Result<(), ApiError> {
        let Some(v) = self.version(version) else {
            return Ok(());
        };
        let mut errs = v
            .schema
            .as_ref()
            .map(|s| schema::validate(obj, s))
            .unwrap_or_default();
        if let Some(scale) = &v.scale {
            errs.extend(schema::validate_scale(
                obj,
                scale,
                subresource != Some("status"),
            ));
        }
        if errs.is_empty() {
            return Ok(());
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Err(schema::invalid(&self.kind, &self.group, name, &errs))
    }
}

/// Kubernetes' version priority (`v2` > `v1` > `v1beta2` > `v1beta1` > `v1alpha1` > others,
/// alphabetically): the order discovery lists a group's versions in, first preferred.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let (stage, minor) = if tail.is_empty() {
            return Some((3, major, 0));
        } else if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return None;
        };
        Some((stage, major, minor.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `group/version, Kind=Kind`, as Go prints a GroupVersionKind.
pub fn gvk(api_version: &str, kind: &str) -> String {
    format!("{api_version}, Kind={kind}")
}

/// The ConversionReview the API server sends (pure).
pub fn review_request(uid: &str, desired: &str, objects: &[Value]) -> Value {
    json!({
        "kind": "ConversionReview",
        "apiVersion": "apiextensions.k8s.io/v1",
        "request": {"uid": uid, "desiredAPIVersion": desired, "objects": objects},
        "response": {"uid": "", "convertedObjects": null, "result": {"metadata": {}}},
    })
}

/// `getConvertedObjectsFromResponse`: the converted objects of a webhook's answer (pure).
pub fn converted_objects(uid: &str, review: &Value) -> Result<Vec<Value>, String> {
    let api_version = review
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = review
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api_version != "apiextensions.k8s.io/v1" || kind != "ConversionReview" {
        return Err(format!(
            "expected webhook response of apiextensions.k8s.io/v1, Kind=ConversionReview, got {}",
            gvk(api_version, kind)
        ));
    }
    let Some(response) = review.get("response").filter(|r| r.is_object()) else {
        return Err("no response provided".into());
    };
    let got = response
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let result = response.get("result").cloned().unwrap_or_default();
    let status = result
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if status != "Success" {
        return match result.get("message").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => Err(m.to_string()),
            _ => Err(format!(
                "response.result.status was '{status}', not 'Success'"
            )),
        };
    }
    Ok(response
        .get("convertedObjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `validateConvertedObject` then `restoreObjectMeta`: the converted object keeps the original's
/// metadata except labels and annotations (pure).
pub fn accept_converted(original: &Value, mut converted: Value) -> Result<Value, String> {
    for field in ["name", "namespace", "uid"] {
        let (e, a) = (meta_str(original, field), meta_str(&converted, field));
        if e != a {
            let label = if field == "uid" { "UID" } else { field };
            return Err(format!("must have the same {label}: {e} != {a}"));
        }
    }
    let Some(response_meta) = converted
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
    else {
        return Err("missing metadata in converted object".into());
    };
    let mut meta = original.get("metadata").cloned().unwrap_or(json!({}));
    for field in ["labels", "annotations"] {
        match response_meta.get(field) {
            None | Some(Value::Null) => {
                if let Some(m) = meta.as_object_mut() {
                    m.remove(field);
                }
            }
            Some(Value::Object(map)) => {
                if let Some((k, v)) = map.iter().find(|(_, v)| !v.is_string()) {
                    return Err(format!(
                        "metadata.{field}[{k}] must be a string, but is {v} in converted object"
                    ));
                }
                meta[field] = Value::Object(map.clone());
            }
            Some(other) => {
                return Err(format!(
                    "invalid metadata.{field} of type {other} in converted object"
                ));
            }
        }
    }
    converted["metadata"] = meta;
    Ok(converted)
}

/// An object's `apiVersion`.
pub fn api_version_of(obj: &Value) -> &str {
    obj.get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `url` with the `timeout` query the API server adds to webhook calls.
pub fn with_timeout_query(url: &str, timeout: Duration) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}timeout={}s", timeout.as_secs())
}

#[cfg(test)]
mod tests;
