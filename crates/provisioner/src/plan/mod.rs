//! The provisioning decisions, pure: from a claim or a volume, the storage classes and node
//! facts, decide what the controller does. No I/O here; `controller` applies them.
//!
//! The external-provisioner protocol (as sig-storage-lib-external-provisioner follows it):
//! binding is the PV controller's job. We act on claims it handed to us (the
//! `volume.kubernetes.io/storage-provisioner` annotation, or its beta twin, names our
//! provisioner) and on claims naming a volume that does not exist; we create the volume
//! pre-bound (`claimRef` with the claim's uid) and the PV controller binds. A claim's spec and
//! status are never ours to write. Volumes are reclaimed once the PV controller has marked them
//! Released.
//!
//! Rooms: [`claim`] decides what a claim needs, [`placement`] where a hostPath volume goes (the
//! one free-space decision), [`volume`] what becomes of a volume, [`orphans`] which directories
//! belong to nobody.

pub mod claim;
pub mod placement;
pub mod volume;

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::objects::{
    ANN_PROVISIONED_BY, PROVISIONER_HOSTPATH, PROVISIONER_NFS, annotation, claim_class, key,
    named_volume, uid, volume_class,
};
use crate::paths;

pub use claim::{ClaimAction, Provision, decide_claim};
pub use placement::{NodeFacts, Nodes};
pub use volume::{VolumeAction, decide_volume};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    HostPath,
    Nfs,
}

impl Backend {
    pub fn from_provisioner(name: &str) -> Option<Self> {
        match name {
            PROVISIONER_HOSTPATH => Some(Self::HostPath),
            PROVISIONER_NFS => Some(Self::Nfs),
            _ => None,
        }
    }
    pub fn provisioner(self) -> &'static str {
        match self {
            Self::HostPath => PROVISIONER_HOSTPATH,
            Self::Nfs => PROVISIONER_NFS,
        }
    }
}

/// Everything a decision looks at: a snapshot of the caches.
#[derive(Debug, Default, Clone)]
pub struct World {
    pub claims: Vec<Arc<PersistentVolumeClaim>>,
    pub volumes: Vec<Arc<PersistentVolume>>,
    pub classes: Vec<Arc<StorageClass>>,
    pub nodes: Nodes,
}

impl World {
    /// The class named `name`, if one of ours serves it.
    pub fn our_class(&self, name: &str) -> Option<(&StorageClass, Backend)> {
        let sc = self
            .classes
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))?;
        Some((sc, Backend::from_provisioner(&sc.provisioner)?))
    }
}

/// The backend serving a claim's class, if it is one of ours.
pub fn claim_backend(c: &PersistentVolumeClaim, world: &World) -> Option<Backend> {
    world.our_class(claim_class(c)).map(|(_, b)| b)
}

/// The backend of a PV: the one that provisioned it, else the one serving its class.
pub fn volume_backend(v: &PersistentVolume, world: &World) -> Option<Backend> {
    annotation(&v.metadata, ANN_PROVISIONED_BY)
        .and_then(Backend::from_provisioner)
        .or_else(|| world.our_class(volume_class(v)).map(|(_, b)| b))
}

/// Directories under the NFS export that belong to nobody: our naming, no PV of that name, and
/// no live claim that is still waiting for that volume. The caller removes them only when empty.
pub fn orphans(directories: &[String], world: &World) -> Vec<String> {
    // Indexed once, so the scan is linear in directories, volumes and claims.
    let volumes: HashSet<&str> = world
        .volumes
        .iter()
        .filter_map(|v| v.metadata.name.as_deref())
        .collect();
    let awaited: HashSet<(&str, &str, String)> = world
        .claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| {
            let wanted = named_volume(c)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("pvc-{}", uid(c)));
            let (ns, name) = key(c);
            (ns, name, wanted)
        })
        .collect();
    directories
        .iter()
        .filter(|d| !d.starts_with(paths::ARCHIVE_PREFIX))
        .filter(|d| {
            let Some((pv, ns, claim)) = paths::parse_dir_name(d) else {
                return false;
            };
            !volumes.contains(pv) && !awaited.contains(&(ns, claim, pv.to_owned()))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
