//! The provisioner's own shapes of the objects it caches: claims, volumes and Nodes holding only
//! the fields its decisions read. Decoded straight from the API's JSON (what they do not read is
//! skipped while decoding, never built), and Kubernetes resources of their own, so that `Api`,
//! kube's watcher and reflector work with them as with k8s-openapi's types.
//!
//! Metadata keeps the name, namespace, uid, resourceVersion and deletion timestamp; the few
//! annotations and labels read ([`ANNOTATIONS`], [`LABELS`]) are fields of their own (a map
//! per object would cost more than the values it holds), every other one is skipped.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::Deserialize;
use serde::de::Deserializer;

use super::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BINDING_PROBLEM, ANN_DIRECTORY, ANN_PROVISIONED_BY,
    ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, LABEL_HOSTNAME, LABEL_NODE,
};

/// The annotations kept: every one a decision reads, on a claim or a volume.
pub const ANNOTATIONS: &[&str] = &[
    ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER,
    ANN_BETA_STORAGE_PROVISIONER,
    ANN_BINDING_PROBLEM,
    ANN_PROVISIONED_BY,
    ANN_DIRECTORY,
];

/// The labels kept: a hostPath volume's node label, a Node's hostname.
pub const LABELS: &[&str] = &[LABEL_NODE, LABEL_HOSTNAME];

/// A PersistentVolumeClaim as cached: what the claim decisions and the volume built for it read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Claim")]
pub struct CachedClaim {
    pub metadata: ObjectMeta,
    /// `spec.storageClassName`.
    pub class: Option<String>,
    /// `spec.volumeName`.
    pub volume_name: Option<String>,
    /// `spec.resources.requests.storage`, as written.
    pub request: Option<Quantity>,
    /// `spec.accessModes`.
    pub access_modes: Vec<String>,
    /// `spec.volumeMode`.
    pub volume_mode: Option<String>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// The `selected-node` annotation.
    pub selected_node: Option<String>,
    /// The `storage-provisioner` annotation.
    pub storage_provisioner: Option<String>,
    /// Its deprecated beta twin.
    pub beta_storage_provisioner: Option<String>,
    /// The binding-problem annotation.
    pub binding_problem: Option<String>,
}

/// A PersistentVolume as cached: what the volume decisions, the claim decisions judging a
/// named volume, and the node agent read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Volume")]
pub struct CachedVolume {
    pub metadata: ObjectMeta,
    /// `spec.storageClassName`.
    pub class: Option<String>,
    /// `spec.capacity.storage`.
    pub capacity: Option<Quantity>,
    /// `spec.accessModes`.
    pub access_modes: Vec<String>,
    /// `spec.volumeMode`.
    pub volume_mode: Option<String>,
    /// `spec.persistentVolumeReclaimPolicy`.
    pub reclaim_policy: Option<String>,
    /// `spec.claimRef`.
    pub claim_ref: Option<ClaimRef>,
    /// The hostname its required node affinity pins it to (the first value of the first
    /// `kubernetes.io/hostname In` expression).
    pub node: Option<String>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// The `provisioned-by` annotation.
    pub provisioned_by: Option<String>,
    /// The directory annotation.
    pub directory: Option<String>,
    /// The node label its node's agent watches.
    pub node_label: Option<String>,
}

/// A volume's `claimRef`: the claim it is reserved for or bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    /// Empty when the reference names no uid.
    pub uid: String,
}

/// A Node as cached: its name, hostname label and Ready condition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Node")]
pub struct CachedNode {
    pub metadata: ObjectMeta,
    /// The `kubernetes.io/hostname` label.
    pub hostname: Option<String>,
    /// The Ready condition's status is `True`.
    pub ready: bool,
}

ballast_runtime::core_v1_resource!(
    CachedClaim,
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    NamespaceResourceScope
);
ballast_runtime::core_v1_resource!(
    CachedVolume,
    "PersistentVolume",
    "persistentvolumes",
    ClusterResourceScope
);
ballast_runtime::core_v1_resource!(CachedNode, "Node", "nodes", ClusterResourceScope);

/// The JSON shapes decoded: only the fields read, every other one skipped by serde.
mod wire {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub struct Meta {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        deletion_timestamp: Option<Time>,
        #[serde(deserialize_with = "kept_annotations")]
        annotations: Option<BTreeMap<String, String>>,
        #[serde(deserialize_with = "kept_labels")]
        labels: Option<BTreeMap<String, String>>,
    }

    /// The metadata kept, and the annotations and labels read, by key.
    fn meta(m: Option<Meta>) -> (ObjectMeta, Picked) {
        let m = m.unwrap_or_default();
        let meta = ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            deletion_timestamp: m.deletion_timestamp,
            ..Default::default()
        };
        let mut picked = m.annotations.unwrap_or_default();
        picked.extend(m.labels.unwrap_or_default());
        (meta, Picked(picked))
    }

    /// Annotations and labels read (their keys never collide).
    struct Picked(BTreeMap<String, String>);

    impl Picked {
        fn take(&mut self, key: &str) -> Option<String> {
            self.0.remove(key)
        }
    }

    #[derive(Deserialize)]
    pub struct Status {
        phase: Option<String>,
    }

    fn phase(s: Option<Status>) -> Option<String> {
        s.and_then(|s| s.phase)
    }

    #[derive(Deserialize)]
    pub struct Storage {
        storage: Option<Quantity>,
    }

    #[derive(Deserialize)]
    pub struct Claim {
        metadata: Option<Meta>,
        spec: Option<ClaimSpec>,
        status: Option<Status>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct ClaimSpec {
        storage_class_name: Option<String>,
        volume_name: Option<String>,
        resources: Option<Resources>,
        access_modes: Option<Vec<String>>,
        volume_mode: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Resources {
        requests: Option<Storage>,
    }

    impl From<Claim> for CachedClaim {
        fn from(c: Claim) -> Self {
            let spec = c.spec;
            let (class, volume_name, resources, access_modes, volume_mode) = match spec {
                Some(s) => (
                    s.storage_class_name,
                    s.volume_name,
                    s.resources,
                    s.access_modes,
                    s.volume_mode,
                ),
                None => Default::default(),
            };
            let (metadata, mut picked) = meta(c.metadata);
            CachedClaim {
                selected_node: picked.take(ANN_SELECTED_NODE),
                storage_provisioner: picked.take(ANN_STORAGE_PROVISIONER),
                beta_storage_provisioner: picked.take(ANN_BETA_STORAGE_PROVISIONER),
                binding_problem: picked.take(ANN_BINDING_PROBLEM),
                metadata,
                class,
                volume_name,
                request: resources.and_then(|r| r.requests?.storage),
                access_modes: access_modes.unwrap_or_default(),
                volume_mode,
                phase: phase(c.status),
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Volume {
        metadata: Option<Meta>,
        spec: Option<VolumeSpec>,
        status: Option<Status>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct VolumeSpec {
        storage_class_name: Option<String>,
        capacity: Option<Storage>,
        access_modes: Option<Vec<String>>,
        volume_mode: Option<String>,
        persistent_volume_reclaim_policy: Option<String>,
        claim_ref: Option<Reference>,
        node_affinity: Option<Affinity>,
    }

    #[derive(Deserialize)]
    pub struct Reference {
        namespace: Option<String>,
        name: Option<String>,
        uid: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Affinity {
        required: Option<Selector>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Selector {
        node_selector_terms: Option<Vec<Term>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Term {
        match_expressions: Option<Vec<Requirement>>,
    }

    #[derive(Deserialize)]
    pub struct Requirement {
        key: String,
        operator: String,
        values: Option<Vec<String>>,
    }

    fn pinned(a: Option<Affinity>) -> Option<String> {
        a?.required?
            .node_selector_terms?
            .into_iter()
            .flat_map(|t| t.match_expressions.into_iter().flatten())
            .find(|e| e.key == LABEL_HOSTNAME && e.operator == "In")
            .and_then(|e| e.values?.into_iter().next())
    }

    impl From<Volume> for CachedVolume {
        fn from(v: Volume) -> Self {
            let (metadata, mut picked) = meta(v.metadata);
            let mut out = CachedVolume {
                provisioned_by: picked.take(ANN_PROVISIONED_BY),
                directory: picked.take(ANN_DIRECTORY),
                node_label: picked.take(LABEL_NODE),
                metadata,
                phase: phase(v.status),
                ..Default::default()
            };
            if let Some(s) = v.spec {
                out.class = s.storage_class_name;
                out.capacity = s.capacity.and_then(|c| c.storage);
                out.access_modes = s.access_modes.unwrap_or_default();
                out.volume_mode = s.volume_mode;
                out.reclaim_policy = s.persistent_volume_reclaim_policy;
                out.claim_ref = s.claim_ref.map(|r| ClaimRef {
                    namespace: r.namespace.unwrap_or_default(),
                    name: r.name.unwrap_or_default(),
                    uid: r.uid.unwrap_or_default(),
                });
                out.node = pinned(s.node_affinity);
            }
            out
        }
    }

    #[derive(Deserialize)]
    pub struct Node {
        metadata: Option<Meta>,
        status: Option<NodeStatus>,
    }

    #[derive(Deserialize)]
    pub struct NodeStatus {
        conditions: Option<Vec<Condition>>,
    }

    #[derive(Deserialize)]
    pub struct Condition {
        #[serde(rename = "type")]
        type_: String,
        status: String,
    }

    impl From<Node> for CachedNode {
        fn from(n: Node) -> Self {
            let ready = n
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .is_some_and(|c| c.status == "True");
            let (metadata, mut picked) = meta(n.metadata);
            CachedNode {
                hostname: picked.take(LABEL_HOSTNAME),
                metadata,
                ready,
            }
        }
    }
}

fn kept_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    ballast_runtime::lean::kept(d, ANNOTATIONS)
}

fn kept_labels<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    ballast_runtime::lean::kept(d, LABELS)
}
