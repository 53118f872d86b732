//! Node health for the plan, kept current in a `watch` channel.
//!
//! Source: the Node objects' `Ready` condition (default), or the control service's node health
//! and interception state when `--control-endpoint` is given (then protection is known too).

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use ballast_control::{ControlClient, InterceptionState};

use crate::plan::ClusterHealth;

/// Whether a Node's `Ready` condition is `True` (`False`, `Unknown` or missing is NotReady).
pub fn node_ready(node: &Node) -> bool {
    ballast_runtime::node::is_ready(node)
}

/// Health from a map of node name to readiness; protection is never known from Nodes alone.
pub fn from_nodes(nodes: &BTreeMap<String, bool>) -> ClusterHealth {
    ClusterHealth {
        known: true,
        not_ready: nodes
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| name.clone())
            .collect(),
        protection: false,
    }
}

/// Health from the control service: known only when both the interception state (synced) and
/// the node health are known; NotReady nodes from either; protection as the guard reports it.
pub fn from_control(
    status: Option<&InterceptionState>,
    nodes: Option<&BTreeMap<String, ballast_control::NodeHealth>>,
) -> ClusterHealth {
    let (Some(status), Some(nodes)) = (status, nodes) else {
        return ClusterHealth::default();
    };
    if !status.synced {
        return ClusterHealth::default();
    }
    let mut not_ready: std::collections::BTreeSet<String> = nodes
        .values()
        .filter(|n| !n.ready)
        .map(|n| n.name.clone())
        .collect();
    not_ready.extend(status.notready_nodes.iter().cloned());
    ClusterHealth {
        known: true,
        not_ready,
        protection: status.protecting,
    }
}

/// Follows the control service at `endpoint` until `shutdown`, publishing health on every
/// change; the client reconnects with backoff and health reads unknown while disconnected.
pub fn watch_control(
    endpoint: &str,
    control: &ballast_control::ControlClientArgs,
    shutdown: CancellationToken,
) -> Result<(watch::Receiver<ClusterHealth>, tokio::task::JoinHandle<()>), ballast_control::Error> {
    let client = ControlClient::start(control.options(endpoint)?, &shutdown)?;
    let (tx, rx) = watch::channel(ClusterHealth::default());
    let task = tokio::spawn(async move {
        let mut status = client.status();
        let mut nodes = client.node_health();
        loop {
            let health = from_control(
                status.borrow_and_update().as_ref(),
                nodes.borrow_and_update().as_ref(),
            );
            publish(&tx, health);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = status.changed() => if r.is_err() { break },
                r = nodes.changed() => if r.is_err() { break },
            }
        }
        drop(client);
    });
    Ok((rx, task))
}

fn publish(tx: &watch::Sender<ClusterHealth>, health: ClusterHealth) {
    tx.send_if_modified(|current| {
        if *current == health {
            return false;
        }
        tracing::info!(
            known = health.known,
            protection = health.protection,
            not_ready = ?health.not_ready,
            "node health changed"
        );
        *current = health;
        true
    });
}

/// Watches Nodes until `shutdown`, publishing health on every change.
pub fn watch_nodes(
    client: kube::Client,
    shutdown: CancellationToken,
) -> (watch::Receiver<ClusterHealth>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(ClusterHealth::default());
    let task = tokio::spawn(async move {
        let api: Api<Node> = Api::all(client);
        let mut events = watcher(api, watcher::Config::default())
            .backoff(ballast_runtime::watch::backoff())
            .boxed();
        let mut nodes: BTreeMap<String, bool> = BTreeMap::new();
        let mut initial: BTreeMap<String, bool> = BTreeMap::new();
        let mut synced = false;
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                None => return,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "failed to watch nodes; retrying");
                    continue;
                }
                Some(Ok(watcher::Event::Init)) => initial.clear(),
                Some(Ok(watcher::Event::InitApply(node))) => {
                    initial.insert(node.name_any(), node_ready(&node));
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    nodes = std::mem::take(&mut initial);
                    synced = true;
                }
                Some(Ok(watcher::Event::Apply(node))) => {
                    nodes.insert(node.name_any(), node_ready(&node));
                }
                Some(Ok(watcher::Event::Delete(node))) => {
                    nodes.remove(&node.name_any());
                }
            }
            if synced {
                publish(&tx, from_nodes(&nodes));
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};

    fn node(ready: Option<&str>) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: ready.map(|s| {
                    vec![NodeCondition {
                        type_: "Ready".into(),
                        status: s.into(),
                        ..NodeCondition::default()
                    }]
                }),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn status(protecting: bool, synced: bool) -> InterceptionState {
        InterceptionState {
            protecting,
            synced,
            notready_nodes: vec!["n2".into()],
            ..InterceptionState::default()
        }
    }

    fn control_nodes() -> BTreeMap<String, ballast_control::NodeHealth> {
        [("n1", true), ("n2", false), ("n3", false)]
            .into_iter()
            .map(|(name, ready)| {
                (
                    name.to_string(),
                    ballast_control::NodeHealth {
                        name: name.into(),
                        ready,
                        ..ballast_control::NodeHealth::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn control_health_carries_protection_and_notready_nodes() {
        let h = from_control(Some(&status(true, true)), Some(&control_nodes()));
        assert!(h.known && h.protection);
        assert_eq!(h.not_ready.into_iter().collect::<Vec<_>>(), ["n2", "n3"]);
    }

    #[test]
    fn control_health_is_unknown_until_both_streams_are_known_and_synced() {
        assert!(!from_control(None, Some(&control_nodes())).known);
        assert!(!from_control(Some(&status(true, true)), None).known);
        let unsynced = from_control(Some(&status(true, false)), Some(&control_nodes()));
        assert_eq!(unsynced, ClusterHealth::default());
    }

    #[test]
    fn node_is_ready_only_when_its_ready_condition_is_true() {
        assert!(node_ready(&node(Some("True"))));
        assert!(!node_ready(&node(Some("False"))));
        assert!(!node_ready(&node(Some("Unknown"))));
        assert!(!node_ready(&node(None)));
    }

    #[test]
    fn health_from_nodes_lists_notready_nodes_and_never_claims_protection() {
        let nodes = BTreeMap::from([
            ("a".to_string(), true),
            ("b".to_string(), false),
            ("c".to_string(), false),
        ]);
        let h = from_nodes(&nodes);
        assert!(h.known);
        assert!(!h.protection);
        assert_eq!(h.not_ready.into_iter().collect::<Vec<_>>(), ["b", "c"]);
    }
}
