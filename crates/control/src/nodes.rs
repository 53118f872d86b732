//! Node health streams as pure functions: the server diffs consecutive snapshots into change
//! events, the client folds events back into a map.

use std::collections::BTreeMap;

use crate::pb;
use crate::types::{ConvertError, NodeHealth};

/// What changed between two node health snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeHealthChange {
    /// Nodes that appeared or whose health changed, sorted by name.
    pub changed: Vec<NodeHealth>,
    /// Nodes no longer watched, sorted by name.
    pub removed: Vec<String>,
}

impl NodeHealthChange {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The change from `prev` to `next`; empty when they hold the same nodes with the same health.
pub fn diff(
    prev: &BTreeMap<String, NodeHealth>,
    next: &BTreeMap<String, NodeHealth>,
) -> NodeHealthChange {
    let changed = next
        .iter()
        .filter(|(name, health)| prev.get(*name) != Some(*health))
        .map(|(_, health)| health.clone())
        .collect();
    let removed = prev
        .keys()
        .filter(|name| !next.contains_key(*name))
        .cloned()
        .collect();
    NodeHealthChange { changed, removed }
}

/// The first message of a WatchNodeHealth stream: every node, `snapshot = true`.
pub(crate) fn snapshot_event(nodes: &BTreeMap<String, NodeHealth>) -> pb::WatchNodeHealthResponse {
    pb::WatchNodeHealthResponse {
        snapshot: true,
        nodes: nodes.values().map(pb::NodeHealth::from).collect(),
        removed: Vec::new(),
    }
}

pub(crate) fn change_event(change: &NodeHealthChange) -> pb::WatchNodeHealthResponse {
    pb::WatchNodeHealthResponse {
        snapshot: false,
        nodes: change.changed.iter().map(pb::NodeHealth::from).collect(),
        removed: change.removed.clone(),
    }
}

/// Folds one stream event into the client's view. `None` means "no snapshot yet": a change event
/// then is a protocol error, since applying it would present a partial view as complete.
pub fn apply(
    view: &mut Option<BTreeMap<String, NodeHealth>>,
    event: pb::WatchNodeHealthResponse,
) -> Result<(), ConvertError> {
    let nodes = event
        .nodes
        .into_iter()
        .map(NodeHealth::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    if event.snapshot {
        *view = Some(nodes.into_iter().map(|n| (n.name.clone(), n)).collect());
        return Ok(());
    }
    let map = view.as_mut().ok_or(ConvertError::ChangeBeforeSnapshot)?;
    for name in &event.removed {
        map.remove(name);
    }
    for node in nodes {
        map.insert(node.name.clone(), node);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_node(name: &str, ready: bool) -> NodeHealth {
        NodeHealth {
            name: name.into(),
            ready,
            since: None,
            reason: if ready {
                "KubeletReady"
            } else {
                "NodeStatusUnknown"
            }
            .into(),
            zone: "zone-a".into(),
        }
    }

    fn map(nodes: &[NodeHealth]) -> BTreeMap<String, NodeHealth> {
        nodes.iter().map(|n| (n.name.clone(), n.clone())).collect()
    }

    #[test]
    fn diff_reports_only_nodes_whose_health_changed_plus_new_and_removed_nodes() {
        let prev = map(&[mk_node("a", true), mk_node("b", true), mk_node("c", true)]);
        let next = map(&[mk_node("a", true), mk_node("b", false), mk_node("d", true)]);
        let change = diff(&prev, &next);
        assert_eq!(
            change.changed,
            vec![mk_node("b", false), mk_node("d", true)]
        );
        assert_eq!(change.removed, vec!["c".to_string()]);
    }

    #[test]
    fn diff_of_identical_snapshots_is_empty() {
        let nodes = map(&[mk_node("a", true), mk_node("b", false)]);
        assert!(diff(&nodes, &nodes.clone()).is_empty());
    }

    #[test]
    fn applying_snapshot_then_changes_reproduces_the_servers_view() {
        let first = map(&[mk_node("a", true), mk_node("b", true), mk_node("c", true)]);
        let second = map(&[mk_node("a", false), mk_node("c", true), mk_node("e", true)]);
        let mut view = None;
        apply(&mut view, snapshot_event(&first)).unwrap();
        assert_eq!(view.as_ref(), Some(&first));
        apply(&mut view, change_event(&diff(&first, &second))).unwrap();
        assert_eq!(view, Some(second));
    }

    #[test]
    fn a_change_before_any_snapshot_is_refused_and_leaves_the_view_unknown() {
        let mut view = None;
        let change = NodeHealthChange {
            changed: vec![mk_node("a", false)],
            removed: vec![],
        };
        assert_eq!(
            apply(&mut view, change_event(&change)),
            Err(ConvertError::ChangeBeforeSnapshot)
        );
        assert_eq!(view, None);
    }

    #[test]
    fn a_new_snapshot_replaces_the_whole_view() {
        let mut view = Some(map(&[mk_node("old", true)]));
        let fresh = map(&[mk_node("new", false)]);
        apply(&mut view, snapshot_event(&fresh)).unwrap();
        assert_eq!(view, Some(fresh));
    }
}
