//! Where a hostPath volume goes: the one free-space decision. A node takes a volume when it is
//! Ready, its agent reports (fresh) and the reported free space covers the request; the
//! claim's `selected-node` is honoured or refused, else a stable hash of the claim uid picks
//! among the nodes that fit, spreading claims.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;

use crate::capacity;
use crate::objects::{CachedClaim, CachedNode, fnv1a, selected_node, uid};
use crate::quantity::human;

/// What is known about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeFacts {
    /// Ready per the control service (or the Node's Ready condition without one).
    pub ready: bool,
    /// Free bytes under the hostPath base directory; `None` when no agent reports for the node.
    pub free_bytes: Option<u64>,
}

pub type Nodes = BTreeMap<String, NodeFacts>;

/// Node facts: Ready from `ready` (the control service's view) when it knows the node, else
/// from the Node's own Ready condition; free bytes from the node agent's capacity report, when
/// one is fresh at `now` (see [`capacity::read`]).
pub fn node_facts(
    nodes: &[Arc<CachedNode>],
    reports: &[Arc<Lease>],
    ready: Option<&BTreeMap<String, bool>>,
    now: Timestamp,
) -> Nodes {
    let free: BTreeMap<String, u64> = reports
        .iter()
        .filter_map(|r| capacity::read(r, now))
        .map(|r| (r.node, r.free_bytes))
        .collect();
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?.to_owned();
            let ready = ready.and_then(|r| r.get(&name).copied()).unwrap_or(n.ready);
            let free_bytes = free.get(&name).copied();
            Some((name, NodeFacts { ready, free_bytes }))
        })
        .collect()
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

/// The node for a hostPath volume of `request` bytes, or why there is none.
pub fn place(c: &CachedClaim, nodes: &Nodes, request: u64) -> Result<String, String> {
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

/// Stable hash of claim uid and node (rendezvous hashing): the same claim always prefers the
/// same node, and claims spread over the nodes that fit.
fn rendezvous(uid: &str, node: &str) -> u64 {
    fnv1a(uid.bytes().chain([b'/']).chain(node.bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_facts_prefer_the_control_service_and_read_fresh_agent_reports() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let ago = |secs: i64| Timestamp::from_second(1_800_000_000 - secs).unwrap();
        let node = |name: &str, ready: &str| -> Arc<CachedNode> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "status": {"conditions": [{"type": "Ready", "status": ready}]},
                }))
                .unwrap(),
            )
        };
        let nodes = vec![
            node("a", "True"),
            node("b", "True"),
            node("c", "Unknown"),
            node("d", "True"),
        ];
        let life = capacity::default_lifetime();
        let reports = vec![
            Arc::new(capacity::report("ns", "a", "agent-a", 1024, ago(10), life)),
            Arc::new(capacity::report("ns", "c", "agent-c", 1024, ago(10), life)),
            Arc::new(capacity::report(
                "ns",
                "d",
                "agent-d",
                1024,
                ago(i64::from(capacity::LEASE_SECONDS) + 1),
                life,
            )),
            Arc::new(capacity::report(
                "ns",
                "gone",
                "agent-x",
                1024,
                ago(10),
                life,
            )),
        ];
        let control: BTreeMap<String, bool> = [("a".to_owned(), false)].into_iter().collect();
        let facts = node_facts(&nodes, &reports, Some(&control), now);
        assert_eq!(
            facts["a"],
            NodeFacts {
                ready: false,
                free_bytes: Some(1024)
            },
            "control service wins"
        );
        assert_eq!(
            facts["b"],
            NodeFacts {
                ready: true,
                free_bytes: None
            },
            "own condition without control data; no agent"
        );
        assert_eq!(
            facts["c"],
            NodeFacts {
                ready: false,
                free_bytes: Some(1024)
            }
        );
        assert_eq!(
            facts["d"],
            NodeFacts {
                ready: true,
                free_bytes: None
            },
            "silent agent counts as gone"
        );
        assert!(
            !facts.contains_key("gone"),
            "reports of unknown nodes add no node"
        );
        assert!(node_facts(&nodes, &reports, None, now)["a"].ready);
    }
}
