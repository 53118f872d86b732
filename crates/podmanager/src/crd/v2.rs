//! `apps.mycompany.com/v2` PodManager: `replicas` plus the pod template subset users need. Served
//! beside v1 (the hub and storage version); the API server converts through `/convert`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerPort, EnvVar, PodSecurityContext, ResourceRequirements, SecurityContext,
};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_REPLICAS, PodManagerStatus};

/// Most pods one PodManager may ask for in v2 (a guard against typos such as 1000 for 10).
pub const MAX_REPLICAS: i32 = 500;

/// Desired state of a v2 PodManager: how many pods, from which template.
// Several printcolumn(...) share keys such as `type_`; clippy reads them as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.mycompany.com",
    version = "v2",
    kind = "PodManager",
    plural = "podmanagers",
    singular = "podmanager",
    namespaced,
    status = "PodManagerStatus",
    shortname = "pm",
    shortname = "pmgr",
    category = "all",
    doc = "PodManager keeps `spec.replicas` pods named `<name>-<ordinal>` made from `spec.template`.",
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
        description = "Image of the first container",
        json_path = ".spec.template.spec.containers[0].image",
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

    /// Template of the pods; the first container is the one v1's `image` names.
    pub template: PodTemplate,
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

/// The part of a pod template a PodManager's pods are made from.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels of the pods (the owner labels are added on top).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The pods' spec.
    pub spec: TemplateSpec,
}

/// Pod template metadata: labels only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels put on every pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Pod spec subset.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSpec {
    /// Containers of the pod; at least one.
    #[schemars(length(min = 1, max = 16))]
    pub containers: Vec<TemplateContainer>,
    /// Pod-level security attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Nodes the pods may run on, by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

/// Container subset.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateContainer {
    /// Container name (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Container image.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Entrypoint (the image's ENTRYPOINT when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments (the image's CMD when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Ports exposed, informational as in a pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Compute resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Container-level security attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}
