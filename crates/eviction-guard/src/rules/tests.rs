use super::*;
use crate::storm::{Mode, NodeState, Protection, StormConfig, evaluate};
use ballast_runtime::admission::decode;
use chrono::{TimeZone, Utc};

fn fixture(name: &str) -> PodRequest<'static> {
    let text = match name {
        "delete-taint" => {
            include_str!("../../tests/data/pod-delete-node-controller-taint-eviction.json")
        }
        "delete-user" => include_str!("../../tests/data/pod-delete-user.json"),
        "eviction" => include_str!("../../tests/data/pod-eviction-create.json"),
        "status-not-ready" => {
            include_str!("../../tests/data/pod-status-update-node-controller-not-ready.json")
        }
        "status-disruption" => include_str!(
            "../../tests/data/pod-status-update-node-controller-disruption-target.json"
        ),
        "status-ready" => include_str!("../../tests/data/pod-status-update-ready.json"),
        "create" => include_str!("../../tests/data/pod-create.json"),
        "create-dry-run" => include_str!("../../tests/data/pod-create-dry-run.json"),
        other => panic!("no fixture {other}"),
    };
    decode(text.as_bytes()).expect("fixture")
}

fn node(name: &str, ready: bool) -> NodeState {
    NodeState {
        name: name.to_owned(),
        ready,
        since: Some(Utc.with_ymd_and_hms(2026, 11, 23, 8, 59, 13).unwrap()),
        reason: if ready {
            "KubeletReady"
        } else {
            "NodeStatusUnknown"
        }
        .to_owned(),
        zone: None,
        out_of_service: false,
    }
}

/// node-a, node-b, node-c NotReady (a storm with the default threshold), node-d, node-e Ready.
fn snapshot_with(mode: Mode, edit: impl FnOnce(&mut Vec<NodeState>)) -> Snapshot {
    let mut nodes = vec![
        node("node-a", false),
        node("node-b", false),
        node("node-c", false),
        node("node-d", true),
        node("node-e", true),
    ];
    edit(&mut nodes);
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
    let protection = evaluate(
        &StormConfig::default(),
        mode,
        &nodes,
        now,
        &Protection::default(),
    );
    Snapshot {
        synced: true,
        protection,
        workers: std::sync::Arc::new(nodes.into_iter().map(|n| (n.name.clone(), n)).collect()),
    }
}

fn storm() -> Snapshot {
    snapshot_with(Mode::Auto, |_| {})
}

fn on_node(node: &str) -> PodFacts {
    PodFacts {
        node: Some(node.to_owned()),
        ..PodFacts::default()
    }
}

fn deny_code(v: &Verdict) -> Option<u16> {
    match v {
        Verdict::Deny { code, .. } => Some(*code),
        Verdict::Allow { .. } => None,
    }
}

fn allowed_why(v: &Verdict) -> Option<Allowed> {
    match v {
        Verdict::Allow { why, .. } => Some(*why),
        Verdict::Deny { .. } => None,
    }
}

fn message(v: &Verdict) -> &str {
    match v {
        Verdict::Deny { message, .. } => message,
        Verdict::Allow { .. } => panic!("expected a denial, got {v:?}"),
    }
}

#[test]
fn denies_taint_eviction_delete_of_pod_on_notready_node_during_storm_with_403() {
    let v = review(&fixture("delete-taint"), None, &storm(), &Policy::default());
    assert_eq!(deny_code(&v), Some(403));
    assert_eq!(v.op(), Some(Operation::Delete));
    let msg = message(&v);
    assert!(msg.starts_with("eviction-guard refused deletion of pod fixtures/web-a: node node-a is NotReady (NodeStatusUnknown) since 2026-11-23T08:59:13Z"), "{msg}");
    assert!(
        msg.contains("3 of 5 worker nodes NotReady within 5m"),
        "{msg}"
    );
    assert!(
        msg.contains("ballast.control.v1.ControlService/SetMode"),
        "{msg}"
    );
    assert!(msg.contains("/callback/disable-interception"), "{msg}");
    assert!(
        msg.contains("once protection lifts for a node still NotReady and tainted NoExecute, eviction-guard completes the node controller's refused evictions"),
        "says that lifting protection releases the refused eviction: {msg}"
    );
    let off = Policy {
        after_lift: crate::release::after_lift(&crate::release::ReleaseConfig {
            enabled: false,
            ..Default::default()
        }),
        ..Policy::default()
    };
    let v = review(&fixture("delete-taint"), None, &storm(), &off);
    assert!(
        message(&v).contains("lifting protection evicts nothing by itself"),
        "{}",
        message(&v)
    );
}

#[test]
fn denies_eviction_of_pod_on_notready_node_during_storm_with_retryable_429() {
    let v = review(
        &fixture("eviction"),
        Some(&on_node("node-b")),
        &storm(),
        &Policy::default(),
    );
    assert_eq!(deny_code(&v), Some(429));
    assert_eq!(v.op(), Some(Operation::Eviction));
    assert!(message(&v).contains("refused eviction of pod fixtures/drain-me: node node-b"));
}

#[test]
fn denies_node_controller_marking_pod_not_ready_and_disruption_target() {
    for name in ["status-not-ready", "status-disruption"] {
        let v = review(&fixture(name), None, &storm(), &Policy::default());
        assert_eq!(deny_code(&v), Some(403), "{name}");
        assert_eq!(v.op(), Some(Operation::Status), "{name}");
    }
}

#[test]
fn allows_status_updates_when_status_interception_is_off() {
    let policy = Policy {
        intercept_status: false,
        ..Policy::default()
    };
    for name in ["status-not-ready", "status-disruption"] {
        let v = review(&fixture(name), None, &storm(), &policy);
        assert_eq!(allowed_why(&v), Some(Allowed::NotGuarded), "{name}");
    }
}

#[test]
fn allows_status_update_marking_pod_ready_and_pod_creates() {
    for name in ["status-ready", "create", "create-dry-run"] {
        let v = review(&fixture(name), None, &storm(), &Policy::default());
        assert_eq!(
            v,
            Verdict::Allow {
                op: None,
                why: Allowed::NotGuarded
            },
            "{name}"
        );
    }
}

#[test]
fn denies_update_adding_deletion_timestamp_but_not_other_updates() {
    let mut req = fixture("status-ready");
    req.sub_resource = None;
    req.operation = AdmissionOp::Update;
    let old = req.object.clone().expect("object");
    let mut new = old.clone();
    new.metadata.deletion_grace_period_seconds = Some(30);
    req.old_object = Some(old.clone());
    req.object = Some(new);
    let v = review(&req, None, &storm(), &Policy::default());
    assert_eq!(deny_code(&v), Some(403));
    assert!(message(&v).contains("refused marking for deletion of pod fixtures/web-a"));

    req.object = Some(old);
    let v = review(&req, None, &storm(), &Policy::default());
    assert_eq!(allowed_why(&v), Some(Allowed::NotGuarded));
}

#[test]
fn allows_delete_of_pod_on_healthy_node_during_storm() {
    let v = review(
        &fixture("eviction"),
        Some(&on_node("node-d")),
        &storm(),
        &Policy::default(),
    );
    assert_eq!(allowed_why(&v), Some(Allowed::NodeReady));
}

#[test]
fn allows_delete_of_pod_whose_node_object_is_gone() {
    let snap = snapshot_with(Mode::Auto, |nodes| {
        nodes.push(node("node-f", false));
    });
    let mut snap_gone = snap.clone();
    std::sync::Arc::make_mut(&mut snap_gone.workers).remove("node-a");
    let v = review(
        &fixture("delete-taint"),
        None,
        &snap_gone,
        &Policy::default(),
    );
    assert_eq!(allowed_why(&v), Some(Allowed::NodeGone));
    // and the same request is refused while the node is still there
    assert_eq!(
        deny_code(&review(
            &fixture("delete-taint"),
            None,
            &snap,
            &Policy::default()
        )),
        Some(403)
    );
}

#[test]
fn allows_delete_of_pod_on_out_of_service_node() {
    let snap = snapshot_with(Mode::Auto, |nodes| nodes[0].out_of_service = true);
    assert!(snap.protection.protecting);
    let v = review(&fixture("delete-taint"), None, &snap, &Policy::default());
    assert_eq!(allowed_why(&v), Some(Allowed::OutOfService));
}

#[test]
fn allows_exempt_users_and_groups() {
    let by_user = Policy {
        exempt_users: ["system:serviceaccount:kube-system:node-controller".to_owned()].into(),
        ..Policy::default()
    };
    let by_group = Policy {
        exempt_groups: ["system:masters".to_owned()].into(),
        ..Policy::default()
    };
    let v = review(&fixture("delete-taint"), None, &storm(), &by_user);
    assert_eq!(allowed_why(&v), Some(Allowed::Exempt));
    let v = review(
        &fixture("eviction"),
        Some(&on_node("node-a")),
        &storm(),
        &by_group,
    );
    assert_eq!(allowed_why(&v), Some(Allowed::Exempt));
    // the group exemption does not cover the node controller
    let v = review(&fixture("delete-taint"), None, &storm(), &by_group);
    assert_eq!(deny_code(&v), Some(403));
}

#[test]
fn allows_eviction_of_single_failed_node_pods_without_storm() {
    let snap = snapshot_with(Mode::Auto, |nodes| {
        // Ready for an hour: no storm ending either
        let long_ago = Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap();
        for n in &mut nodes[1..3] {
            n.ready = true;
            n.since = Some(long_ago);
        }
    });
    assert!(!snap.protection.protecting);
    let v = review(
        &fixture("eviction"),
        Some(&on_node("node-a")),
        &snap,
        &Policy::default(),
    );
    assert_eq!(allowed_why(&v), Some(Allowed::NotProtecting));
}

#[test]
fn disabled_mode_allows_and_forced_mode_denies_without_storm() {
    let disabled = snapshot_with(Mode::Disabled, |_| {});
    let v = review(
        &fixture("delete-taint"),
        None,
        &disabled,
        &Policy::default(),
    );
    assert_eq!(allowed_why(&v), Some(Allowed::NotProtecting));

    let forced = snapshot_with(Mode::Forced, |nodes| {
        nodes[1].ready = true;
        nodes[2].ready = true;
    });
    let v = review(&fixture("delete-taint"), None, &forced, &Policy::default());
    assert_eq!(deny_code(&v), Some(403));
    assert!(message(&v).contains("mode forced: interception forced"));
}

#[test]
fn allows_eviction_of_pod_that_was_not_found_and_unscheduled_pod_delete() {
    let v = review(&fixture("eviction"), None, &storm(), &Policy::default());
    assert_eq!(allowed_why(&v), Some(Allowed::PodUnknown));
    let v = review(&fixture("delete-user"), None, &storm(), &Policy::default());
    assert_eq!(allowed_why(&v), Some(Allowed::Unscheduled));
}

#[test]
fn dry_run_delete_gets_the_same_decision() {
    let mut req = fixture("delete-taint");
    req.dry_run = Some(true);
    assert_eq!(
        review(&req, None, &storm(), &Policy::default()),
        review(&fixture("delete-taint"), None, &storm(), &Policy::default())
    );
}

#[test]
fn pod_facts_read_the_fixture_pod() {
    let req = fixture("status-disruption");
    let Intent::Guarded(Operation::Status, Some(f)) = classify(&req, &Policy::default()) else {
        panic!("status update not guarded");
    };
    assert_eq!(f.node.as_deref(), Some("node-a"));
    assert_eq!(f.ready, Some(false));
    assert!(f.disruption_target);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "deletionGracePeriodSeconds": 30},
        "spec": {"nodeName": "node-x", "containers": []},
        "status": {"phase": "Failed", "conditions": [{"type": "Ready", "status": "False"}]}
    }))
    .unwrap();
    let f = PodFacts::from_pod(&pod);
    assert_eq!(f.node.as_deref(), Some("node-x"));
    assert_eq!(f.deletion_grace, Some(30));
    assert_eq!(f.phase.as_deref(), Some("Failed"));
    assert_eq!(f.ready, Some(false));
}
