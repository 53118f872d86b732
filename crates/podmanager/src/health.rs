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

use crate::plan::NodeHealth;

/// Whether a Node's `Ready` condition is `True` (`False`, `Unknown` or missing is NotReady).
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Health from a map of node name to readiness; protection is never known from Nodes alone.
pub fn from_nodes(nodes: &BTreeMap<String, bool>) -> NodeHealth {
    NodeHealth {
        known: true,
        not_ready: nodes
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| name.clone())
            .collect(),
        protection: false,
    }
}

/// Watches Nodes until `shutdown`, publishing health on every change.
pub fn watch_nodes(
    client: kube::Client,
    shutdown: CancellationToken,
) -> (watch::Receiver<NodeHealth>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(NodeHealth::default());
    let task = tokio::spawn(async move {
        let api: Api<Node> = Api::all(client);
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
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
                let health = from_nodes(&nodes);
                tx.send_if_modified(|current| {
                    if *current == health {
                        return false;
                    }
                    tracing::info!(not_ready = ?health.not_ready, "node health changed");
                    *current = health;
                    true
                });
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
