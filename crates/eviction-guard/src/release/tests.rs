use super::*;
use serde_json::json;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn node(ready: &str, taints: serde_json::Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "node-1"},
        "spec": {"taints": taints},
        "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "NodeStatusUnknown",
            "lastTransitionTime": "2026-11-28T10:00:00Z"}]}
    }))
    .unwrap()
}

fn unreachable() -> serde_json::Value {
    json!([{"key": UNREACHABLE, "effect": "NoSchedule"},
           {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-11-28T10:00:05Z"}])
}

fn pod(node: &str, tolerations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
        "spec": {"nodeName": node, "tolerations": tolerations,
                 "containers": [{"name": "app", "image": "nginx"}]}
    }))
    .unwrap()
}

fn default_tolerations(secs: i64) -> serde_json::Value {
    json!([{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs},
           {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}])
}

#[test]
fn a_notready_node_tainted_unreachable_is_released_only_when_not_protected() {
    let taint = node_verdict(&node("Unknown", unreachable()), false).unwrap();
    assert_eq!(taint.key, UNREACHABLE);
    assert_eq!(taint.added, Some(t("2026-11-28T10:00:05Z")));
    assert_eq!(
        node_verdict(&node("Unknown", unreachable()), true),
        Err(Keep::Protected)
    );
    assert_eq!(
        node_verdict(&node("True", unreachable()), false),
        Err(Keep::NodeReady),
        "a node that came back"
    );
    assert_eq!(
        node_verdict(
            &node(
                "Unknown",
                json!([{"key": UNREACHABLE, "effect": "NoSchedule"}])
            ),
            false
        ),
        Err(Keep::NotTainted)
    );
    let mut dead = unreachable();
    dead.as_array_mut()
        .unwrap()
        .push(json!({"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}));
    assert_eq!(
        node_verdict(&node("Unknown", dead), false),
        Err(Keep::OutOfService)
    );
}

#[test]
fn a_pod_is_released_once_its_toleration_expired_and_the_controller_had_its_chance() {
    let taint = node_verdict(&node("Unknown", unreachable()), false).unwrap();
    let p = pod("node-1", default_tolerations(300));
    // toleration runs from 10:00:05 to 10:05:05
    assert_eq!(
        pod_verdict(&p, "node-1", &taint, true, t("2026-11-28T10:05:00Z")),
        Err(Keep::Tolerating)
    );
    assert_eq!(
        pod_verdict(&p, "node-1", &taint, true, t("2026-11-28T10:05:05Z")),
        Ok(()),
        "refused by this replica: at once"
    );
    assert_eq!(
        pod_verdict(&p, "node-1", &taint, false, t("2026-11-28T10:05:06Z")),
        Err(Keep::Settling),
        "no record (restarted guard): the controller gets a few seconds first"
    );
    assert_eq!(
        pod_verdict(&p, "node-1", &taint, false, t("2026-11-28T10:06:00Z")),
        Ok(())
    );
    let untolerated = pod("node-1", json!([]));
    assert_eq!(
        pod_verdict(
            &untolerated,
            "node-1",
            &taint,
            true,
            t("2026-11-28T10:00:05Z")
        ),
        Ok(())
    );
}

#[test]
fn pods_tolerating_forever_moved_or_deleting_are_left_alone() {
    let taint = node_verdict(&node("Unknown", unreachable()), false).unwrap();
    let later = t("2026-11-28T11:00:00Z");
    let forever = pod("node-1", json!([{"operator": "Exists"}]));
    assert_eq!(
        pod_verdict(&forever, "node-1", &taint, true, later),
        Err(Keep::ToleratesForever)
    );
    let keyed = pod(
        "node-1",
        json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
    );
    assert_eq!(
        pod_verdict(&keyed, "node-1", &taint, true, later),
        Err(Keep::ToleratesForever)
    );
    assert_eq!(
        pod_verdict(&pod("node-2", json!([])), "node-1", &taint, true, later),
        Err(Keep::Moved)
    );
    let mut deleting = pod("node-1", json!([]));
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-28T10:30:00Z".parse().unwrap(),
        ));
    assert_eq!(
        pod_verdict(&deleting, "node-1", &taint, true, later),
        Err(Keep::Deleting)
    );
}

#[test]
fn refusals_are_remembered_per_pod_uid_and_counted() {
    let mut r = Refusals::default();
    let first = Refusal {
        uid: "u1".into(),
        namespace: "ns".into(),
        name: "web".into(),
        node: "node-1".into(),
        at: t("2026-11-28T10:05:05Z"),
        step: RefusedStep::StatusPatch,
        count: 0,
    };
    r.record(first.clone());
    r.record(Refusal {
        at: t("2026-11-28T10:05:06Z"),
        step: RefusedStep::Delete,
        ..first
    });
    let known = r.get("u1").unwrap();
    assert_eq!((known.count, known.step), (2, RefusedStep::Delete));
    assert_eq!(known.at, t("2026-11-28T10:05:05Z"), "the first refusal");
    r.forget("u1");
    assert!(r.is_empty());
}

#[test]
fn only_nodes_seen_protected_during_their_outage_are_tracked_until_they_recover() {
    use crate::storm::Protection;
    let health = |name: &str, ready: bool| NodeState {
        name: name.into(),
        ready,
        since: None,
        reason: String::new(),
        zone: None,
        out_of_service: false,
    };
    let snapshot = |protected: &[&str], workers: &[(&str, bool)]| Snapshot {
        synced: true,
        protection: Protection {
            protected: protected.iter().map(|s| s.to_string()).collect(),
            ..Protection::default()
        },
        workers: workers
            .iter()
            .map(|(n, r)| (n.to_string(), health(n, *r)))
            .collect(),
    };
    let mut seen = BTreeSet::new();
    track_protected(&mut seen, &snapshot(&[], &[("a", false), ("b", true)]));
    assert!(seen.is_empty(), "a lone NotReady node is not protected");
    track_protected(
        &mut seen,
        &snapshot(&["a", "c"], &[("a", false), ("b", true), ("c", false)]),
    );
    // protection lifts: still tracked while NotReady
    track_protected(
        &mut seen,
        &snapshot(&[], &[("a", false), ("b", true), ("c", false)]),
    );
    assert_eq!(seen, BTreeSet::from(["a".to_string(), "c".to_string()]));
    // c recovers, a is deleted
    track_protected(&mut seen, &snapshot(&[], &[("b", true), ("c", true)]));
    assert!(seen.is_empty());
}
