//! Release of refused evictions: protection delays the node controller's taint-based evictions,
//! it must not cancel them. The TaintEvictionController gives up on a pod after five refused
//! attempts and tries again only when the node's NoExecute taints change, so once protection
//! lifts for a node that is still NotReady and tainted `unreachable` / `not-ready` NoExecute,
//! the guard completes what the controller would have done: `DisruptionTarget` (reason
//! `DeletionByTaintManager`) through `/status`, then DELETE with a uid precondition.
//!
//! What to release is derived from the cluster (pods on such nodes whose toleration has expired),
//! but only on the nodes of the [`Plan`]: those protected during a storm, each in the NotReady
//! spell it was protected in. A lone failed node's evictions stay the controller's business,
//! and a node that was Ready at any moment since — a partition heals over seconds, node by
//! node — keeps its pods. When a storm ends by itself the plan waits out its settle period
//! first (see [`crate::storm`]); when an operator sets DISABLED it acts at once. The plan is kept
//! by every replica and saved by the release leader in a ConfigMap of its own, so a restarted or
//! newly elected leader carries on with it. The refusals this replica saw ([`Refusals`]) let it
//! act at once instead of first giving the controller [`CONTROLLER_SETTLE`] to finish. The
//! decisions ([`Plan::node_verdict`], [`pod_verdict`]) are pure; [`crate::releaser::run`] does
//! the calls, leader only, rate-limited per node, re-reading each node before each pod.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use serde::{Deserialize, Serialize};

use crate::storm::{Mode, NodeState, OUT_OF_SERVICE_TAINT, Snapshot};

/// The identity the taint eviction controller acts as (`kube-controller-manager`).
pub const NODE_CONTROLLER: &str = "system:serviceaccount:kube-system:node-controller";
/// The NoExecute taints the node lifecycle controller puts on NotReady nodes.
pub const EVICTION_TAINTS: [&str; 2] = [
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/not-ready",
];
/// The condition the controller sets before deleting, reason and message as it writes them.
pub const DISRUPTION_REASON: &str = "DeletionByTaintManager";
pub const DISRUPTION_MESSAGE: &str = "Taint manager: deleting due to NoExecute taint";
/// Event reason on every released pod.
pub const EVENT_REASON: &str = "EvictionReleased";
/// The name of the one `EvictionReleased` Event of pod `name` (uid `uid`): the same whichever
/// replica writes it, so a leader taking over from one that died between the Event and the
/// DELETE finds it there (409) instead of writing a second one. A valid object name for any pod
/// name (at most 253 characters, the pod's name cut to fit).
pub fn release_event_name(name: &str, uid: &str) -> String {
    const MAX: usize = 253;
    let suffix = format!(".released.{uid}");
    let keep = MAX.saturating_sub(suffix.len());
    let mut cut = keep.min(name.len());
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    // a cut may leave a '.' or '-' last, which an object name may not end a segment with
    let head = name[..cut].trim_end_matches(['.', '-']);
    format!("{head}{suffix}")
}
/// For a pod this replica has no refusal on record for (after a restart), how long after its
/// toleration expired the controller is given to finish by itself first.
pub const CONTROLLER_SETTLE: Duration = Duration::from_secs(5);
/// Default release rate, nodes per second: the node controller's `--node-eviction-rate`.
pub const DEFAULT_NODES_PER_SECOND: f64 = 0.1;

/// Settings of the release.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseConfig {
    /// `--release-refused-evictions`.
    pub enabled: bool,
    /// Release only while holding the Lease (`--leader-elect`); false for a single replica.
    pub leader_elect: bool,
    /// Nodes whose pods are released per second (the first at once).
    pub nodes_per_second: f64,
    /// This replica's identity for the leader Lease and on Events.
    pub identity: String,
    /// Name of the leader Lease in the guard's namespace.
    pub lease_name: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        ReleaseConfig {
            enabled: true,
            leader_elect: true,
            nodes_per_second: DEFAULT_NODES_PER_SECOND,
            identity: default_identity(),
            lease_name: "eviction-guard-release".to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// What lifting protection does to the refused deletions, for denial messages and callbacks.
pub fn after_lift(cfg: &ReleaseConfig) -> String {
    if cfg.enabled {
        format!(
            "once protection lifts for a node still NotReady and tainted NoExecute, eviction-guard \
             completes the node controller's refused evictions of its pods whose toleration \
             expired (DisruptionTarget, then delete; {} node/s), as the controller gives up after \
             5 refusals; pods on nodes that recover stay; any other refused request must be retried",
            cfg.nodes_per_second
        )
    } else {
        "lifting protection evicts nothing by itself: the node controller gives up after 5 \
         refusals and retries only when the node's taints change, and the release of refused \
         evictions is off (--release-refused-evictions=false), so delete such pods yourself; any \
         other refused request must be retried"
            .to_owned()
    }
}

/// `POD_NAME` when set (downward API), else the host name with a random suffix.
pub fn default_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "eviction-guard".to_owned());
    format!("{host}-{:08x}", rand_suffix())
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}

/// Which of the controller's steps the guard refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedStep {
    /// The `DisruptionTarget` status patch.
    StatusPatch,
    Delete,
}

impl RefusedStep {
    pub fn label(self) -> &'static str {
        match self {
            RefusedStep::StatusPatch => "status patch",
            RefusedStep::Delete => "delete",
        }
    }
}

/// A refusal of the node controller's eviction, as this replica saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    /// The first refusal.
    pub at: DateTime<Utc>,
    /// The last refused step.
    pub step: RefusedStep,
    pub count: u32,
}

/// The refusals this replica saw, by pod uid.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refusals(BTreeMap<String, Refusal>);

impl Refusals {
    pub fn record(&mut self, r: Refusal) {
        match self.0.get_mut(&r.uid) {
            Some(known) => {
                known.step = r.step;
                known.count += 1;
            }
            None => {
                self.0.insert(r.uid.clone(), Refusal { count: 1, ..r });
            }
        }
    }
    pub fn get(&self, uid: &str) -> Option<&Refusal> {
        self.0.get(uid)
    }
    pub fn forget(&mut self, uid: &str) {
        self.0.remove(uid);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a node's or a pod's eviction is not released (now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Its pods are protected now.
    Protected,
    /// The node came back.
    NodeReady,
    /// Its pods were never protected in its current NotReady spell: a lone failure, or the node
    /// was Ready at some moment since it was protected.
    NotInPlan,
    /// The storm's settle period is not over yet.
    NotYet,
    /// An operator declared it dead: Kubernetes removes its pods itself.
    OutOfService,
    /// No `unreachable` / `not-ready` NoExecute taint (yet, or any more).
    NotTainted,
    /// The pod is elsewhere now (moved, or a replacement of the same name).
    Moved,
    Deleting,
    ToleratesForever,
    /// Its toleration of the taint has not expired yet.
    Tolerating,
    /// Expired only just: the controller may still be at it.
    Settling,
}

/// The eviction taint of a node: key and when it was added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvictionTaint {
    pub key: String,
    pub added: Option<DateTime<Utc>>,
}

/// What the release may still act on: the nodes protected during a storm, each with the
/// moment its NotReady spell began, and the earliest moment to act.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Node name → when the NotReady spell it was protected in began (its `Ready` condition's
    /// transition time; the epoch when it reports none).
    pub nodes: BTreeMap<String, DateTime<Utc>>,
    /// Nothing is released before this: the end of a storm's settle period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
}

/// A NotReady spell's start, as the plan keys it.
fn spell(n: &NodeState) -> DateTime<Utc> {
    n.since.unwrap_or(DateTime::UNIX_EPOCH)
}

impl Plan {
    /// Follows a snapshot (pure): adds the protected nodes with their spell; drops the nodes
    /// Ready again, gone, or NotReady in a later spell (so Ready in between); while a storm
    /// ends by itself, nothing may happen before its settle period is over; an operator's
    /// DISABLED lets it act at once. Whether anything changed.
    pub fn track(&mut self, snapshot: &Snapshot, settle: Duration) -> bool {
        if !snapshot.synced {
            return false;
        }
        let before = self.clone();
        let p = &snapshot.protection;
        for name in &p.protected {
            if let Some(n) = snapshot.workers.get(name) {
                self.nodes.insert(name.clone(), spell(n));
            }
        }
        self.nodes.retain(|name, since| {
            snapshot
                .workers
                .get(name)
                .is_some_and(|n| !n.ready && spell(n) == *since)
        });
        let settle = chrono::Duration::from_std(settle).ok();
        if p.mode == Mode::Disabled || self.nodes.is_empty() {
            self.not_before = None;
        } else if let Some(end) = p
            .ending
            .values()
            .max()
            .and_then(|fell| fell.checked_add_signed(settle?))
        {
            self.not_before = Some(self.not_before.map_or(end, |known| known.max(end)));
        }
        *self != before
    }

    /// Adds what a previous leader saved: its nodes not known here, and its wait if longer.
    pub fn adopt(&mut self, saved: Plan) {
        for (name, since) in saved.nodes {
            self.nodes.entry(name).or_insert(since);
        }
        self.not_before = match (self.not_before, saved.not_before) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// Whether the pods of `node`, as just read from the API, may be released at `now` (pure):
    /// it must be in the plan, still NotReady in the same spell, not protected, past the
    /// settle period, and tainted NoExecute by the node lifecycle controller.
    pub fn node_verdict(
        &self,
        node: &Node,
        protected: bool,
        now: DateTime<Utc>,
    ) -> Result<EvictionTaint, Keep> {
        let state = NodeState::from_node(node);
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        if taints.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT) {
            return Err(Keep::OutOfService);
        }
        if state.ready {
            return Err(Keep::NodeReady);
        }
        if protected {
            return Err(Keep::Protected);
        }
        if self.nodes.get(&state.name) != Some(&spell(&state)) {
            return Err(Keep::NotInPlan);
        }
        if self.not_before.is_some_and(|t| now < t) {
            return Err(Keep::NotYet);
        }
        taints
            .iter()
            .find(|t| t.effect == "NoExecute" && EVICTION_TAINTS.contains(&t.key.as_str()))
            .map(|t| EvictionTaint {
                key: t.key.clone(),
                added: t.time_added.as_ref().and_then(|at| {
                    DateTime::from_timestamp(
                        at.0.as_second(),
                        at.0.subsec_nanosecond().max(0) as u32,
                    )
                }),
            })
            .ok_or(Keep::NotTainted)
    }
}

fn tolerates(t: &Toleration, key: &str) -> bool {
    let op = t.operator.as_deref().unwrap_or("Equal");
    let key_ok = match t.key.as_deref().unwrap_or_default() {
        "" => op == "Exists",
        k => k == key,
    };
    let effect_ok = matches!(t.effect.as_deref().unwrap_or_default(), "" | "NoExecute");
    // the node lifecycle's taints carry no value
    let value_ok = op == "Exists" || t.value.as_deref().unwrap_or_default().is_empty();
    key_ok && effect_ok && value_ok
}

/// Whether `pod` on `node` is released now (pure). `remembered`: this replica refused the
/// controller's eviction of this very pod.
pub fn pod_verdict(
    pod: &Pod,
    node: &str,
    taint: &EvictionTaint,
    remembered: bool,
    now: DateTime<Utc>,
) -> Result<(), Keep> {
    if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
        return Err(Keep::Moved);
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(Keep::Deleting);
    }
    let toleration = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|t| tolerates(t, &taint.key));
    let added = taint.added.unwrap_or(now);
    let expires = match toleration {
        None => added,
        Some(t) => match t.toleration_seconds {
            None => return Err(Keep::ToleratesForever),
            Some(secs) => added + chrono::Duration::seconds(secs.max(0)),
        },
    };
    if now < expires {
        return Err(Keep::Tolerating);
    }
    let settle = chrono::Duration::from_std(CONTROLLER_SETTLE).unwrap_or_default();
    if !remembered && now < expires + settle {
        return Err(Keep::Settling);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
