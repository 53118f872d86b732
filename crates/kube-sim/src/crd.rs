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

use crate::apiserver::{Sim, present};
use crate::errors::ApiError;
use crate::resources::ResourceType;
use crate::schema::{self, ScaleSpec};

/// The API server's client timeout for conversion webhooks (it has no per-CRD setting).
const CONVERSION_TIMEOUT: Duration = Duration::from_secs(30);

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

fn api_version_of(obj: &Value) -> &str {
    obj.get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `url` with the `timeout` query the API server adds to webhook calls.
pub fn with_timeout_query(url: &str, timeout: Duration) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}timeout={}s", timeout.as_secs())
}

async fn post_review(sim: &Sim, url: &str, ca_bundle: &str, body: &Value) -> Result<Value, String> {
    let client = sim.webhooks.client(ca_bundle)?;
    let resp = client
        .post(url)
        .timeout(CONVERSION_TIMEOUT)
        .json(body)
        .send()
        .await
        .map_err(|e| {
            let mut msg = format!("Post \"{url}\": {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("Post \"{url}\": {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "an error on the server ({:?}) has prevented the request from succeeding",
            String::from_utf8_lossy(&bytes)
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("failed to decode the response: {e}"))
}

fn conversion_error(message: String) -> ApiError {
    // The API server returns conversion failures unwrapped: code 500 with no reason.
    ApiError::new(500, "", message)
}

/// Converts every object not yet in `desired` (an apiVersion), in one ConversionReview.
pub async fn convert(
    sim: &Sim,
    info: &CrdInfo,
    mut objects: Vec<Value>,
    desired: &str,
) -> Result<Vec<Value>, ApiError> {
    let todo: Vec<usize> = (0..objects.len())
        .filter(|&i| api_version_of(&objects[i]) != desired)
        .collect();
    let Some(&first) = todo.first() else {
        return Ok(objects);
    };
    let (url, service, ca_bundle) = match &info.conversion {
        Conversion::None => {
            for i in todo {
                objects[i]["apiVersion"] = json!(desired);
            }
            return Ok(objects);
        }
        Conversion::Webhook {
            url,
            service,
            ca_bundle,
        } => (url, service, ca_bundle),
    };
    let from = gvk(api_version_of(&objects[first]), &info.kind);
    let failed = |e: String| conversion_error(format!("conversion webhook for {from} failed: {e}"));
    let url = match (url, service) {
        (Some(u), _) => with_timeout_query(u, CONVERSION_TIMEOUT),
        (None, Some(svc)) => {
            let s = |k: &str| svc.get(k).and_then(Value::as_str).unwrap_or_default();
            let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443);
            let target = with_timeout_query(
                &format!(
                    "https://{}.{}.svc:{port}{}",
                    s("name"),
                    s("namespace"),
                    s("path")
                ),
                CONVERSION_TIMEOUT,
            );
            return Err(failed(format!(
                "Post \"{target}\": services cannot be resolved by kube-sim: use clientConfig.url"
            )));
        }
        (None, None) => return Err(failed("no clientConfig url or service".into())),
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let sent: Vec<Value> = todo.iter().map(|&i| objects[i].clone()).collect();
    let body = review_request(&uid, desired, &sent);
    let review = match post_review(sim, &url, ca_bundle, &body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(crd = %format!("{}.{}", info.kind, info.group), error = %e, "conversion webhook call failed");
            return Err(failed(e));
        }
    };
    let converted = converted_objects(&uid, &review).map_err(failed)?;
    if converted.len() != todo.len() {
        return Err(conversion_error(format!(
            "conversion webhook for {from} returned {} objects, expected {}",
            converted.len(),
            todo.len()
        )));
    }
    for (idx, (&i, conv)) in todo.iter().zip(converted).enumerate() {
        let invalid = |e: String| {
            conversion_error(format!(
                "conversion webhook for {from} returned invalid object at index {idx}: {e}"
            ))
        };
        let got = api_version_of(&conv).to_string();
        if got != desired {
            return Err(invalid(format!(
                "invalid groupVersion (expected {desired}, received {got})"
            )));
        }
        let kind = conv.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind != info.kind {
            return Err(invalid(format!(
                "invalid kind (expected {}, received {kind})",
                info.kind
            )));
        }
        objects[i] = accept_converted(&objects[i], conv).map_err(|e| {
            conversion_error(format!(
                "conversion webhook for {from} returned invalid object: {e}"
            ))
        })?;
    }
    Ok(objects)
}

impl Sim {
    /// Objects as `rt`'s version serves them: custom resources defaulted with the schema of the
    /// version they are stored in, converted, then pruned and defaulted with `rt`'s schema.
    pub async fn served_all(
        &self,
        rt: &ResourceType,
        mut objects: Vec<Value>,
    ) -> Result<Vec<Value>, ApiError> {
        if let Some(info) = self.crd_info(rt) {
            for o in &mut objects {
                let stored = api_version_of(o)
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                info.decode(&stored, o);
            }
            objects = convert(self, &info, objects, &rt.api_version()).await?;
            for o in &mut objects {
                info.decode(&rt.version, o);
            }
        }
        Ok(objects.into_iter().map(|o| present(rt, o)).collect())
    }

    /// One object as `rt`'s version serves it (see [`Sim::served_all`]).
    pub async fn served(&self, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
        let mut out = self.served_all(rt, vec![obj]).await?;
        out.pop()
            .ok_or_else(|| ApiError::internal("conversion returned no object"))
    }

    /// A custom resource converted to its storage version and defaulted there, ready to store.
    pub async fn for_storage(&self, info: &CrdInfo, obj: Value) -> Result<Value, ApiError> {
        let mut out = convert(self, info, vec![obj], &info.storage_api_version())
            .await?
            .pop()
            .ok_or_else(|| ApiError::internal("conversion returned no object"))?;
        info.decode(&info.storage_version, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
