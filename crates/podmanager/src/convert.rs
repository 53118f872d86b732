//! Pure v1 ⇄ v2 conversion of PodManagers, with v1 as the hub (kubebuilder's Hub/Spoke).
//!
//! v1 holds `replicas` and `image`; v2 holds `replicas` and a pod template whose first container
//! runs v1's `image`. What v1 cannot express — the template without that image — is kept in the
//! annotation [`TEMPLATE_ANNOTATION`] on v1 and restored when the object is read as v2, so both
//! directions are lossless. A template that only names the image leaves no annotation. Metadata
//! and status pass through unchanged (apart from that annotation).

use serde_json::{Value, json};

use crate::crd::CONTAINER_NAME;
use crate::crd::{PodManagerSpec as V1Spec, v2};

/// The group version of the hub (v1) and the spoke (v2).
pub const V1: &str = "apps.mycompany.com/v1";
pub const V2: &str = "apps.mycompany.com/v2";

/// Annotation on v1 objects keeping the v2 template (without the first container's image).
pub const TEMPLATE_ANNOTATION: &str = "podmanager.ballast.dev/v2-template";

/// Why an object cannot be converted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error("cannot convert {from} to {to}: unsupported versions")]
    Versions { from: String, to: String },
    #[error("failed to read the {version} spec of {name}: {message}")]
    Spec {
        version: &'static str,
        name: String,
        message: String,
    },
    #[error("failed to read annotation {TEMPLATE_ANNOTATION} of {name}: {message}")]
    Annotation { name: String, message: String },
    #[error("{name} has no containers in spec.template.spec.containers")]
    NoContainers { name: String },
}

fn name_of(obj: &Value) -> String {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("{ns}/{name}")
}

/// The template v1's fields alone describe: one container named `app`.
pub fn default_template(image: &str) -> v2::PodTemplate {
    v2::PodTemplate {
        metadata: None,
        spec: v2::TemplateSpec {
            containers: vec![v2::TemplateContainer {
                name: CONTAINER_NAME.into(),
                image: image.into(),
                ..v2::TemplateContainer::default()
            }],
            ..v2::TemplateSpec::default()
        },
    }
}

/// The v2 template of a v1 object: the kept annotation (or the default) running `spec.image`.
pub fn template_of_v1(
    spec: &V1Spec,
    annotations: Option<&Value>,
    name: &str,
) -> Result<v2::PodTemplate, ConvertError> {
    let kept = annotations
        .and_then(|a| a.get(TEMPLATE_ANNOTATION))
        .and_then(Value::as_str);
    let mut template = match kept {
        Some(text) => {
            serde_json::from_str::<v2::PodTemplate>(text).map_err(|e| ConvertError::Annotation {
                name: name.into(),
                message: e.to_string(),
            })?
        }
        None => default_template(""),
    };
    match template.spec.containers.first_mut() {
        Some(first) => first.image = spec.image.clone(),
        None => template.spec.containers = default_template(&spec.image).spec.containers,
    }
    Ok(template)
}

/// Converts a PodManager object to `desired` (`apps.mycompany.com/v1` or `/v2`).
pub fn convert(obj: &Value, desired: &str) -> Result<Value, ConvertError> {
    let from = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (from, desired) {
        (f, d) if f == d => Ok(obj.clone()),
        (V1, V2) => v1_to_v2(obj),
        (V2, V1) => v2_to_v1(obj),
        (f, d) => Err(ConvertError::Versions {
            from: f.into(),
            to: d.into(),
        }),
    }
}

fn annotations_mut(obj: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    obj.get_mut("metadata")?
        .get_mut("annotations")?
        .as_object_mut()
}

fn drop_empty_annotations(obj: &mut Value) {
    if annotations_mut(obj).is_some_and(|a| a.is_empty())
        && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.remove("annotations");
    }
}

fn v1_to_v2(obj: &Value) -> Result<Value, ConvertError> {
    let name = name_of(obj);
    let spec: V1Spec = serde_json::from_value(obj.get("spec").cloned().unwrap_or(json!({})))
        .map_err(|e| ConvertError::Spec {
            version: "v1",
            name: name.clone(),
            message: e.to_string(),
        })?;
    let template = template_of_v1(&spec, obj.pointer("/metadata/annotations"), &name)?;
    let mut out = obj.clone();
    out["apiVersion"] = json!(V2);
    out["spec"] = json!({"replicas": spec.replicas, "template": template});
    if let Some(a) = annotations_mut(&mut out) {
        a.remove(TEMPLATE_ANNOTATION);
    }
    drop_empty_annotations(&mut out);
    Ok(out)
}

fn v2_to_v1(obj: &Value) -> Result<Value, ConvertError> {
    let name = name_of(obj);
    let spec: v2::PodManagerSpec =
        serde_json::from_value(obj.get("spec").cloned().unwrap_or(json!({}))).map_err(|e| {
            ConvertError::Spec {
                version: "v2",
                name: name.clone(),
                message: e.to_string(),
            }
        })?;
    let mut kept = spec.template.clone();
    let Some(first) = kept.spec.containers.first_mut() else {
        return Err(ConvertError::NoContainers { name });
    };
    let image = std::mem::take(&mut first.image);
    let mut out = obj.clone();
    out["apiVersion"] = json!(V1);
    out["spec"] = json!({"replicas": spec.replicas, "image": image});
    if kept == default_template("") {
        if let Some(a) = annotations_mut(&mut out) {
            a.remove(TEMPLATE_ANNOTATION);
        }
        drop_empty_annotations(&mut out);
    } else {
        let text = serde_json::to_string(&kept).unwrap_or_default();
        if !out.get("metadata").is_some_and(Value::is_object) {
            out["metadata"] = json!({});
        }
        if !out["metadata"]
            .get("annotations")
            .is_some_and(Value::is_object)
        {
            out["metadata"]["annotations"] = json!({});
        }
        out["metadata"]["annotations"][TEMPLATE_ANNOTATION] = json!(text);
    }
    Ok(out)
}

/// The answer to a `ConversionReview` (apiextensions.k8s.io/v1): every object converted, or a
/// Failure naming the first one that could not be.
pub fn review(request: &Value) -> Value {
    let req = request.get("request").cloned().unwrap_or_default();
    let uid = req.get("uid").cloned().unwrap_or(json!(""));
    let desired = req
        .get("desiredAPIVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let objects = req
        .get("objects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let converted: Result<Vec<Value>, ConvertError> =
        objects.iter().map(|o| convert(o, desired)).collect();
    let response = match converted {
        Ok(objs) => {
            json!({"uid": uid, "convertedObjects": objs, "result": {"status": "Success"}})
        }
        Err(e) => json!({"uid": uid, "result": {"status": "Failure", "message": e.to_string()}}),
    };
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "response": response})
}

#[cfg(test)]
mod tests;
