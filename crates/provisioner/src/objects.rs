//! The names this provisioner reads and writes on Kubernetes objects, and plain accessors for
//! the fields decisions look at. No decisions here.

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::quantity::to_bytes;

/// The hostPath provisioner's default name (`--hostpath-provisioner-name`): a DNS subdomain, so
/// that a CSIDriver of that name can opt the scheduler into reading our capacity objects (a
/// CSIDriver name cannot hold the `/` of [`LEGACY_PROVISIONER_HOSTPATH`]).
pub const PROVISIONER_HOSTPATH: &str = "hostpath.ballast.dev";
/// The hostPath provisioner's earlier name: still served by an instance of the default name, for
/// the StorageClasses that name it (a class's `provisioner` cannot be changed).
pub const LEGACY_PROVISIONER_HOSTPATH: &str = "ballast.dev/hostpath";
/// The NFS provisioner's default name (`--nfs-provisioner-name`).
pub const PROVISIONER_NFS: &str = "ballast.dev/nfs";
/// Set by the scheduler on a WaitForFirstConsumer claim once it has picked a node.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Set by the PV controller on a claim it hands to an external provisioner.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The deprecated twin the PV controller still sets (and older ones set alone).
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a PV we provisioned: the directory name under the base path or export.
pub const ANN_DIRECTORY: &str = "ballast.dev/directory";
/// On a claim we cannot bind: why, in a sentence (removed once bound).
pub const ANN_BINDING_PROBLEM: &str = "ballast.dev/binding-problem";
/// On a hostPath PV: the node holding its directory ([`node_label`] of the node name), so each
/// node agent watches only its own node's volumes with a label selector.
pub const LABEL_NODE: &str = "ballast.dev/hostpath-node";
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// StorageClass parameter (as in nfs-subdir-external-provisioner): keep deleted NFS data.
pub const PARAM_ARCHIVE_ON_DELETE: &str = "archiveOnDelete";
pub const FILESYSTEM: &str = "Filesystem";

/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;

/// A node name as a label value: itself when it fits a label value (63 characters), else `h-`
/// and a stable hash of it, so both the controller and the node's agent compute the same value.
pub fn node_label(node: &str) -> String {
    if node.len() <= MAX_LABEL_VALUE {
        return node.to_owned();
    }
    format!("h-{:016x}", fnv1a(node.bytes()))
}

/// FNV-1a, 64 bits: small, stable across versions and platforms.
pub fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn claim_class(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

pub fn volume_class(v: &PersistentVolume) -> &str {
    v.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

pub fn claim_request(c: &PersistentVolumeClaim) -> Option<u64> {
    let q = c
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    to_bytes(&q.0)
}

pub fn volume_capacity(v: &PersistentVolume) -> Option<u64> {
    to_bytes(&v.spec.as_ref()?.capacity.as_ref()?.get("storage")?.0)
}

pub fn claim_modes(c: &PersistentVolumeClaim) -> &[String] {
    c.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
}

pub fn modes_fit(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
    let offered = v
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[]);
    claim_modes(c).iter().all(|m| offered.contains(m))
}

pub fn claim_volume_mode(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or(FILESYSTEM)
}

pub fn volume_mode_fits(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
    let vm = v
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or(FILESYSTEM);
    vm == claim_volume_mode(c)
}

pub fn selected_node(c: &PersistentVolumeClaim) -> Option<&str> {
    annotation(&c.metadata, ANN_SELECTED_NODE).filter(|n| !n.is_empty())
}

pub fn uid(c: &PersistentVolumeClaim) -> &str {
    c.metadata.uid.as_deref().unwrap_or("")
}

/// A claim's (namespace, name).
pub fn key(c: &PersistentVolumeClaim) -> (&str, &str) {
    (
        c.metadata.namespace.as_deref().unwrap_or(""),
        c.metadata.name.as_deref().unwrap_or(""),
    )
}

/// `namespace/name`, for logs and messages.
pub fn claim_key(c: &PersistentVolumeClaim) -> String {
    let (ns, name) = key(c);
    format!("{ns}/{name}")
}

pub fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn reclaim_policy(v: &PersistentVolume) -> &str {
    v.spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain")
}

/// The volume a claim names (`spec.volumeName`), if any.
pub fn named_volume(c: &PersistentVolumeClaim) -> Option<&str> {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// The claim a PV's claimRef names, as (namespace, name, uid).
pub fn claim_ref(v: &PersistentVolume) -> Option<(&str, &str, &str)> {
    let r = v.spec.as_ref()?.claim_ref.as_ref()?;
    Some((
        r.namespace.as_deref().unwrap_or(""),
        r.name.as_deref().unwrap_or(""),
        r.uid.as_deref().unwrap_or(""),
    ))
}

/// Whether `v`'s claimRef names this claim (an empty uid in the ref matches any uid).
pub fn refers_to(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    claim_ref(v).is_some_and(|(ns, name, u)| (ns, name) == key(c) && (u.is_empty() || u == uid(c)))
}

/// The single hostname a PV's required node affinity pins it to.
pub fn volume_node(v: &PersistentVolume) -> Option<&str> {
    let terms = &v
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == LABEL_HOSTNAME && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().map(String::as_str))
}

/// Whether the PV controller handed the claim to `provisioner`.
pub fn handed_to(c: &PersistentVolumeClaim, provisioner: &str) -> bool {
    [ANN_STORAGE_PROVISIONER, ANN_BETA_STORAGE_PROVISIONER]
        .iter()
        .any(|a| annotation(&c.metadata, a) == Some(provisioner))
}

/// A reference to the claim, for events and a PV's claimRef.
pub fn reference(c: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.clone(),
        name: c.metadata.name.clone(),
        uid: c.metadata.uid.clone(),
        resource_version: c.metadata.resource_version.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_become_label_values_and_long_ones_a_stable_hash() {
        assert_eq!(node_label("node-1"), "node-1");
        let long = "n".repeat(64);
        let label = node_label(&long);
        assert_eq!(label.len(), 18);
        assert!(label.starts_with("h-"));
        assert_eq!(label, node_label(&long), "stable");
        assert_ne!(label, node_label(&"m".repeat(64)));
    }
}
