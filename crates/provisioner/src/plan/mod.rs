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
//! one free-space decision), [`capacity`] which CSIStorageCapacity objects tell the scheduler
//! the same, [`volume`] what becomes of a volume, [`orphans`] which directories belong to
//! nobody.

pub mod claim;
pub mod placement;
pub mod volume;

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::storage::v1::StorageClass;

use crate::objects::{
    CachedClaim, CachedVolume, LEGACY_PROVISIONER_HOSTPATH, PROVISIONER_HOSTPATH, PROVISIONER_NFS,
    claim_class, key, named_volume, provisioned_by, uid, volume_class,
};
use crate::paths;

pub use capacity::{CapacityWrite, capacity_writes, desired_capacities};
pub use claim::{ClaimAction, Provision, RESCHEDULE, decide_claim};
pub use placement::{NodeFacts, Nodes};
pub use volume::{VolumeAction, decide_volume};

pub mod capacity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    HostPath,
    Nfs,
}

/// The provisioner names an instance answers to: it serves the StorageClasses naming one of
/// them and recognises the volumes annotated `provisioned-by` one of them. The first name of a
/// backend is the instance's own (`--hostpath-provisioner-name`, `--nfs-provisioner-name`),
/// the hostPath one also the name of the CSIDriver the scheduler reads capacity for; the rest
/// are older names still served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioners {
    hostpath: Vec<String>,
    nfs: Vec<String>,
}

impl Provisioners {
    /// An instance called `hostpath` and `nfs`. The default hostPath name also serves the
    /// legacy `ballast.dev/hostpath` (classes made before the rename, whose `provisioner`
    /// cannot change); an instance of another name does not, so that two instances in one
    /// cluster never serve the same class.
    pub fn new(hostpath: &str, nfs: &str) -> Self {
        let mut names = vec![hostpath.to_owned()];
        if hostpath == PROVISIONER_HOSTPATH {
            names.push(LEGACY_PROVISIONER_HOSTPATH.to_owned());
        }
        Self {
            hostpath: names,
            nfs: vec![nfs.to_owned()],
        }
    }

    /// The backend a provisioner name (a class's, or a volume's `provisioned-by`) stands for.
    pub fn backend(&self, name: &str) -> Option<Backend> {
        if self.hostpath.iter().any(|n| n == name) {
            Some(Backend::HostPath)
        } else if self.nfs.iter().any(|n| n == name) {
            Some(Backend::Nfs)
        } else {
            None
        }
    }

    /// The backend's own name (for hostPath: the CSIDriver's name too).
    pub fn name(&self, backend: Backend) -> &str {
        &self.names(backend)[0]
    }

    /// Every name served for the backend, its own first.
    pub fn names(&self, backend: Backend) -> &[String] {
        match backend {
            Backend::HostPath => &self.hostpath,
            Backend::Nfs => &self.nfs,
        }
    }
}

impl Default for Provisioners {
    /// The shipped names.
    fn default() -> Self {
        Self::new(PROVISIONER_HOSTPATH, PROVISIONER_NFS)
    }
}

/// Everything a decision looks at: a snapshot of the caches.
#[derive(Debug, Default, Clone)]
pub struct World {
    pub claims: Vec<Arc<CachedClaim>>,
    pub volumes: Vec<Arc<CachedVolume>>,
    pub classes: Vec<Arc<StorageClass>>,
    pub nodes: Nodes,
    /// The names this instance serves.
    pub provisioners: Arc<Provisioners>,
}

impl World {
    /// The class named `name`, if one of ours serves it.
    pub fn our_class(&self, name: &str) -> Option<(&StorageClass, Backend)> {
        let sc = self
            .classes
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))?;
        Some((sc, self.provisioners.backend(&sc.provisioner)?))
    }
}

/// The backend serving a claim's class, if it is one of ours.
pub fn claim_backend(c: &CachedClaim, world: &World) -> Option<Backend> {
    world.our_class(claim_class(c)).map(|(_, b)| b)
}

/// The backend of a PV: the one that provisioned it, else the one serving its class.
pub fn volume_backend(v: &CachedVolume, world: &World) -> Option<Backend> {
    provisioned_by(v)
        .and_then(|p| world.provisioners.backend(p))
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
