//! The `PodManager` custom resource (`apps.mycompany.com/v1`), field names as the seed defines
//! them, plus the scale subresource, printer columns and the standard condition shape.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, ServiceReference, WebhookClientConfig,
    WebhookConversion,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::core::crd::{MergeError, merge_crds};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod v2;

/// Replicas when the user leaves `spec.replicas` out (the seed's default).
pub const DEFAULT_REPLICAS: i32 = 3;

/// Desired state of a PodManager: how many pods, running which image.
// Several printcolumn(...) share keys such as `type_`; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.mycompany.com",
    version = "v1",
    kind = "PodManager",
    plural = "podmanagers",
    singular = "podmanager",
    namespaced,
    status = "PodManagerStatus",
    shortname = "pm",
    shortname = "pmgr",
    category = "all",
    doc = "PodManager keeps `spec.replicas` pods named `<name>-<ordinal>` running `spec.image`.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.currentReplicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Ready pods of the desired number, as READY of a Deployment",
        json_path = ".status.ready"
    ),
    printcolumn(
        name = "Current",
        type_ = "integer",
        description = "Pods that exist and are not terminating",
        json_path = ".status.currentReplicas"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        description = "Container image of the pods",
        json_path = ".spec.image",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PodManagerSpec {
    /// Replicas is the desired number of Pod replicas.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 500), extend("default" = 3))]
    pub replicas: i32,

    /// Image is the container image to use for Pods.
    #[schemars(length(min = 1))]
    pub image: String,
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

/// Observed state of a PodManager.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodManagerStatus {
    /// ReadyReplicas is the number of Pods that are ready (Ready condition true, on a Ready node).
    #[serde(default)]
    pub ready_replicas: i32,

    /// Ready pods of the desired number, `n/m` (the READY column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,

    /// CurrentReplicas is the number of Pods that exist and are not terminating.
    #[serde(default)]
    pub current_replicas: i32,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Label selector of the pods, for the scale subresource (HorizontalPodAutoscaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Conditions: Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Path of the conversion endpoint the CRD's clientConfig names (the webhook serves it).
pub const CONVERSION_PATH: &str = "/convert";
/// Name of the single container the operator puts in each pod.
pub const CONTAINER_NAME: &str = "app";
/// Name of the CustomResourceDefinition.
pub const CRD_NAME: &str = "podmanagers.apps.mycompany.com";
/// The Service the API server calls for conversion (kustomize/podmanager/service.yaml).
pub const WEBHOOK_SERVICE: &str = "podmanager";
/// Namespace of that Service.
pub const WEBHOOK_NAMESPACE: &str = "ballast-system";
/// Port of that Service (its `webhook` port, forwarded to the pod's 8443).
pub const WEBHOOK_SERVICE_PORT: i32 = 443;

/// The multi-version CRD: v1 (served, storage, the hub) and v2 (served), converted by
/// podmanager's `/convert` webhook behind the `podmanager` Service. The caBundle is injected by
/// cert-manager or by the self-signed bootstrap.
pub fn crd() -> Result<CustomResourceDefinition, MergeError> {
    let mut crd = merge_crds(vec![PodManager::crd(), v2::PodManager::crd()], "v1")?;
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "Webhook".into(),
        webhook: Some(WebhookConversion {
            client_config: Some(WebhookClientConfig {
                service: Some(ServiceReference {
                    name: WEBHOOK_SERVICE.into(),
                    namespace: WEBHOOK_NAMESPACE.into(),
                    path: Some(CONVERSION_PATH.into()),
                    port: Some(WEBHOOK_SERVICE_PORT),
                }),
                ..WebhookClientConfig::default()
            }),
            conversion_review_versions: vec!["v1".into()],
        }),
    });
    Ok(crd)
}

/// The CRD as YAML, exactly what `podmanager crd` prints and `deploy/crds/podmanager.yaml` holds.
pub fn crd_yaml() -> crate::Result<String> {
    let crd = crd().map_err(crate::Error::CrdMerge)?;
    serde_yaml::to_string(&crd).map_err(crate::Error::Crd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_is_namespaced_in_the_seed_group_with_scale_and_status() {
        let crd = PodManager::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("podmanagers.apps.mycompany.com")
        );
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names,
            Some(vec!["pm".to_string(), "pmgr".to_string()])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1");
        let sub = version.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.currentReplicas");
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Current", "Image", "Age"]);
    }

    #[test]
    fn crd_schema_validates_replicas_minimum_and_default() {
        let yaml = crd_yaml().expect("yaml");
        let value: serde_json::Value = serde_yaml::from_str(&yaml).expect("parse");
        let replicas = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["replicas"];
        assert_eq!(replicas["minimum"], 1.0);
        // bounded by input: as v2, so no PodManager asks for an unbounded number of pods
        assert_eq!(replicas["maximum"], 500.0);
        assert_eq!(replicas["maximum"], f64::from(v2::MAX_REPLICAS));
        assert_eq!(replicas["default"], 3);
        assert_eq!(replicas["type"], "integer");
        let required = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["required"];
        assert_eq!(required, &serde_json::json!(["image"]));
    }

    #[test]
    fn the_printed_crd_serves_v1_as_storage_and_v2_through_the_conversion_webhook() {
        let crd = crd().expect("crd");
        let versions: Vec<(&str, bool, bool)> = crd
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        assert_eq!(versions, [("v1", true, true), ("v2", true, false)]);
        let conversion = crd.spec.conversion.as_ref().expect("conversion");
        assert_eq!(conversion.strategy, "Webhook");
        let webhook = conversion.webhook.as_ref().expect("webhook");
        assert_eq!(webhook.conversion_review_versions, ["v1"]);
        let svc = webhook
            .client_config
            .as_ref()
            .and_then(|c| c.service.as_ref())
            .expect("service");
        assert_eq!(
            (
                svc.name.as_str(),
                svc.namespace.as_str(),
                svc.path.as_deref(),
                svc.port
            ),
            ("podmanager", "ballast-system", Some("/convert"), Some(443))
        );
        let yaml = crd_yaml().expect("yaml");
        let value: serde_json::Value = serde_yaml::from_str(&yaml).expect("parse");
        let v2 = &value["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(v2["properties"]["replicas"]["maximum"], 500.0);
        assert_eq!(v2["required"], serde_json::json!(["template"]));
        let containers =
            &v2["properties"]["template"]["properties"]["spec"]["properties"]["containers"];
        assert_eq!(containers["minItems"], 1);
        assert_eq!(
            containers["items"]["required"],
            serde_json::json!(["image", "name"])
        );
    }

    #[test]
    fn spec_without_replicas_defaults_to_three() {
        let spec: PodManagerSpec =
            serde_json::from_value(serde_json::json!({"image": "nginx:1.21"})).expect("parse");
        assert_eq!(spec.replicas, 3);
    }
}
