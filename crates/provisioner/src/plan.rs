//! The provisioning decision, pure: from a claim, the volumes, the storage classes and node
//! facts, decide what to do and which instance does it. No I/O here; `reconcile` applies it.
//!
//! The external-provisioner protocol (as sig-storage-lib-external-provisioner follows it):
//! binding is the PV controller's job. We act on claims it handed to us (the
//! `volume.kubernetes.io/storage-provisioner` annotation, or its beta twin, names our
//! provisioner) and on claims naming a volume that does not exist; we create the volume
//! pre-bound (`claimRef` with the claim's uid) and the PV controller binds. A claim's spec and
//! status are never ours to write. Volumes are reclaimed once the PV controller has marked them
//! Released.
//!
//! Who acts: warnings and NFS work belong to the elected controller; creating a hostPath
//! directory belongs to the agent on the chosen node (the claim's `selected-node`, else the node
//! a stable hash of the claim uid picks among Ready nodes with an agent and enough free space),
//! and so does deleting it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::paths;
use crate::quantity::{human, to_bytes};

pub const PROVISIONER_HOSTPATH: &str = "ballast.dev/hostpath";
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
/// On a Node: bytes free under the hostPath base directory, published by that node's agent.
pub const ANN_FREE_BYTES: &str = "ballast.dev/hostpath-free-bytes";
/// On a Node: when its agent last published (unix seconds).
pub const ANN_REPORTED_AT: &str = "ballast.dev/hostpath-reported-at";
/// An agent silent for this long is taken as gone: its node gets no new hostPath volumes.
/// Agents publish every 30s, so this tolerates three missed reports.
pub const AGENT_STALE_SECS: i64 = 120;
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// StorageClass parameter (as in nfs-subdir-external-provisioner): keep deleted NFS data.
pub const PARAM_ARCHIVE_ON_DELETE: &str = "archiveOnDelete";
const FILESYSTEM: &str = "Filesystem";

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

/// What is known about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFacts {
    /// Ready per the control service (or the Node's Ready condition without one).
    pub ready: bool,
    /// Free bytes under the hostPath base directory; `None` when no agent reports for the node.
    pub free_bytes: Option<u64>,
}

pub type Nodes = BTreeMap<String, NodeFacts>;

/// Node facts from the Node objects: Ready from `ready` (the control service's view) when it
/// knows the node, else from the Node's own Ready condition; free bytes from the agent's
/// annotation, unless the agent's last report is older than `AGENT_STALE_SECS` at `now` (unix
/// seconds).
pub fn node_facts(nodes: &[Arc<Node>], ready: Option<&BTreeMap<String, bool>>, now: i64) -> Nodes {
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let own_ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True");
            let ready = ready
                .and_then(|r| r.get(&name).copied())
                .unwrap_or(own_ready);
            let fresh = annotation(&n.metadata, ANN_REPORTED_AT)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|at| now - at <= AGENT_STALE_SECS);
            let free_bytes = annotation(&n.metadata, ANN_FREE_BYTES)
                .and_then(|v| v.parse().ok())
                .filter(|_| fresh);
            Some((name, NodeFacts { ready, free_bytes }))
        })
        .collect()
}

/// Everything a decision looks at: a snapshot of the caches.
#[derive(Debug, Default, Clone)]
pub struct World {
    pub claims: Vec<Arc<PersistentVolumeClaim>>,
    pub volumes: Vec<Arc<PersistentVolume>>,
    pub classes: Vec<Arc<StorageClass>>,
    pub nodes: Nodes,
}

/// Which instance carries out a decision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Actor {
    /// The elected cluster-wide controller.
    Controller,
    /// The node-local agent on this node.
    Node(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<A> {
    pub actor: Actor,
    pub action: A,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub volume: String,
    pub directory: String,
    pub backend: Backend,
    pub class: String,
    /// Only for hostPath: the node the directory is created on.
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
    /// `selected-node` (while it still names `node`) so the scheduler picks again.
    Reschedule {
        node: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAction {
    Nothing(&'static str),
    /// Reclaim policy Delete of a Released volume: remove (or archive) the directory, then the
    /// PV, after checking the live API that no claim holds it.
    Delete {
        backend: Backend,
        directory: Option<String>,
        archive: bool,
    },
}

fn controller<A>(action: A) -> Plan<A> {
    Plan {
        actor: Actor::Controller,
        action,
    }
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

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
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

fn claim_modes(c: &PersistentVolumeClaim) -> &[String] {
    c.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
}

fn modes_fit(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
    let offered = v
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[]);
    claim_modes(c).iter().all(|m| offered.contains(m))
}

fn claim_volume_mode(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or(FILESYSTEM)
}

fn volume_mode_fits(c: &PersistentVolumeClaim, v: &PersistentVolume) -> bool {
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

fn uid(c: &PersistentVolumeClaim) -> &str {
    c.metadata.uid.as_deref().unwrap_or("")
}

fn key(c: &PersistentVolumeClaim) -> (&str, &str) {
    (
        c.metadata.namespace.as_deref().unwrap_or(""),
        c.metadata.name.as_deref().unwrap_or(""),
    )
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
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

/// The backend serving a claim's class, if it is one of ours.
pub fn claim_backend(c: &PersistentVolumeClaim, world: &World) -> Option<Backend> {
    our_class(world, claim_class(c)).map(|(_, b)| b)
}

/// The backend of a PV: the one that provisioned it, else the one serving its class.
pub fn volume_backend(v: &PersistentVolume, world: &World) -> Option<Backend> {
    annotation(&v.metadata, ANN_PROVISIONED_BY)
        .and_then(Backend::from_provisioner)
        .or_else(|| our_class(world, volume_class(v)).map(|(_, b)| b))
}

/// The class of a claim, if one of ours serves it.
fn our_class<'a>(world: &'a World, name: &str) -> Option<(&'a StorageClass, Backend)> {
    let sc = world
        .classes
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))?;
    Some((sc, Backend::from_provisioner(&sc.provisioner)?))
}

/// A WaitForFirstConsumer class: neither bind nor provision before the scheduler has picked a
/// node (`selected-node`), or the volume could end up where the pod cannot run.
fn waits_for_consumer(world: &World, class: &str) -> bool {
    our_class(world, class)
        .is_some_and(|(sc, _)| sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
}

pub fn decide_claim(c: &PersistentVolumeClaim, world: &World) -> Plan<ClaimAction> {
    use ClaimAction::*;
    if c.metadata.deletion_timestamp.is_some() {
        return controller(Nothing("claim is terminating"));
    }
    let class = claim_class(c);
    let Some((sc, backend)) = our_class(world, class) else {
        return controller(Nothing("storage class is not served by this provisioner"));
    };
    let settled = |why: &'static str| {
        if annotation(&c.metadata, ANN_BINDING_PROBLEM).is_some() {
            controller(ClearProblem)
        } else {
            controller(Nothing(why))
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
    let named = c
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty());
    let Some(request) = claim_request(c) else {
        return controller(Fail {
            message: "claim has no valid spec.resources.requests.storage".into(),
        });
    };
    if claim_volume_mode(c) != FILESYSTEM {
        return controller(Fail {
            message: "hostPath and NFS volumes support volumeMode Filesystem only".into(),
        });
    }
    let (ns, name) = key(c);

    if let Some(vn) = named {
        let Some(pv) = find(vn) else {
            // A claim that was Bound and lost its PV is Lost: a new empty volume under the same
            // name would hide the data loss from its users.
            if phase_of_claim(c) == "Lost" {
                return controller(Nothing("claim is Lost: its volume is gone"));
            }
            return provision(c, world, backend, vn, request);
        };
        if refers_to(pv, c) {
            return settled("the PV controller binds the claim to its volume");
        }
        if let Some((rns, rname, _)) = claim_ref(pv) {
            return controller(Refuse {
                reason: "VolumeBoundToOtherClaim",
                message: format!(
                    "PersistentVolume \"{vn}\" is already bound to claim \"{rns}/{rname}\"; \
                     claim \"{ns}/{name}\" stays unbound"
                ),
            });
        }
        let pv_class = volume_class(pv);
        if pv_class != class {
            return controller(Refuse {
                reason: "StorageClassMismatch",
                message: format!(
                    "storage class mismatch: claim \"{ns}/{name}\" requests class \"{class}\" but \
                     PersistentVolume \"{vn}\" has class \"{pv_class}\"; the claim stays unbound \
                     until they match"
                ),
            });
        }
        let capacity = volume_capacity(pv).unwrap_or(0);
        if capacity < request {
            return controller(Refuse {
                reason: "VolumeTooSmall",
                message: format!(
                    "PersistentVolume \"{vn}\" offers {} but claim \"{ns}/{name}\" requests {}; \
                     the claim stays unbound",
                    human(capacity),
                    human(request)
                ),
            });
        }
        if !modes_fit(c, pv) || !volume_mode_fits(c, pv) {
            return controller(Refuse {
                reason: "AccessModeMismatch",
                message: format!(
                    "PersistentVolume \"{vn}\" does not offer the access modes {:?} claim \
                     \"{ns}/{name}\" asks for; the claim stays unbound",
                    claim_modes(c)
                ),
            });
        }
        return settled("the PV controller binds the claim to the volume it names");
    }

    // Provisioned already (by us, or by another replica a moment ago): the PV controller binds.
    if world
        .volumes
        .iter()
        .any(|v| v.metadata.deletion_timestamp.is_none() && refers_to(v, c))
    {
        return controller(Nothing("volume provisioned; the PV controller binds it"));
    }
    if !handed_to(c, &sc.provisioner) {
        return controller(Nothing(
            "waiting for the PV controller to hand the claim over",
        ));
    }
    if selected_node(c).is_none() && waits_for_consumer(world, class) {
        return controller(Nothing("waiting for a consumer to be scheduled"));
    }
    if uid(c).is_empty() {
        return controller(Fail {
            message: "claim has no uid yet".into(),
        });
    }
    provision(c, world, backend, &format!("pvc-{}", uid(c)), request)
}

fn provision(
    c: &PersistentVolumeClaim,
    world: &World,
    backend: Backend,
    volume: &str,
    request: u64,
) -> Plan<ClaimAction> {
    let (ns, name) = key(c);
    let directory = match paths::dir_name(volume, ns, name) {
        Ok(d) => d,
        Err(e) => {
            return controller(ClaimAction::Fail {
                message: e.to_string(),
            });
        }
    };
    let mut p = Provision {
        volume: volume.to_owned(),
        directory,
        backend,
        class: claim_class(c).to_owned(),
        node: None,
        capacity: request,
    };
    if backend == Backend::Nfs {
        return controller(ClaimAction::Provision(p));
    }
    match place_hostpath(c, &world.nodes, request) {
        Ok(node) => {
            p.node = Some(node.clone());
            Plan {
                actor: Actor::Node(node),
                action: ClaimAction::Provision(p),
            }
        }
        Err(message) => match selected_node(c) {
            Some(node) => controller(ClaimAction::Reschedule {
                node: node.to_owned(),
                message,
            }),
            None => controller(ClaimAction::Fail { message }),
        },
    }
}

/// Why a node cannot take a hostPath volume of `request` bytes, or `None` when it can.
fn unfit(name: &str, facts: Option<&NodeFacts>, request: u64) -> Option<String> {
    match facts {
        None => Some(format!("node \"{name}\" is not known")),
        Some(f) if !f.ready => Some(format!(
            "node \"{name}\" is NotReady; hostPath volumes are never placed on a NotReady node"
        )),
        Some(NodeFacts {
            free_bytes: None, ..
        }) => Some(format!(
            "node \"{name}\" has no provisioner agent reporting free space (is the hostpath \
             DaemonSet running there?)"
        )),
        Some(NodeFacts {
            free_bytes: Some(free),
            ..
        }) if *free < request => Some(format!(
            "node \"{name}\" has only {} free under the hostPath base directory but the claim \
             requests {} (free space is checked before placing a hostPath volume)",
            human(*free),
            human(request)
        )),
        Some(_) => None,
    }
}

fn place_hostpath(
    c: &PersistentVolumeClaim,
    nodes: &Nodes,
    request: u64,
) -> Result<String, String> {
    if let Some(node) = selected_node(c) {
        return match unfit(node, nodes.get(node), request) {
            None => Ok(node.to_owned()),
            Some(why) => Err(format!("cannot provision on the selected node: {why}")),
        };
    }
    let mut reasons = Vec::new();
    let mut best: Option<(u64, &str)> = None;
    for (name, facts) in nodes {
        match unfit(name, Some(facts), request) {
            Some(why) => reasons.push(why),
            None => {
                let score = rendezvous(uid(c), name);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, name));
                }
            }
        }
    }
    match best {
        Some((_, name)) => Ok(name.to_owned()),
        None if reasons.is_empty() => {
            Err("no nodes are known to place a hostPath volume on".into())
        }
        None => Err(format!(
            "no node can take a hostPath volume of {}: {}",
            human(request),
            reasons.join("; ")
        )),
    }
}

/// Stable FNV-1a hash of claim uid and node: every agent picks the same node for a claim.
fn rendezvous(uid: &str, node: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    uid.bytes()
        .chain([b'/'])
        .chain(node.bytes())
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// What to do with a PV: reclaim it once the PV controller has marked it Released, else
/// nothing. Only volumes we provisioned are ours to reclaim.
pub fn decide_volume(v: &PersistentVolume, world: &World) -> Plan<VolumeAction> {
    use VolumeAction::*;
    let Some(backend) =
        annotation(&v.metadata, ANN_PROVISIONED_BY).and_then(Backend::from_provisioner)
    else {
        return controller(Nothing("not provisioned by ballast"));
    };
    if v.metadata.deletion_timestamp.is_some() {
        return controller(Nothing("volume is terminating"));
    }
    if phase_of_volume(v) != "Released" {
        return controller(Nothing("volume is not Released"));
    }
    let policy = v
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    if policy != "Delete" {
        return controller(Nothing("released volume is retained"));
    }
    let pv_name = v.metadata.name.as_deref().unwrap_or("");
    if let Some((ns, name, ref_uid)) = claim_ref(v)
        && world.claims.iter().any(|c| {
            key(c) == (ns, name)
                && (ref_uid.is_empty() || ref_uid == uid(c))
                && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv_name)
        })
    {
        return controller(Nothing("a claim still holds the volume"));
    }
    let directory = annotation(&v.metadata, ANN_DIRECTORY)
        .filter(|d| paths::parse_dir_name(d).is_some())
        .map(str::to_owned);
    let archive = backend == Backend::Nfs
        && our_class(world, volume_class(v))
            .and_then(|(sc, _)| {
                sc.parameters
                    .as_ref()?
                    .get(PARAM_ARCHIVE_ON_DELETE)
                    .cloned()
            })
            .is_some_and(|p| p == "true");
    let action = Delete {
        backend,
        directory,
        archive,
    };
    match (backend, volume_node(v)) {
        (Backend::HostPath, Some(node)) => Plan {
            actor: Actor::Node(node.to_owned()),
            action,
        },
        _ => controller(action),
    }
}

/// Directories under a base path that belong to nobody: our naming, no PV of that name, and no
/// live claim that is still waiting for that volume. The caller removes them only when empty.
/// With `node`, only PVs pinned to that node count (a hostPath base path is per node).
pub fn orphans(directories: &[String], world: &World, node: Option<&str>) -> Vec<String> {
    // Indexed once, so the scan is linear in directories, volumes and claims.
    let volumes: std::collections::HashSet<&str> = world
        .volumes
        .iter()
        .filter(|v| node.is_none_or(|n| volume_node(v) == Some(n)))
        .filter_map(|v| v.metadata.name.as_deref())
        .collect();
    let awaited: std::collections::HashSet<(&str, &str, String)> = world
        .claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| {
            let wanted = c
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|n| !n.is_empty())
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
