//! The provisioner's own shapes of the objects it caches: claims, volumes and Nodes holding only
//! the fields its decisions read, in as few bytes as they can. Decoded straight from the API's
//! JSON (what they do not read is skipped while decoding, never built); [`Lean`] wraps one as
//! a Kubernetes resource of its own, so that `Api` and kube's watcher work with it as with
//! k8s-openapi's types.
//!
//! Metadata keeps the name, namespace, uid, resourceVersion and deletion timestamp ([`Meta`]);
//! the few annotations and labels read ([`ANNOTATIONS`], [`LABELS`]) are fields of their own (a
//! map per object would cost more than the values it holds), every other one is skipped.
//! Values many objects hold alike (namespace, class, phase, access modes, node and provisioner
//! names, sizes) point at one shared copy ([`super::shared`]); the rest are exact-size boxes.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use serde::Deserialize;
use serde::de::Deserializer;

use super::shared;
use super::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BINDING_PROBLEM, ANN_DIRECTORY, ANN_PROVISIONED_BY,
    ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, LABEL_HOSTNAME, LABEL_NODE,
};
use crate::cache::{Cached, keyed_by_metadata};

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

/// The metadata kept of a cached object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub name: Option<Box<str>>,
    /// Shared: namespaces hold many claims.
    pub namespace: Option<Arc<str>>,
    pub uid: Option<Box<str>>,
    pub resource_version: Option<Box<str>>,
    pub deletion_timestamp: Option<Time>,
}

/// A PersistentVolumeClaim as cached: what the claim decisions and the volume built for it read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Claim")]
pub struct CachedClaim {
    pub metadata: Meta,
    /// `spec.storageClassName`.
    pub class: Option<Arc<str>>,
    /// `spec.volumeName`.
    pub volume_name: Option<Box<str>>,
    /// `spec.resources.requests.storage`, as written.
    pub request: Option<Arc<str>>,
    /// `spec.accessModes`.
    pub access_modes: Arc<[String]>,
    /// `spec.volumeMode`.
    pub volume_mode: Option<Arc<str>>,
    /// `status.phase`.
    pub phase: Option<Arc<str>>,
    /// The `selected-node` annotation.
    pub selected_node: Option<Arc<str>>,
    /// The `storage-provisioner` annotation.
    pub storage_provisioner: Option<Arc<str>>,
    /// Its deprecated beta twin.
    pub beta_storage_provisioner: Option<Arc<str>>,
    /// The binding-problem annotation.
    pub binding_problem: Option<Box<str>>,
}

/// A PersistentVolume as cached: what the volume decisions, the claim decisions judging a
/// named volume, and the node agent read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Volume")]
pub struct CachedVolume {
    pub metadata: Meta,
    /// `spec.storageClassName`.
    pub class: Option<Arc<str>>,
    /// `spec.capacity.storage`, as written.
    pub capacity: Option<Arc<str>>,
    /// `spec.accessModes`.
    pub access_modes: Arc<[String]>,
    /// `spec.volumeMode`.
    pub volume_mode: Option<Arc<str>>,
    /// `spec.persistentVolumeReclaimPolicy`.
    pub reclaim_policy: Option<Arc<str>>,
    /// `spec.claimRef`.
    pub claim_ref: Option<ClaimRef>,
    /// The hostname its required node affinity pins it to (the first value of the first
    /// `kubernetes.io/hostname In` expression).
    pub node: Option<Arc<str>>,
    /// `status.phase`.
    pub phase: Option<Arc<str>>,
    /// The `provisioned-by` annotation.
    pub provisioned_by: Option<Arc<str>>,
    /// The directory annotation.
    pub directory: Option<Box<str>>,
    /// The node label its node's agent watches.
    pub node_label: Option<Arc<str>>,
}

/// A volume's `claimRef`: the claim it is reserved for or bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: Arc<str>,
    pub name: Box<str>,
    /// Empty when the reference names no uid.
    pub uid: Box<str>,
}

/// A Node as cached: its name, hostname label and Ready condition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Node")]
pub struct CachedNode {
    pub metadata: Meta,
    /// The `kubernetes.io/hostname` label.
    pub hostname: Option<Box<str>>,
    /// The Ready condition's status is `True`.
    pub ready: bool,
}

/// A cached shape as `Api` and kube's watcher see it: the object, and the metadata they read
/// (name, namespace, uid and resourceVersion, copied while decoding; dropped once cached).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lean<C> {
    pub metadata: ObjectMeta,
    pub object: C,
}

/// A cached shape's metadata.
pub trait HasMeta {
    fn meta(&self) -> &Meta;
}

impl<'de, C: Deserialize<'de> + HasMeta> Deserialize<'de> for Lean<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let object = C::deserialize(d)?;
        let m = object.meta();
        let metadata = ObjectMeta {
            name: m.name.as_deref().map(Into::into),
            namespace: m.namespace.as_deref().map(Into::into),
            uid: m.uid.as_deref().map(Into::into),
            resource_version: m.resource_version.as_deref().map(Into::into),
            ..Default::default()
        };
        Ok(Lean { metadata, object })
    }
}

macro_rules! cached_shape {
    ($($t:ty),*) => {$(
        impl HasMeta for $t {
            fn meta(&self) -> &Meta {
                &self.metadata
            }
        }
        keyed_by_metadata!($t);
        impl Cached for $t {
            type Object = Lean<$t>;
            fn cached(object: Lean<$t>) -> $t {
                object.object
            }
        }
    )*};
}
cached_shape!(CachedClaim, CachedVolume, CachedNode);

ballast_runtime::core_v1_resource!(
    Lean<CachedClaim>,
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    NamespaceResourceScope
);
ballast_runtime::core_v1_resource!(
    Lean<CachedVolume>,
    "PersistentVolume",
    "persistentvolumes",
    ClusterResourceScope
);
ballast_runtime::core_v1_resource!(Lean<CachedNode>, "Node", "nodes", ClusterResourceScope);

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
    fn meta(m: Option<Meta>) -> (super::Meta, Picked) {
        let m = m.unwrap_or_default();
        let meta = super::Meta {
            name: boxed(m.name),
            namespace: common(m.namespace),
            uid: boxed(m.uid),
            resource_version: boxed(m.resource_version),
            deletion_timestamp: m.deletion_timestamp,
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
        /// A value many objects hold alike, shared.
        fn common(&mut self, key: &str) -> Option<Arc<str>> {
            common(self.take(key))
        }
        /// A value of this object's own.
        fn boxed(&mut self, key: &str) -> Option<Box<str>> {
            boxed(self.take(key))
        }
    }

    /// A value many objects hold alike, shared.
    fn common(s: Option<String>) -> Option<Arc<str>> {
        s.map(|s| shared::string(&s))
    }

    /// A value of this object's own, exactly as long as it is.
    fn boxed(s: Option<String>) -> Option<Box<str>> {
        s.map(String::into_boxed_str)
    }

    fn modes(m: Option<Vec<String>>) -> Arc<[String]> {
        shared::list(&m.unwrap_or_default())
    }

    #[derive(Deserialize)]
    pub struct Status {
        phase: Option<String>,
    }

    fn phase(s: Option<Status>) -> Option<Arc<str>> {
        common(s.and_then(|s| s.phase))
    }

    #[derive(Deserialize)]
    pub struct Storage {
        storage: Option<String>,
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
                selected_node: picked.common(ANN_SELECTED_NODE),
                storage_provisioner: picked.common(ANN_STORAGE_PROVISIONER),
                beta_storage_provisioner: picked.common(ANN_BETA_STORAGE_PROVISIONER),
                binding_problem: picked.boxed(ANN_BINDING_PROBLEM),
                metadata,
                class: common(class),
                volume_name: boxed(volume_name),
                request: common(resources.and_then(|r| r.requests?.storage)),
                access_modes: modes(access_modes),
                volume_mode: common(volume_mode),
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
                provisioned_by: picked.common(ANN_PROVISIONED_BY),
                directory: picked.boxed(ANN_DIRECTORY),
                node_label: picked.common(LABEL_NODE),
                metadata,
                phase: phase(v.status),
                access_modes: modes(None),
                ..Default::default()
            };
            if let Some(s) = v.spec {
                out.class = common(s.storage_class_name);
                out.capacity = common(s.capacity.and_then(|c| c.storage));
                out.access_modes = modes(s.access_modes);
                out.volume_mode = common(s.volume_mode);
                out.reclaim_policy = common(s.persistent_volume_reclaim_policy);
                out.claim_ref = s.claim_ref.map(|r| ClaimRef {
                    namespace: shared::string(r.namespace.as_deref().unwrap_or_default()),
                    name: r.name.unwrap_or_default().into_boxed_str(),
                    uid: r.uid.unwrap_or_default().into_boxed_str(),
                });
                out.node = common(pinned(s.node_affinity));
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
                hostname: picked.boxed(LABEL_HOSTNAME),
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
