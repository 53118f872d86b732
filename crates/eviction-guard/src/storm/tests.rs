use super::*;
use chrono::TimeZone;

fn t(min: i64, sec: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
        + chrono::Duration::minutes(min)
        + chrono::Duration::seconds(sec)
}

fn ready(name: &str) -> NodeState {
    NodeState {
        name: name.to_owned(),
        ready: true,
        since: Some(t(-60, 0)),
        reason: "KubeletReady".to_owned(),
        zone: None,
        out_of_service: false,
    }
}

fn down(name: &str, at: DateTime<Utc>) -> NodeState {
    NodeState {
        ready: false,
        since: Some(at),
        reason: "NodeStatusUnknown".to_owned(),
        ..ready(name)
    }
}

fn in_zone(mut n: NodeState, zone: &str) -> NodeState {
    n.zone = Some(zone.to_owned());
    n
}

/// `down` nodes failing at the given minute offsets, the rest of `total` Ready.
fn cluster(total: usize, down_at: &[i64]) -> Vec<NodeState> {
    (0..total)
        .map(|i| match down_at.get(i) {
            Some(m) => down(&format!("node-{i}"), t(*m, 0)),
            None => ready(&format!("node-{i}")),
        })
        .collect()
}

fn names(set: &BTreeSet<String>) -> Vec<&str> {
    set.iter().map(String::as_str).collect()
}

#[test]
fn storm_detection_table() {
    struct Case {
        name: &'static str,
        nodes: Vec<NodeState>,
        mode: Mode,
        cfg: StormConfig,
        protecting: bool,
        protected: usize,
        reason: &'static str,
    }
    let cfg = StormConfig::default();
    let cases = vec![
        Case {
            name: "all ready",
            nodes: cluster(10, &[]),
            mode: Mode::Auto,
            cfg: cfg.clone(),
            protecting: false,
            protected: 0,
            reason: "all 10 worker nodes Ready",
        },
        Case {
            name: "single failed node is ordinary",
            nodes: cluster(10, &[0]),
            mode: Mode::Auto,
            cfg: cfg.clone(),
            protecting: false,
            protected: 0,
            reason: "1 of 10 worker nodes NotReady: no storm (threshold 3 within 5m)",
        },
        Case {
            name: "three within the window start a storm",
            nodes: cluster(10, &[0, 2, 4]),
            mode: Mode::Auto,
            cfg: cfg.clone(),
            protecting: true,
            protected: 3,
            reason: "3 of 10 worker nodes NotReady within 5m",
        },
        Case {
            name: "three spread wider than the window are no storm",
            nodes: cluster(10, &[0, 4, 8]),
            mode: Mode::Auto,
            cfg: cfg.clone(),
            protecting: false,
            protected: 0,
            reason: "3 of 10 worker nodes NotReady: no storm (threshold 3 within 5m)",
        },
        Case {
            name: "a storm found from transition times protects older NotReady nodes too",
            nodes: cluster(10, &[-30, 0, 1, 2]),
            mode: Mode::Auto,
            cfg: cfg.clone(),
            protecting: true,
            protected: 4,
            reason: "4 of 10 worker nodes NotReady within 5m",
        },
        Case {
            name: "disabled never protects",
            nodes: cluster(10, &[0, 1, 2]),
            mode: Mode::Disabled,
            cfg: cfg.clone(),
            protecting: false,
            protected: 0,
            reason: "interception disabled; 3 of 10 worker nodes NotReady",
        },
        Case {
            name: "forced protects a single NotReady node",
            nodes: cluster(10, &[0]),
            mode: Mode::Forced,
            cfg: cfg.clone(),
            protecting: true,
            protected: 1,
            reason: "interception forced; protecting pods on 1 NotReady worker node",
        },
        Case {
            name: "minimum fraction not met keeps protection off",
            nodes: cluster(10, &[0, 1, 2]),
            mode: Mode::Auto,
            cfg: StormConfig {
                min_fraction: Some(0.55),
                ..cfg.clone()
            },
            protecting: false,
            protected: 0,
            reason: "3 of 10 worker nodes NotReady: no storm (threshold 3 within 5m, at least 55% of workers)",
        },
        Case {
            name: "minimum fraction met turns protection on",
            nodes: cluster(5, &[0, 1, 2]),
            mode: Mode::Auto,
            cfg: StormConfig {
                min_fraction: Some(0.55),
                ..cfg.clone()
            },
            protecting: true,
            protected: 3,
            reason: "3 of 5 worker nodes NotReady within 5m",
        },
        Case {
            name: "per zone: a storm in one zone protects only that zone",
            nodes: vec![
                in_zone(down("a-1", t(0, 0)), "a"),
                in_zone(down("a-2", t(0, 10)), "a"),
                in_zone(down("a-3", t(0, 20)), "a"),
                in_zone(ready("a-4"), "a"),
                in_zone(down("b-1", t(0, 0)), "b"),
                in_zone(down("b-2", t(0, 0)), "b"),
                in_zone(ready("b-3"), "b"),
            ],
            mode: Mode::Auto,
            cfg: StormConfig {
                per_zone: true,
                ..cfg.clone()
            },
            protecting: true,
            protected: 3,
            reason: "3 of 4 worker nodes in zone a NotReady within 5m",
        },
        Case {
            name: "per zone: failures split across zones are no storm",
            nodes: vec![
                in_zone(down("a-1", t(0, 0)), "a"),
                in_zone(down("a-2", t(0, 0)), "a"),
                in_zone(down("b-1", t(0, 0)), "b"),
                in_zone(down("b-2", t(0, 0)), "b"),
            ],
            mode: Mode::Auto,
            cfg: StormConfig {
                per_zone: true,
                ..cfg.clone()
            },
            protecting: false,
            protected: 0,
            reason: "4 of 4 worker nodes NotReady: no storm (threshold 3 within 5m)",
        },
    ];
    for c in cases {
        let got = evaluate(&c.cfg, c.mode, &c.nodes, t(10, 0), &Protection::default());
        assert_eq!(got.protecting, c.protecting, "{}: protecting", c.name);
        assert_eq!(
            got.protected.len(),
            c.protected,
            "{}: protected {:?}",
            c.name,
            got.protected
        );
        assert_eq!(got.reason, c.reason, "{}: reason", c.name);
        assert_eq!(got.mode, c.mode, "{}: mode", c.name);
    }
}

#[test]
fn protection_since_is_when_the_threshold_was_reached() {
    let got = evaluate(
        &StormConfig::default(),
        Mode::Auto,
        &cluster(10, &[0, 2, 4, 6]),
        t(10, 0),
        &Protection::default(),
    );
    assert_eq!(got.since, Some(t(4, 0)));
    assert_eq!(
        names(&got.notready),
        ["node-0", "node-1", "node-2", "node-3"]
    );
}

#[test]
fn storm_lasting_longer_than_the_window_keeps_protection_on() {
    let cfg = StormConfig::default();
    let start = evaluate(
        &cfg,
        Mode::Auto,
        &cluster(10, &[0, 1, 2]),
        t(3, 0),
        &Protection::default(),
    );
    assert!(start.protecting);
    // an hour later one of them recovered and another failed: 3 still NotReady, but no three of
    // them failed within 5m of each other any more.
    let mut nodes = cluster(10, &[0, 1, 2]);
    nodes[0] = ready("node-0");
    nodes[5] = down("node-5", t(60, 0));
    let later = evaluate(&cfg, Mode::Auto, &nodes, t(61, 0), &start);
    assert!(later.protecting, "{}", later.reason);
    assert_eq!(later.since, start.since);
    assert_eq!(names(&later.protected), ["node-1", "node-2", "node-5"]);
    assert_eq!(
        later.reason,
        "3 of 10 worker nodes still NotReady (threshold 3)"
    );
    // without the previous state the same nodes are no storm: hysteresis is what kept it on.
    let fresh = evaluate(&cfg, Mode::Auto, &nodes, t(61, 0), &Protection::default());
    assert!(!fresh.protecting);
}

fn back(name: &str, at: DateTime<Utc>) -> NodeState {
    NodeState {
        since: Some(at),
        ..ready(name)
    }
}

#[test]
fn protection_ends_by_itself_once_fewer_than_threshold_stay_notready_for_the_settle_period() {
    let cfg = StormConfig::default();
    let on = evaluate(
        &cfg,
        Mode::Auto,
        &cluster(10, &[0, 1, 2]),
        t(3, 0),
        &Protection::default(),
    );
    assert!(on.protecting);
    // node-2 back at 20:00: the count is under the threshold from then
    let mut nodes = cluster(10, &[0, 1, 2]);
    nodes[2] = back("node-2", t(20, 0));
    let ending = evaluate(&cfg, Mode::Auto, &nodes, t(20, 1), &on);
    assert!(ending.protecting, "one return does not end a storm");
    assert_eq!(names(&ending.protected), ["node-0", "node-1"]);
    assert_eq!(ending.ending.get(""), Some(&t(20, 0)));
    assert_eq!(ending.next_change(cfg.settle), Some(t(21, 0)));
    assert_eq!(
        ending.reason,
        "storm ending: 2 of 10 worker nodes NotReady, under the threshold of 3 since 09:20:00Z; \
         pods on those still NotReady stay protected until it has held for 1m"
    );
    let still = evaluate(&cfg, Mode::Auto, &nodes, t(20, 59), &ending);
    assert!(still.protecting);
    let off = evaluate(&cfg, Mode::Auto, &nodes, t(21, 0), &still);
    assert!(!off.protecting);
    assert!(off.protected.is_empty());
    assert!(off.storms.is_empty() && off.ending.is_empty());
    assert_eq!(off.next_change(cfg.settle), None);
    assert_eq!(
        off.since,
        Some(t(21, 0)),
        "since says when protection turned off"
    );
    assert_eq!(
        off.reason,
        "2 of 10 worker nodes NotReady: no storm (threshold 3 within 5m)"
    );
}

#[test]
fn a_partition_healing_over_seconds_ends_the_storm_a_settle_period_after_the_count_fell() {
    let cfg = StormConfig::default();
    let on = evaluate(
        &cfg,
        Mode::Auto,
        &cluster(5, &[0, 0, 0]),
        t(5, 0),
        &Protection::default(),
    );
    // the kubelets come back 0, 2 and 3 seconds apart; the guard sees the second one late
    let mut nodes = cluster(5, &[0, 0, 0]);
    nodes[0] = back("node-0", t(10, 0));
    nodes[1] = back("node-1", t(10, 2));
    let seen = evaluate(&cfg, Mode::Auto, &nodes, t(10, 5), &on);
    assert!(seen.protecting);
    assert_eq!(names(&seen.protected), ["node-2"]);
    assert_eq!(
        seen.ending.get(""),
        Some(&t(10, 0)),
        "read from the first return, the node's own Ready time"
    );
    nodes[2] = back("node-2", t(10, 3));
    let all_back = evaluate(&cfg, Mode::Auto, &nodes, t(10, 6), &seen);
    assert!(all_back.protected.is_empty(), "nobody left to protect");
    assert_eq!(all_back.ending.get(""), Some(&t(10, 0)));
    // failing again before the storm is over: still the same storm
    nodes[0] = down("node-0", t(10, 30));
    nodes[1] = down("node-1", t(10, 31));
    nodes[2] = down("node-2", t(10, 32));
    let again = evaluate(&cfg, Mode::Auto, &nodes, t(10, 33), &all_back);
    assert!(again.protecting);
    assert!(again.ending.is_empty());
    assert_eq!(again.storms.get(""), on.storms.get(""));
}

#[test]
fn out_of_service_nodes_count_towards_the_storm_but_are_never_protected() {
    let mut nodes = cluster(10, &[0, 1, 2]);
    nodes[1].out_of_service = true;
    for mode in [Mode::Auto, Mode::Forced] {
        let got = evaluate(
            &StormConfig::default(),
            mode,
            &nodes,
            t(5, 0),
            &Protection::default(),
        );
        assert!(got.protecting);
        assert_eq!(names(&got.protected), ["node-0", "node-2"], "{mode}");
    }
}

#[test]
fn storm_is_tracked_while_disabled_so_auto_resumes_with_the_real_state() {
    let cfg = StormConfig::default();
    let nodes = cluster(10, &[0, 1, 2]);
    let disabled = evaluate(
        &cfg,
        Mode::Disabled,
        &nodes,
        t(3, 0),
        &Protection::default(),
    );
    assert!(!disabled.protecting);
    assert_eq!(disabled.storms.len(), 1);
    let auto = evaluate(&cfg, Mode::Auto, &nodes, t(4, 0), &disabled);
    assert!(auto.protecting);
    assert_eq!(auto.protected.len(), 3);
}

#[test]
fn unknown_transition_time_counts_as_now() {
    let mut nodes = cluster(10, &[0, 0, 0]);
    for n in &mut nodes[..3] {
        n.since = None;
    }
    let got = evaluate(
        &StormConfig::default(),
        Mode::Auto,
        &nodes,
        t(9, 0),
        &Protection::default(),
    );
    assert!(got.protecting);
    assert_eq!(got.since, Some(t(9, 0)));
}

#[test]
fn default_selector_excludes_control_plane_and_master_nodes() {
    let sel: Selector = DEFAULT_WORKER_SELECTOR.parse().unwrap();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert!(sel.matches(&labels(&[("node-role.kubernetes.io/worker", "")])));
    assert!(sel.matches(&labels(&[])));
    assert!(!sel.matches(&labels(&[("node-role.kubernetes.io/control-plane", "")])));
    assert!(!sel.matches(&labels(&[("node-role.kubernetes.io/master", "")])));
    let custom: Selector = "pool=general,tier!=system".parse().unwrap();
    assert!(custom.matches(&labels(&[("pool", "general")])));
    assert!(!custom.matches(&labels(&[("pool", "general"), ("tier", "system")])));
    assert!(!custom.matches(&labels(&[("pool", "gpu")])));
    assert!("!".parse::<Selector>().is_err());
}

#[test]
fn node_health_reads_ready_condition_zone_and_out_of_service_taint() {
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
        "spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]},
        "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
             "lastTransitionTime": "2026-11-23T09:00:00Z"}
        ]}
    }))
    .unwrap();
    let h = NodeState::from_node(&node);
    assert_eq!(h.name, "n1");
    assert!(!h.ready);
    assert_eq!(h.since, Some(t(0, 0)));
    assert_eq!(h.reason, "NodeStatusUnknown");
    assert_eq!(h.zone.as_deref(), Some("z1"));
    assert!(h.out_of_service);

    let registering: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "n2"}})).unwrap();
    let h = NodeState::from_node(&registering);
    assert!(h.ready, "no Ready condition yet is not evidence of failure");
    assert!(!h.out_of_service);
}

#[test]
fn per_zone_storm_keeps_its_zone_protected_while_the_zone_stays_down() {
    let cfg = StormConfig {
        per_zone: true,
        ..StormConfig::default()
    };
    let mut nodes = vec![
        in_zone(down("a-1", t(0, 0)), "a"),
        in_zone(down("a-2", t(1, 0)), "a"),
        in_zone(down("a-3", t(2, 0)), "a"),
        in_zone(ready("a-4"), "a"),
        in_zone(ready("b-1"), "b"),
    ];
    let on = evaluate(&cfg, Mode::Auto, &nodes, t(3, 0), &Protection::default());
    assert_eq!(on.storms.keys().collect::<Vec<_>>(), ["a"]);
    // an hour on, zone a has swapped one failed node for another; b loses a node on its own
    nodes[0] = in_zone(ready("a-1"), "a");
    nodes[3] = in_zone(down("a-4", t(60, 0)), "a");
    nodes[4] = in_zone(down("b-1", t(60, 0)), "b");
    let later = evaluate(&cfg, Mode::Auto, &nodes, t(61, 0), &on);
    assert!(later.protecting);
    assert_eq!(
        names(&later.protected),
        ["a-2", "a-3", "a-4"],
        "b-1 alone is ordinary"
    );
    assert_eq!(
        later.reason,
        "3 of 4 worker nodes in zone a still NotReady (threshold 3)"
    );
}
