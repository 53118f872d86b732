//! What a claim needs from the controller: nothing, a warning, a volume, or another node.

use crate::objects::{
    CachedClaim, FILESYSTEM, binding_problem, claim_class, claim_modes, claim_ref, claim_request,
    claim_volume_mode, handed_to, key, modes_fit, named_volume, phase_of_claim, refers_to,
    selected_node, uid, volume_capacity, volume_class, volume_mode_fits,
};
use crate::paths;
use crate::plan::{Backend, World, placement};
use crate::quantity::human;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub volume: String,
    pub directory: String,
    pub backend: Backend,
    /// The class's provisioner name, recorded in the volume's `provisioned-by`.
    pub provisioner: String,
    pub class: String,
    /// Only for hostPath: the node the directory is on (its agent creates it).
    pub node: Option<String>,
    pub capacity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAction {
    Nothing(&'static str),
    /// The claim stays unbound: Warning event with `reason` and the binding-problem annotation.
    Refuse {
        reason: &'static str,
        message: String,
    },
    /// The binding problem is gone: remove the binding-problem annotation.
    ClearProblem,
    Provision(Provision),
    /// Provisioning cannot proceed now: `ProvisioningFailed` Warning event.
    Fail {
        message: String,
    },
    /// The selected node cannot take the volume: `ProvisioningFailed` and remove
    /// `selected-node` (while it still names `node`) so the scheduler picks again; the message
    /// says why, and ends with [`RESCHEDULE`].
    Reschedule {
        node: String,
        message: String,
    },
}

/// How the message of a [`ClaimAction::Reschedule`] ends: what happens next, and why the
/// scheduler may have chosen such a node at all.
pub const RESCHEDULE: &str = "removing volume.kubernetes.io/selected-node so that the scheduler \
    picks another node (its capacity information for this node was stale, or the provisioner's \
    CSIDriver with storageCapacity is not installed)";

/// A WaitForFirstConsumer class: neither bind nor provision before the scheduler has picked a
/// node (`selected-node`), or the volume could end up where the pod cannot run.
fn waits_for_consumer(world: &World, class: &str) -> bool {
    world
        .our_class(class)
        .is_some_and(|(sc, _)| sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

pub fn decide_claim(c: &CachedClaim, world: &World) -> ClaimAction {
    use ClaimAction::*;
    if c.metadata.deletion_timestamp.is_some() {
        return Nothing("claim is terminating");
    }
    let class = claim_class(c);
    let Some((sc, backend)) = world.our_class(class) else {
        return Nothing("storage class is not served by this provisioner");
    };
    let settled = |why: &'static str| {
        if binding_problem(c).is_some() {
            ClearProblem
        } else {
            Nothing(why)
        }
    };
    if phase_of_claim(c) == "Bound" {
        return settled("already bound");
    }
    let find = |name: &str| {
        world
            .volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(name))
    };
    let named = named_volume(c);
    let Some(request) = claim_request(c) else {
        return Fail {
            message: "claim has no valid spec.resources.requests.storage".into(),
        };
    };
    if claim_volume_mode(c) != FILESYSTEM {
        return Fail {
            message: "hostPath and NFS volumes support volumeMode Filesystem only".into(),
        };
    }
    let (ns, name) = key(c);

    if let Some(vn) = named {
        let Some(pv) = find(vn) else {
            // A claim that was Bound and lost its PV is Lost: a new empty volume under the same
            // name would hide the data loss from its users.
            if phase_of_claim(c) == "Lost" {
                return Nothing("claim is Lost: its volume is gone");
            }
            return provision(c, world, (&sc.provisioner, backend), vn, request);
        };
        if refers_to(pv, c) {
            return settled("the PV controller binds the claim to its volume");
        }
        if let Some((rns, rname, _)) = claim_ref(pv) {
            return Refuse {
                reason: "VolumeBoundToOtherClaim",
                message: format!(
                    "PersistentVolume \"{vn}\" is already bound to claim \"{rns}/{rname}\"; \
                     claim \"{ns}/{name}\" stays unbound"
                ),
            };
        }
        let pv_class = volume_class(pv);
        if pv_class != class {
            return Refuse {
                reason: "StorageClassMismatch",
                message: format!(
                    "storage class mismatch: claim \"{ns}/{name}\" requests class \"{class}\" but \
                     PersistentVolume \"{vn}\" has class \"{pv_class}\"; the claim stays unbound \
                     until they match"
                ),
            };
        }
        let capacity = volume_capacity(pv).unwrap_or(0);
        if capacity < request {
            return Refuse {
                reason: "VolumeTooSmall",
                message: format!(
                    "PersistentVolume \"{vn}\" offers {} but claim \"{ns}/{name}\" requests {}; \
                     the claim stays unbound",
                    human(capacity),
                    human(request)
                ),
            };
        }
        if !modes_fit(c, pv) || !volume_mode_fits(c, pv) {
            return Refuse {
                reason: "AccessModeMismatch",
                message: format!(
                    "PersistentVolume \"{vn}\" does not offer the access modes {:?} claim \
                     \"{ns}/{name}\" asks for; the claim stays unbound",
                    claim_modes(c)
                ),
            };
        }
        return settled("the PV controller binds the claim to the volume it names");
    }

    // Provisioned already (by us, or by another replica a moment ago): the PV controller binds.
    if world
        .volumes
        .iter()
        .any(|v| v.metadata.deletion_timestamp.is_none() && refers_to(v, c))
    {
        return Nothing("volume provisioned; the PV controller binds it");
    }
    if !handed_to(c, &sc.provisioner) {
        return Nothing("waiting for the PV controller to hand the claim over");
    }
    if selected_node(c).is_none() && waits_for_consumer(world, class) {
        return Nothing("waiting for a consumer to be scheduled");
    }
    if uid(c).is_empty() {
        return Fail {
            message: "claim has no uid yet".into(),
        };
    }
    provision(
        c,
        world,
        (&sc.provisioner, backend),
        &format!("pvc-{}", uid(c)),
        request,
    )
}

fn provision(
    c: &CachedClaim,
    world: &World,
    (provisioner, backend): (&str, Backend),
    volume: &str,
    request: u64,
) -> ClaimAction {
    let (ns, name) = key(c);
    let directory = match paths::dir_name(volume, ns, name) {
        Ok(d) => d,
        Err(e) => {
            return ClaimAction::Fail {
                message: e.to_string(),
            };
        }
    };
    let mut p = Provision {
        volume: volume.to_owned(),
        directory,
        backend,
        provisioner: provisioner.to_owned(),
        class: claim_class(c).to_owned(),
        node: None,
        capacity: request,
    };
    if backend == Backend::Nfs {
        return ClaimAction::Provision(p);
    }
    match placement::place(c, &world.nodes, request) {
        Ok(node) => {
            p.node = Some(node);
            ClaimAction::Provision(p)
        }
        Err(message) => match selected_node(c) {
            Some(node) => ClaimAction::Reschedule {
                node: node.to_owned(),
                message: format!("{message}; {RESCHEDULE}"),
            },
            None => ClaimAction::Fail { message },
        },
    }
}
