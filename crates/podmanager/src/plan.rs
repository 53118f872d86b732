//! The pure decision: given a PodManager, the pods it owns and what is known of node health,
//! which pods to create and which to delete. No I/O here; `reconcile` applies the result.
//!
//! Rules (DESIGN §8):
//! - pods are named `<podmanager>-<ordinal>`; creation fills the lowest free ordinals, so a
//!   stale view can only ever re-create a name that exists (AlreadyExists, harmless);
//! - terminating pods are not current; a terminating pod on a Ready node keeps its ordinal and
//!   is re-created in place once gone (one at a time during a rollout);
//! - scale down removes not-ready pods first, then pods on an old image, then highest ordinals;
//! - a template change (image or any v2 template field) replaces one pod at a time, and only
//!   while every other pod is ready;
//! - pods on NotReady nodes are never ready; while eviction protection is on they cannot be
//!   deleted (the guard refuses), so they are left alone and replaced by extra pods on other
//!   ordinals; once the nodes return the surplus goes through ordinary scale down;
//! - while node health is unknown, nothing is deleted for surplus or rollout (a stale Ready
//!   condition on a dead node would otherwise make us delete a healthy replacement).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

pub use crate::crd::CONTAINER_NAME;
use crate::crd::PodManager;

/// Pods created by one pass at most (the ReplicaSet controller's burst size): a PodManager
/// stored with a huge `replicas` fills up over several passes instead of one unbounded burst.
pub const MAX_CREATIONS_PER_PASS: u32 = 500;

/// What is known of node health at the time of planning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterHealth {
    /// False until the health source has produced a first answer (or after it lost contact).
    pub known: bool,
    /// Names of nodes that are NotReady now.
    pub not_ready: BTreeSet<String>,
    /// Eviction protection is on: pods on NotReady nodes must not be deleted.
    pub protection: bool,
}

impl ClusterHealth {
    /// Health with every node Ready and protection off.
    pub fn all_ready() -> Self {
        Self {
            known: true,
            ..Self::default()
        }
    }

    fn is_not_ready(&self, node: Option<&str>) -> bool {
        node.is_some_and(|n| self.not_ready.contains(n))
    }
}

/// Why a pod is deleted; becomes the event message and a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// More pods than `spec.replicas`.
    ScaleDown,
    /// The pod was made from another template (or runs another image than `spec.image`).
    Rollout,
    /// The pod has phase Failed or Succeeded and will not run again.
    Finished,
    /// The pod carries our labels but its name is not `<podmanager>-<ordinal>`.
    UnexpectedName,
}

impl DeleteReason {
    /// Short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScaleDown => "scale_down",
            Self::Rollout => "rollout",
            Self::Finished => "finished",
            Self::UnexpectedName => "unexpected_name",
        }
    }
}

/// A pod to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub name: String,
    pub reason: DeleteReason,
}

/// Counts a user sees in the status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Pods that exist, are not terminating and have not finished.
    pub current: u32,
    /// Current pods that are ready on a node not known to be NotReady.
    pub ready: u32,
    /// Current pods running `spec.image`.
    pub updated: u32,
    /// Current pods on NotReady nodes kept because protection is on.
    pub stranded: u32,
    /// Pods with a deletion timestamp.
    pub terminating: u32,
}

/// What to do now, and what is being waited for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pod names to create, lowest ordinal first.
    pub create: Vec<String>,
    /// Pods to delete.
    pub delete: Vec<Deletion>,
    pub counts: Counts,
    /// Why no further progress is made now (e.g. rollout paused), if anything.
    pub waiting: Option<String>,
}

impl Plan {
    /// Nothing to create or delete and nothing waited for.
    pub fn is_settled(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty() && self.waiting.is_none()
    }
}

/// One pod as the plan sees it.
#[derive(Clone, Debug)]
struct View {
    name: String,
    ordinal: Option<u32>,
    terminating: bool,
    finished: bool,
    on_not_ready_node: bool,
    ready: bool,
    updated: bool,
}

/// `<podmanager>-<ordinal>`: the name of the pod with this ordinal.
pub fn pod_name(podmanager: &str, ordinal: u32) -> String {
    format!("{podmanager}-{ordinal}")
}

/// The ordinal of a pod named `<podmanager>-<n>`, `None` for any other name.
pub fn ordinal_of(podmanager: &str, pod: &str) -> Option<u32> {
    let rest = pod.strip_prefix(podmanager)?.strip_prefix('-')?;
    // "01" would alias "1"; only canonical decimal names are ours.
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// What the plan reads of a pod: implemented for k8s-openapi's `Pod` and for the operator's
/// cached pod ([`crate::pods::CachedPod`]).
pub trait PodView {
    /// `metadata.name` (empty when unset).
    fn pod_name(&self) -> &str;
    /// `spec.nodeName`.
    fn node_name(&self) -> Option<&str>;
    /// `status.phase`.
    fn phase(&self) -> Option<&str>;
    /// It has a deletion timestamp.
    fn is_terminating(&self) -> bool;
    /// Its Ready condition is `True`.
    fn ready_condition(&self) -> bool;
    /// The image of the operator's container (or of the first container).
    fn image(&self) -> Option<&str>;
    /// The template hash label.
    fn template_hash(&self) -> Option<&str>;

    /// Phase Running and condition Ready=True.
    fn reports_ready(&self) -> bool {
        self.phase() == Some("Running") && self.ready_condition()
    }
}

impl PodView for Pod {
    fn pod_name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    fn node_name(&self) -> Option<&str> {
        self.spec.as_ref()?.node_name.as_deref()
    }
    fn phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_deref()
    }
    fn is_terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
    fn ready_condition(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }
    fn image(&self) -> Option<&str> {
        let spec = self.spec.as_ref()?;
        spec.containers
            .iter()
            .find(|c| c.name == CONTAINER_NAME)
            .or_else(|| spec.containers.first())
            .and_then(|c| c.image.as_deref())
    }
    fn template_hash(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()?
            .get(crate::template::LABEL_TEMPLATE_HASH)
            .map(String::as_str)
    }
}

impl<T: PodView> PodView for std::sync::Arc<T> {
    fn pod_name(&self) -> &str {
        (**self).pod_name()
    }
    fn node_name(&self) -> Option<&str> {
        (**self).node_name()
    }
    fn phase(&self) -> Option<&str> {
        (**self).phase()
    }
    fn is_terminating(&self) -> bool {
        (**self).is_terminating()
    }
    fn ready_condition(&self) -> bool {
        (**self).ready_condition()
    }
    fn image(&self) -> Option<&str> {
        (**self).image()
    }
    fn template_hash(&self) -> Option<&str> {
        (**self).template_hash()
    }
}

/// Whether a pod was made from the current template: its hash label, or for pods made before
/// the label existed, its image.
fn is_updated(pod: &impl PodView, image: &str, hash: &str) -> bool {
    match pod.template_hash() {
        Some(h) => h == hash,
        None => pod.image() == Some(image),
    }
}

fn view(
    pm_name: &str,
    image: &str,
    hash: &str,
    pod: &impl PodView,
    health: &ClusterHealth,
) -> View {
    let name = pod.pod_name().to_string();
    let node = pod.node_name();
    let phase = pod.phase();
    let terminating = pod.is_terminating();
    let on_not_ready_node = health.is_not_ready(node);
    View {
        ordinal: ordinal_of(pm_name, &name),
        name,
        terminating,
        finished: matches!(phase, Some("Failed" | "Succeeded")),
        on_not_ready_node,
        ready: !terminating && !on_not_ready_node && pod.reports_ready(),
        updated: is_updated(pod, image, hash),
    }
}

/// Decide what to create and delete for `pm`, given the pods it controls.
pub fn plan(pm: &PodManager, pods: &[impl PodView], health: &ClusterHealth) -> Plan {
    let pm_name = pm.metadata.name.as_deref().unwrap_or_default();
    let replicas = u32::try_from(pm.spec.replicas.max(0)).unwrap_or(0);
    let hash = crate::template::template_hash(&crate::template::template_of(pm));
    let views: Vec<View> = pods
        .iter()
        .map(|p| view(pm_name, &pm.spec.image, &hash, p, health))
        .collect();

    let mut out = Plan::default();
    let taken: BTreeSet<u32> = views.iter().filter_map(|v| v.ordinal).collect();
    // A pod that cannot be deleted now: on a NotReady node while protection is on.
    let pinned = |v: &View| health.protection && v.on_not_ready_node;

    let terminating: Vec<&View> = views.iter().filter(|v| v.terminating).collect();
    out.counts.terminating = count(terminating.len());

    let mut active: Vec<&View> = Vec::new();
    for v in views.iter().filter(|v| !v.terminating) {
        let reason = if v.ordinal.is_none() {
            Some(DeleteReason::UnexpectedName)
        } else if v.finished {
            Some(DeleteReason::Finished)
        } else {
            None
        };
        match reason {
            Some(reason) if !pinned(v) => out.delete.push(Deletion {
                name: v.name.clone(),
                reason,
            }),
            Some(_) => {}
            None => active.push(v),
        }
    }
    out.counts.current = count(active.len());
    out.counts.ready = count(active.iter().filter(|v| v.ready).count());
    out.counts.updated = count(active.iter().filter(|v| v.updated).count());

    let (stranded, mut usable): (Vec<&View>, Vec<&View>) =
        active.iter().copied().partition(|v| pinned(v));
    out.counts.stranded = count(stranded.len());

    let usable_n = count(usable.len());
    if usable_n < replicas {
        // A terminating pod on a live node is gone soon; wait and re-create it under its own
        // name rather than drifting to a new ordinal. One on a NotReady node may never finish.
        // Finished pods being deleted now count the same way.
        let soon_free = count(
            views
                .iter()
                .filter(|v| v.ordinal.is_some() && !v.on_not_ready_node)
                .filter(|v| v.terminating || v.finished)
                .count(),
        );
        let need = (replicas - usable_n).saturating_sub(soon_free);
        out.create = (0..)
            .filter(|o| !taken.contains(o))
            .take(need.min(MAX_CREATIONS_PER_PASS) as usize)
            .map(|o| pod_name(pm_name, o))
            .collect();
        if soon_free > 0 && need < replicas - usable_n {
            out.waiting = Some(format!(
                "waiting for {soon_free} pod(s) to finish terminating before re-creating them"
            ));
        }
    } else if usable_n > replicas {
        if !health.known {
            out.waiting = Some("node health unknown: not removing surplus pods".into());
        } else {
            // false sorts first: not ready, then old image, then highest ordinal.
            usable.sort_by_key(|v| (v.ready, v.updated, std::cmp::Reverse(v.ordinal)));
            out.delete
                .extend(
                    usable
                        .iter()
                        .take((usable_n - replicas) as usize)
                        .map(|v| Deletion {
                            name: v.name.clone(),
                            reason: DeleteReason::ScaleDown,
                        }),
                );
        }
    } else if let Some(w) = rollout_step(&usable, &terminating, health, &mut out.delete) {
        out.waiting = Some(w);
    }
    out
}

/// One step of a rollout (the pod template changed: the image, or with v2 anything of it) when
/// the pod count is right: delete one outdated pod if every other pod is ready and nothing else
/// is in flight. Returns why it waits, if it does.
fn rollout_step(
    usable: &[&View],
    terminating: &[&View],
    health: &ClusterHealth,
    delete: &mut Vec<Deletion>,
) -> Option<String> {
    let mut outdated: Vec<&View> = usable.iter().copied().filter(|v| !v.updated).collect();
    if outdated.is_empty() {
        return None;
    }
    if !health.known {
        return Some("node health unknown: rollout paused".into());
    }
    // A terminating pod on a NotReady node may never finish; it must not stall the rollout.
    if !delete.is_empty() || terminating.iter().any(|v| !v.on_not_ready_node) {
        return Some("rollout waits for pods being deleted".into());
    }
    // A not-ready old pod serves nobody: replace it first, then from the highest ordinal.
    outdated.sort_by_key(|v| (v.ready, std::cmp::Reverse(v.ordinal)));
    let candidate = outdated[0];
    let unready: Vec<&str> = usable
        .iter()
        .filter(|v| v.name != candidate.name && !v.ready)
        .map(|v| v.name.as_str())
        .collect();
    if !unready.is_empty() {
        return Some(format!(
            "rollout waits for pod(s) {} to become ready before replacing {}",
            unready.join(", "),
            candidate.name
        ));
    }
    delete.push(Deletion {
        name: candidate.name.clone(),
        reason: DeleteReason::Rollout,
    });
    None
}

/// Pods to delete when the PodManager itself is deleted: every pod not already terminating,
/// except those on NotReady nodes while protection is on (the guard would refuse; garbage
/// collection removes them through the owner reference once the nodes return).
pub fn cleanup(pods: &[impl PodView], health: &ClusterHealth) -> Vec<String> {
    pods.iter()
        .filter(|p| !p.is_terminating())
        .filter(|p| !(health.protection && health.is_not_ready(p.node_name())))
        .map(|p| p.pod_name())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
