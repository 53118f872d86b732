//! Reading a Node's `Ready` condition, one way for every service: the condition as the kubelet
//! (or, once it stops posting, the node lifecycle controller with `Unknown`) last wrote it.

use k8s_openapi::api::core::v1::{Node, NodeCondition};

/// The node's `Ready` condition, if it has posted one (a registering node may not have yet).
pub fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
}

/// Whether the node is Ready: its `Ready` condition is `True`. `False`, `Unknown` or no
/// condition at all is not Ready.
pub fn is_ready(node: &Node) -> bool {
    ready_condition(node).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeStatus;

    use super::*;

    fn node(conditions: &[(&str, &str)]) -> Node {
        Node {
            status: Some(NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(type_, status)| NodeCondition {
                            type_: (*type_).into(),
                            status: (*status).into(),
                            ..NodeCondition::default()
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn only_a_true_ready_condition_is_ready() {
        assert!(is_ready(&node(&[
            ("MemoryPressure", "False"),
            ("Ready", "True")
        ])));
        assert!(!is_ready(&node(&[("Ready", "False")])));
        assert!(!is_ready(&node(&[("Ready", "Unknown")])));
        assert!(!is_ready(&node(&[("MemoryPressure", "True")])));
        assert!(!is_ready(&Node::default()));
        assert_eq!(
            ready_condition(&node(&[("Ready", "Unknown")])).map(|c| c.status.as_str()),
            Some("Unknown")
        );
    }
}
