//! Storm detection, pure: from the health of the worker nodes and the mode, decide whether pods
//! on NotReady nodes are protected, and say why in a sentence.
//!
//! A storm **starts** when at least `threshold` worker nodes became NotReady within `window` of
//! each other and are still NotReady. The rule is read from the nodes' own `Ready` transition
//! times, not from when the guard happened to see them, so a guard restarted in the middle of an
//! outage reaches the same answer. Once on, protection stays on while at least `threshold`
//! worker nodes are still NotReady (a long outage does not fall out of the window).
//!
//! A storm **ends** only once fewer than `threshold` worker nodes have been NotReady for a
//! whole `settle` period: a partition heals over seconds (each kubelet reports on its own
//! schedule), so one node's return does not end it, and the nodes still NotReady stay protected
//! meanwhile. The moment the count fell under the threshold is read from the returned nodes'
//! `Ready` transitions too. A guard started while a storm ends sees no storm (fewer than
//! `threshold` NotReady); the release leader keeps what it must still release, and when, in a
//! ConfigMap of its own (see [`crate::release`]), so nothing is released early either way.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;

/// Taint an operator puts on a node to declare it dead: pods there are never protected.
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
/// Well-known zone label used for per-zone counting.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Worker nodes are those without the control-plane or (legacy) master role label.
pub const DEFAULT_WORKER_SELECTOR: &str =
    "!node-role.kubernetes.io/control-plane,!node-role.kubernetes.io/master";

pub use ballast_control::model::Mode;

/// One requirement of an equality-based label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
}

/// An equality-based label selector (`key`, `!key`, `key=value`, `key!=value`, comma-separated),
/// the subset of Kubernetes selector syntax a node role selection needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_owned())
            } else {
                Requirement::Exists(part.to_owned())
            };
            let key = match &req {
                Requirement::Exists(k)
                | Requirement::NotExists(k)
                | Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!("invalid label selector requirement {part:?}"));
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }
}

impl Selector {
    /// Selects every node.
    pub fn match_all() -> Self {
        Selector(Vec::new())
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
        })
    }
}

/// What the guard knows of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub ready: bool,
    /// When the `Ready` condition last changed (None when the node reports none).
    pub since: Option<DateTime<Utc>>,
    /// The `Ready` condition's reason, e.g. `KubeletReady`, `NodeStatusUnknown`.
    pub reason: String,
    pub zone: Option<String>,
    /// Tainted `node.kubernetes.io/out-of-service`.
    pub out_of_service: bool,
}

impl NodeState {
    /// Reads a Node. `Ready` = `False` or `Unknown` is NotReady; a node that has not posted a
    /// `Ready` condition yet (still registering) is not counted as NotReady: protection needs
    /// evidence of failure.
    pub fn from_node(node: &Node) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL))
            .cloned();
        let out_of_service = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
        let ready_cond = ballast_runtime::node::ready_condition(node);
        let (ready, since, reason) = match ready_cond {
            Some(c) => (
                c.status == "True",
                c.last_transition_time.as_ref().and_then(|t| {
                    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
                }),
                c.reason
                    .clone()
                    .unwrap_or_else(|| format!("Ready={}", c.status)),
            ),
            None => (true, None, "ReadyConditionMissing".to_owned()),
        };
        NodeState {
            name,
            ready,
            since,
            reason,
            zone,
            out_of_service,
        }
    }
}

/// Whether a node is a worker under the selector.
pub fn is_worker(node: &Node, selector: &Selector) -> bool {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    selector.matches(node.metadata.labels.as_ref().unwrap_or(&EMPTY))
}

/// Storm detection settings.
#[derive(Clone, Debug, PartialEq)]
pub struct StormConfig {
    /// NotReady worker nodes (within `window`) that make a storm; at least 1.
    pub threshold: usize,
    pub window: Duration,
    /// Also require this fraction (0..=1) of the worker nodes (of the zone) to be NotReady.
    pub min_fraction: Option<f64>,
    /// Count per `topology.kubernetes.io/zone` instead of over the whole cluster.
    pub per_zone: bool,
    /// How long the NotReady count must stay under the threshold before a storm is over.
    pub settle: Duration,
}

/// Default `settle`: a node monitor grace period (50s: how long a returning kubelet can take to
/// be seen Ready again) plus a kubelet's status interval (10s), so the kubelets of a healing
/// partition have all reported before the storm is judged over.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(60);

impl Default for StormConfig {
    fn default() -> Self {
        StormConfig {
            threshold: 3,
            window: Duration::from_secs(300),
            min_fraction: None,
            per_zone: false,
            settle: DEFAULT_SETTLE,
        }
    }
}

/// The outcome of one evaluation. Feed it back as `prev` to the next one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Protection {
    pub mode: Mode,
    /// Pods on the `protected` nodes are being protected now.
    pub protecting: bool,
    /// A human sentence: "3 of 10 worker nodes NotReady within 5m".
    pub reason: String,
    /// When protection last turned on (if protecting) or off; None if it never changed.
    pub since: Option<DateTime<Utc>>,
    /// NotReady worker nodes whose pods are protected now (never an out-of-service node).
    pub protected: BTreeSet<String>,
    /// Every NotReady worker node.
    pub notready: BTreeSet<String>,
    pub workers: usize,
    /// Groups in storm (zone names, or "" for the whole cluster) and when each storm began;
    /// tracked whatever the mode so that going back to AUTO picks up the real state.
    pub storms: BTreeMap<String, DateTime<Utc>>,
    /// Groups of `storms` whose NotReady count is under the threshold, and since when: each
    /// ends once that has lasted [`StormConfig::settle`].
    pub ending: BTreeMap<String, DateTime<Utc>>,
}

impl Protection {
    /// When the next evaluation must happen even if no node changes: the earliest end of an
    /// ending storm.
    pub fn next_change(&self, settle: Duration) -> Option<DateTime<Utc>> {
        let settle = chrono::Duration::from_std(settle).ok()?;
        self.ending
            .values()
            .min()
            .and_then(|since| since.checked_add_signed(settle))
    }
}

/// When the NotReady count of a group fell under `threshold`, read from its returned nodes:
/// with `notready` still down, the count went under the threshold at the
/// `threshold - notready`-th most recent `Ready` transition among the nodes that came back
/// after `since` (None when not enough did).
fn fell_under(
    returned: &mut [DateTime<Utc>],
    notready: usize,
    threshold: usize,
) -> Option<DateTime<Utc>> {
    let needed = threshold.max(1).checked_sub(notready)?;
    if needed == 0 || returned.len() < needed {
        return None;
    }
    returned.sort_unstable_by(|a, b| b.cmp(a));
    Some(returned[needed - 1])
}

/// The earliest moment `threshold` of these NotReady transitions fell within `window` of each
/// other, if they ever did. Unknown transition times count as `now`.
fn storm_trigger(
    sinces: &mut [DateTime<Utc>],
    threshold: usize,
    window: Duration,
) -> Option<DateTime<Utc>> {
    let threshold = threshold.max(1);
    if sinces.len() < threshold {
        return None;
    }
    sinces.sort_unstable();
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    (threshold - 1..sinces.len())
        .find(|&i| sinces[i] - sinces[i + 1 - threshold] <= window)
        .map(|i| sinces[i])
}

struct GroupOutcome {
    workers: usize,
    notready: usize,
    storm_since: Option<DateTime<Utc>>,
    /// Under the threshold since then, while the storm settles.
    ending_since: Option<DateTime<Utc>>,
    within_window: bool,
}

/// Decide protection. `workers` are the worker nodes only.
pub fn evaluate<N: Borrow<NodeState>>(
    cfg: &StormConfig,
    mode: Mode,
    workers: &[N],
    now: DateTime<Utc>,
    prev: &Protection,
) -> Protection {
    let group_of = |n: &NodeState| -> String {
        if cfg.per_zone {
            n.zone.clone().unwrap_or_default()
        } else {
            String::new()
        }
    };
    let mut groups: BTreeMap<String, Vec<&NodeState>> = BTreeMap::new();
    for n in workers.iter().map(Borrow::borrow) {
        groups.entry(group_of(n)).or_default().push(n);
    }

    let mut outcomes: BTreeMap<String, GroupOutcome> = BTreeMap::new();
    for (group, nodes) in &groups {
        let mut sinces: Vec<DateTime<Utc>> = nodes
            .iter()
            .filter(|n| !n.ready)
            .map(|n| n.since.unwrap_or(now))
            .collect();
        let notready = sinces.len();
        let fraction_ok = cfg
            .min_fraction
            .is_none_or(|f| notready as f64 >= f * nodes.len() as f64);
        let trigger = storm_trigger(&mut sinces, cfg.threshold, cfg.window);
        // Ready transitions of the nodes that came back after `after`.
        let returned = |after: Option<DateTime<Utc>>| -> Vec<DateTime<Utc>> {
            nodes
                .iter()
                .filter(|n| n.ready)
                .filter_map(|n| n.since)
                .filter(|s| after.is_none_or(|a| *s > a) && *s <= now)
                .collect()
        };
        let (storm_since, ending_since) = if notready >= cfg.threshold.max(1) && fraction_ok {
            (prev.storms.get(group).copied().or(trigger), None)
        } else if let Some(began) = prev.storms.get(group) {
            // under the threshold now: the storm ends once that has lasted `settle`
            let fell = prev.ending.get(group).copied().unwrap_or_else(|| {
                fell_under(&mut returned(Some(*began)), notready, cfg.threshold).unwrap_or(now)
            });
            (Some(*began), Some(fell))
        } else {
            (None, None)
        };
        let settled = |fell: DateTime<Utc>| (now - fell).to_std().is_ok_and(|d| d >= cfg.settle);
        let (storm_since, ending_since) = match ending_since {
            Some(fell) if settled(fell) => (None, None),
            other => (storm_since, other),
        };
        outcomes.insert(
            group.clone(),
            GroupOutcome {
                workers: nodes.len(),
                notready,
                storm_since,
                ending_since,
                within_window: trigger.is_some(),
            },
        );
    }

    let storms: BTreeMap<String, DateTime<Utc>> = outcomes
        .iter()
        .filter_map(|(g, o)| o.storm_since.map(|s| (g.clone(), s)))
        .collect();
    let ending: BTreeMap<String, DateTime<Utc>> = outcomes
        .iter()
        .filter_map(|(g, o)| o.ending_since.map(|s| (g.clone(), s)))
        .collect();
    let nodes = || workers.iter().map(Borrow::<NodeState>::borrow);
    let notready: BTreeSet<String> = nodes()
        .filter(|n| !n.ready)
        .map(|n| n.name.clone())
        .collect();
    let candidates = nodes().filter(|n| !n.ready && !n.out_of_service);
    let protected: BTreeSet<String> = match mode {
        Mode::Disabled => BTreeSet::new(),
        Mode::Forced => candidates.map(|n| n.name.clone()).collect(),
        Mode::Auto => candidates
            .filter(|n| storms.contains_key(&group_of(n)))
            .map(|n| n.name.clone())
            .collect(),
    };
    let protecting = match mode {
        Mode::Disabled => false,
        Mode::Forced => true,
        Mode::Auto => !storms.is_empty(),
    };
    let since = match mode {
        Mode::Auto if protecting => storms.values().min().copied(),
        _ if protecting != prev.protecting => Some(now),
        _ => prev.since,
    };

    let window = humantime::format_duration(cfg.window).to_string();
    let total = workers.len();
    let reason = match mode {
        Mode::Disabled => format!(
            "interception disabled; {} of {total} worker nodes NotReady",
            notready.len()
        ),
        Mode::Forced => format!(
            "interception forced; protecting pods on {} NotReady worker node{}",
            protected.len(),
            if protected.len() == 1 { "" } else { "s" }
        ),
        Mode::Auto if protecting => outcomes
            .iter()
            .filter(|(_, o)| o.storm_since.is_some())
            .map(|(g, o)| {
                let scope = if cfg.per_zone {
                    format!(" in zone {}", if g.is_empty() { "(none)" } else { g })
                } else {
                    String::new()
                };
                if let Some(fell) = o.ending_since {
                    let settle = humantime::format_duration(cfg.settle);
                    format!(
                        "storm ending: {} of {} worker nodes{scope} NotReady, under the threshold \
                         of {} since {}; pods on those still NotReady stay protected until it \
                         has held for {settle}",
                        o.notready,
                        o.workers,
                        cfg.threshold,
                        fell.format("%H:%M:%SZ")
                    )
                } else if o.within_window {
                    format!(
                        "{} of {} worker nodes{scope} NotReady within {window}",
                        o.notready, o.workers
                    )
                } else {
                    format!(
                        "{} of {} worker nodes{scope} still NotReady (threshold {})",
                        o.notready, o.workers, cfg.threshold
                    )
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        Mode::Auto if total == 0 => "no worker nodes".to_owned(),
        Mode::Auto if notready.is_empty() => format!("all {total} worker nodes Ready"),
        Mode::Auto => format!(
            "{} of {total} worker nodes NotReady: no storm (threshold {} within {window}{})",
            notready.len(),
            cfg.threshold,
            cfg.min_fraction
                .map(|f| format!(", at least {:.0}% of workers", f * 100.0))
                .unwrap_or_default()
        ),
    };

    Protection {
        mode,
        protecting,
        reason,
        since,
        protected,
        notready,
        workers: total,
        storms,
        ending,
    }
}

/// Everything the admission rules read: published by the node monitor on every change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// False until the node cache has synced.
    pub synced: bool,
    pub protection: Protection,
    /// Worker nodes by name: the node cache itself, shared (a change copies it once).
    pub workers: Arc<BTreeMap<String, NodeState>>,
}

#[cfg(test)]
mod tests;
