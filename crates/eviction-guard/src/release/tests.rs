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

/// The plan with node-1 in the NotReady spell `node` reports (since 10:00:00), free to act.
fn planned() -> Plan {
    Plan {
        nodes: BTreeMap::from([("node-1".to_string(), t("2026-11-28T10:00:00Z"))]),
        not_before: None,
    }
}

/// `planned()`'s verdict on `node` at 11:00.
fn node_verdict(node: &Node, protected: bool) -> Result<EvictionTaint, Keep> {
    planned().node_verdict(node, protected, t("2026-11-28T11:00:00Z"))
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

fn health(name: &str, ready: bool, since: &str) -> NodeState {
    NodeState {
        name: name.into(),
        ready,
        since: Some(t(since)),
        reason: String::new(),
        zone: None,
        out_of_service: false,
    }
}

fn snapshot(protected: &[&str], workers: &[NodeState]) -> Snapshot {
    use crate::storm::Protection;
    Snapshot {
        synced: true,
        protection: Protection {
            protected: protected.iter().map(|s| s.to_string()).collect(),
            ..Protection::default()
        },
        workers: std::sync::Arc::new(
            workers
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
        ),
    }
}

const SETTLE: Duration = Duration::from_secs(60);

#[test]
fn the_plan_keeps_nodes_protected_in_their_notready_spell_until_they_recover() {
    let mut plan = Plan::default();
    let down = |n: &str| health(n, false, "2026-11-28T10:00:00Z");
    assert!(!plan.track(
        &snapshot(&[], &[down("a"), health("b", true, "2026-11-28T09:00:00Z")]),
        SETTLE
    ));
    assert!(
        plan.nodes.is_empty(),
        "a lone NotReady node is not protected"
    );
    assert!(plan.track(&snapshot(&["a", "c"], &[down("a"), down("c")]), SETTLE));
    // protection lifts: still planned while NotReady in the same spell
    assert!(!plan.track(&snapshot(&[], &[down("a"), down("c")]), SETTLE));
    assert_eq!(plan.nodes.keys().collect::<Vec<_>>(), ["a", "c"]);
    // c was Ready for a moment the guard did not see: NotReady again, but in a later spell
    let c_again = health("c", false, "2026-11-28T10:05:00Z");
    assert!(plan.track(&snapshot(&[], &[down("a"), c_again.clone()]), SETTLE));
    assert_eq!(plan.nodes.keys().collect::<Vec<_>>(), ["a"]);
    // a is deleted
    assert!(plan.track(&snapshot(&[], &[c_again]), SETTLE));
    assert_eq!(plan, Plan::default());
    // not synced: nothing to learn
    let mut unsynced = snapshot(&["x"], &[down("x")]);
    unsynced.synced = false;
    assert!(!plan.track(&unsynced, SETTLE));
}

#[test]
fn an_ending_storm_holds_the_release_until_its_settle_period_is_over_and_disabled_does_not() {
    use crate::storm::Protection;
    let down = |n: &str| health(n, false, "2026-11-28T10:00:00Z");
    let mut plan = Plan::default();
    plan.track(&snapshot(&["a", "b"], &[down("a"), down("b")]), SETTLE);
    assert_eq!(plan.not_before, None, "protected: nothing to wait for yet");
    let mut ending = snapshot(
        &["a"],
        &[down("a"), health("b", true, "2026-11-28T10:10:00Z")],
    );
    ending.protection.ending = BTreeMap::from([(String::new(), t("2026-11-28T10:10:00Z"))]);
    plan.track(&ending, SETTLE);
    assert_eq!(plan.not_before, Some(t("2026-11-28T10:11:00Z")));
    assert_eq!(plan.nodes.keys().collect::<Vec<_>>(), ["a"], "b came back");
    // the storm over: still waits until then
    plan.track(&snapshot(&[], &[down("a")]), SETTLE);
    let a = serde_json::from_value::<Node>(json!({
        "metadata": {"name": "a"},
        "spec": {"taints": unreachable()},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown",
            "lastTransitionTime": "2026-11-28T10:00:00Z"}]}
    }))
    .unwrap();
    assert_eq!(
        plan.node_verdict(&a, false, t("2026-11-28T10:10:59Z"))
            .map(|_| ()),
        Err(Keep::NotYet)
    );
    assert!(
        plan.node_verdict(&a, false, t("2026-11-28T10:11:00Z"))
            .is_ok()
    );
    // an operator's DISABLED: at once
    let mut disabled = snapshot(&[], &[down("a")]);
    disabled.protection = Protection {
        mode: Mode::Disabled,
        ..disabled.protection
    };
    plan.track(&disabled, SETTLE);
    assert_eq!(plan.not_before, None);
}

#[test]
fn a_node_is_released_only_in_the_spell_it_was_protected_in() {
    let n = node("Unknown", unreachable());
    assert!(node_verdict(&n, false).is_ok());
    let later = Plan {
        nodes: BTreeMap::from([("node-1".to_string(), t("2026-11-28T09:00:00Z"))]),
        not_before: None,
    };
    assert_eq!(
        later
            .node_verdict(&n, false, t("2026-11-28T11:00:00Z"))
            .map(|_| ()),
        Err(Keep::NotInPlan),
        "NotReady again since 10:00: it was Ready after 09:00"
    );
    assert_eq!(
        Plan::default()
            .node_verdict(&n, false, t("2026-11-28T11:00:00Z"))
            .map(|_| ()),
        Err(Keep::NotInPlan),
        "never protected: the controller's business"
    );
}

#[test]
fn a_new_leader_adopts_the_saved_plan_and_the_longer_wait() {
    let mut mine = Plan {
        nodes: BTreeMap::from([("a".to_string(), t("2026-11-28T10:00:00Z"))]),
        not_before: Some(t("2026-11-28T10:01:00Z")),
    };
    let saved = Plan {
        nodes: BTreeMap::from([
            ("a".to_string(), t("2026-11-28T09:00:00Z")),
            ("b".to_string(), t("2026-11-28T10:00:00Z")),
        ]),
        not_before: Some(t("2026-11-28T10:02:00Z")),
    };
    let text = serde_json::to_string(&saved).unwrap();
    assert_eq!(
        text,
        r#"{"nodes":{"a":"2026-11-28T09:00:00Z","b":"2026-11-28T10:00:00Z"},"notBefore":"2026-11-28T10:02:00Z"}"#
    );
    mine.adopt(serde_json::from_str(&text).unwrap());
    assert_eq!(
        mine.nodes["a"],
        t("2026-11-28T10:00:00Z"),
        "what this replica saw wins"
    );
    assert_eq!(mine.nodes["b"], t("2026-11-28T10:00:00Z"));
    assert_eq!(mine.not_before, Some(t("2026-11-28T10:02:00Z")));
}

#[test]
fn the_release_event_name_is_fixed_per_pod_and_a_valid_object_name() {
    let uid = "0b8c6b0e-1c7f-4f3e-9a55-2d4f7e1a9c31";
    assert_eq!(
        release_event_name("web-1", uid),
        format!("web-1.released.{uid}")
    );
    assert_eq!(
        release_event_name("web-1", uid),
        release_event_name("web-1", uid)
    );
    assert_ne!(
        release_event_name("web-1", uid),
        release_event_name("web-1", "5d0e8f7a-0000-4000-8000-000000000000")
    );
    // the longest pod name, and one whose cut would end in '-' or '.'
    for name in [
        "a".repeat(253),
        format!("{}-{}", "a".repeat(202), "b".repeat(50)),
    ] {
        let event = release_event_name(&name, uid);
        assert!(event.len() <= 253, "{} characters", event.len());
        assert!(event.ends_with(uid));
        assert!(
            event
                .split('.')
                .all(|seg| !seg.is_empty() && !seg.starts_with('-') && !seg.ends_with('-')),
            "{event}"
        );
    }
}
