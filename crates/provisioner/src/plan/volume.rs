//! What becomes of a volume: reclaimed once the PV controller has marked it Released and its
//! policy says Delete, else left alone.

use crate::objects::{
    CachedVolume, PARAM_ARCHIVE_ON_DELETE, claim_ref, directory, key, named_volume, node_label,
    phase_of_volume, provisioned_by, reclaim_policy, uid, volume_class, volume_node,
};
use crate::paths;
use crate::plan::{Backend, World};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAction {
    Nothing(&'static str),
    /// A hostPath volume without the label its node's agent watches (made before agents
    /// watched by label): set `ballast.dev/hostpath-node` to this value.
    Label(String),
    /// Reclaim policy Delete of a Released volume, after checking the live API that no claim
    /// holds it. NFS: the controller removes (or archives) the directory, then the PV. hostPath:
    /// the controller deletes the PV; the node's agent, seeing it gone, removes the directory.
    Delete {
        backend: Backend,
        directory: Option<String>,
        archive: bool,
    },
}

/// What to do with a PV: reclaim it once the PV controller has marked it Released, else
/// nothing. Only volumes we provisioned are ours to reclaim.
pub fn decide_volume(v: &CachedVolume, world: &World) -> VolumeAction {
    use VolumeAction::*;
    let Some(backend) = provisioned_by(v).and_then(|p| world.provisioners.backend(p)) else {
        return Nothing("not provisioned by this provisioner");
    };
    if v.metadata.deletion_timestamp.is_some() {
        return Nothing("volume is terminating");
    }
    if backend == Backend::HostPath
        && let Some(node) = volume_node(v)
    {
        let want = node_label(node);
        if v.node_label.as_deref() != Some(want.as_str()) {
            return Label(want);
        }
    }
    if phase_of_volume(v) != "Released" {
        return Nothing("volume is not Released");
    }
    if reclaim_policy(v) != "Delete" {
        return Nothing("released volume is retained");
    }
    let pv_name = v.metadata.name.as_deref().unwrap_or("");
    if let Some((ns, name, ref_uid)) = claim_ref(v)
        && world.claims.iter().any(|c| {
            key(c) == (ns, name)
                && (ref_uid.is_empty() || ref_uid == uid(c))
                && named_volume(c) == Some(pv_name)
        })
    {
        return Nothing("a claim still holds the volume");
    }
    let directory = directory(v)
        .filter(|d| paths::parse_dir_name(d).is_some())
        .map(str::to_owned);
    let archive = backend == Backend::Nfs
        && world
            .our_class(volume_class(v))
            .and_then(|(sc, _)| {
                sc.parameters
                    .as_ref()?
                    .get(PARAM_ARCHIVE_ON_DELETE)
                    .cloned()
            })
            .is_some_and(|p| p == "true");
    Delete {
        backend,
        directory,
        archive,
    }
}
