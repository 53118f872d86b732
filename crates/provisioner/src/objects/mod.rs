//! The names this provisioner reads and writes on Kubernetes objects, the shapes it caches
//! claims, volumes and Nodes in (`lean`: only the fields its decisions read), and plain
//! accessors for those fields. No decisions here.

mod lean;
pub mod shared;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use lean::{
    ANNOTATIONS, CachedClaim, CachedNode, CachedVolume, ClaimRef, HasMeta, LABELS, Lean, Meta,
};

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

pub fn claim_class(c: &CachedClaim) -> &str {
    c.class.as_deref().unwrap_or("")
}

pub fn volume_class(v: &CachedVolume) -> &str {
    v.class.as_deref().unwrap_or("")
}

pub fn claim_request(c: &CachedClaim) -> Option<u64> {
    to_bytes(c.request.as_deref()?)
}

pub fn volume_capacity(v: &CachedVolume) -> Option<u64> {
    to_bytes(v.capacity.as_deref()?)
}

pub fn claim_modes(c: &CachedClaim) -> &[String] {
    &c.access_modes[..]
}

pub fn modes_fit(c: &CachedClaim, v: &CachedVolume) -> bool {
    claim_modes(c).iter().all(|m| v.access_modes.contains(m))
}

pub fn claim_volume_mode(c: &CachedClaim) -> &str {
    c.volume_mode.as_deref().unwrap_or(FILESYSTEM)
}

pub fn volume_mode_fits(c: &CachedClaim, v: &CachedVolume) -> bool {
    v.volume_mode.as_deref().unwrap_or(FILESYSTEM) == claim_volume_mode(c)
}

pub fn selected_node(c: &CachedClaim) -> Option<&str> {
    c.selected_node.as_deref().filter(|n| !n.is_empty())
}

/// Why the claim cannot be bound, as last annotated.
pub fn binding_problem(c: &CachedClaim) -> Option<&str> {
    c.binding_problem.as_deref()
}

/// The provisioner name a volume was provisioned by (`provisioned-by`).
pub fn provisioned_by(v: &CachedVolume) -> Option<&str> {
    v.provisioned_by.as_deref()
}

/// A provisioned volume's directory name, as annotated.
pub fn directory(v: &CachedVolume) -> Option<&str> {
    v.directory.as_deref()
}

pub fn uid(c: &CachedClaim) -> &str {
    c.metadata.uid.as_deref().unwrap_or("")
}

/// A claim's (namespace, name).
pub fn key(c: &CachedClaim) -> (&str, &str) {
    (
        c.metadata.namespace.as_deref().unwrap_or(""),
        c.metadata.name.as_deref().unwrap_or(""),
    )
}

/// `namespace/name`, for logs and messages.
pub fn claim_key(c: &CachedClaim) -> String {
    let (ns, name) = key(c);
    format!("{ns}/{name}")
}

pub fn phase_of_claim(c: &CachedClaim) -> &str {
    c.phase.as_deref().unwrap_or("")
}

pub fn phase_of_volume(v: &CachedVolume) -> &str {
    v.phase.as_deref().unwrap_or("")
}

pub fn reclaim_policy(v: &CachedVolume) -> &str {
    v.reclaim_policy.as_deref().unwrap_or("Retain")
}

/// The volume a claim names (`spec.volumeName`), if any.
pub fn named_volume(c: &CachedClaim) -> Option<&str> {
    c.volume_name.as_deref().filter(|n| !n.is_empty())
}

/// The claim a PV's claimRef names, as (namespace, name, uid).
pub fn claim_ref(v: &CachedVolume) -> Option<(&str, &str, &str)> {
    let r = v.claim_ref.as_ref()?;
    Some((&*r.namespace, &*r.name, &*r.uid))
}

/// Whether `v`'s claimRef names this claim (an empty uid in the ref matches any uid).
pub fn refers_to(v: &CachedVolume, c: &CachedClaim) -> bool {
    claim_ref(v).is_some_and(|(ns, name, u)| (ns, name) == key(c) && (u.is_empty() || u == uid(c)))
}

/// The single hostname a PV's required node affinity pins it to.
pub fn volume_node(v: &CachedVolume) -> Option<&str> {
    v.node.as_deref()
}

/// Whether the PV controller handed the claim to `provisioner`.
pub fn handed_to(c: &CachedClaim, provisioner: &str) -> bool {
    [&c.storage_provisioner, &c.beta_storage_provisioner]
        .iter()
        .any(|a| a.as_deref() == Some(provisioner))
}

/// A reference to the claim, for events and a PV's claimRef.
pub fn reference(c: &CachedClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.as_deref().map(Into::into),
        name: c.metadata.name.as_deref().map(Into::into),
        uid: c.metadata.uid.as_deref().map(Into::into),
        resource_version: c.metadata.resource_version.as_deref().map(Into::into),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
