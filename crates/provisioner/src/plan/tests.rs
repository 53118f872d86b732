use super::*;
use crate::objects::*;
use serde_json::json;

const GI: u64 = 1 << 30;

fn mk_class(name: &str, provisioner: &str) -> Arc<StorageClass> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "provisioner": provisioner,
            "parameters": {"archiveOnDelete": "true"},
        }))
        .unwrap(),
    )
}

struct ClaimB(serde_json::Value);

/// A claim of `class`, already handed by the PV controller to the class's provisioner.
fn mk_claim(name: &str, class: &str, request: &str) -> ClaimB {
    let provisioner = match class {
        "nfs" => PROVISIONER_NFS,
        "hostpath" => PROVISIONER_HOSTPATH,
        _ => "example.com/other",
    };
    ClaimB(json!({
        "metadata": {"namespace": "ns", "name": name, "uid": format!("uid-{name}"),
                     "annotations": {ANN_STORAGE_PROVISIONER: provisioner,
                                     ANN_BETA_STORAGE_PROVISIONER: provisioner}},
        "spec": {
            "storageClassName": class,
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": request}},
        },
        "status": {"phase": "Pending"},
    }))
}

impl ClaimB {
    fn volume(mut self, pv: &str) -> Self {
        self.0["spec"]["volumeName"] = json!(pv);
        self
    }
    fn modes(mut self, modes: &[&str]) -> Self {
        self.0["spec"]["accessModes"] = json!(modes);
        self
    }
    fn node(mut self, node: &str) -> Self {
        self.0["metadata"]["annotations"][ANN_SELECTED_NODE] = json!(node);
        self
    }
    fn bound(mut self) -> Self {
        self.0["status"]["phase"] = json!("Bound");
        self
    }
    fn lost(mut self) -> Self {
        self.0["status"]["phase"] = json!("Lost");
        self
    }
    fn not_handed_over(mut self) -> Self {
        self.0["metadata"]["annotations"] = json!({});
        self
    }
    fn annotated(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["annotations"][key] = json!(value);
        self
    }
    fn terminating(mut self) -> Self {
        self.0["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        self
    }
    fn build(self) -> Arc<CachedClaim> {
        Arc::new(serde_json::from_value(self.0).unwrap())
    }
}

struct VolB(serde_json::Value);

fn mk_pv(name: &str, class: &str, capacity: &str) -> VolB {
    VolB(json!({
        "metadata": {"name": name, "annotations": {}},
        "spec": {
            "storageClassName": class,
            "capacity": {"storage": capacity},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
        },
        "status": {"phase": "Available"},
    }))
}

impl VolB {
    fn modes(mut self, modes: &[&str]) -> Self {
        self.0["spec"]["accessModes"] = json!(modes);
        self
    }
    fn claimed_by(mut self, claim: &str, uid: &str) -> Self {
        self.0["spec"]["claimRef"] = json!({"namespace": "ns", "name": claim, "uid": uid});
        self.0["status"]["phase"] = json!("Bound");
        self
    }
    fn released(mut self) -> Self {
        self.0["status"]["phase"] = json!("Released");
        self
    }
    fn on_node(mut self, node: &str) -> Self {
        self.0["metadata"]["labels"] = json!({LABEL_NODE: node});
        self.0["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": LABEL_HOSTNAME, "operator": "In", "values": [node]}]}
        ]}});
        self
    }
    fn ours(mut self, backend: Backend, directory: &str) -> Self {
        self.0["metadata"]["annotations"][ANN_PROVISIONED_BY] =
            json!(Provisioners::default().name(backend));
        self.0["metadata"]["annotations"][ANN_DIRECTORY] = json!(directory);
        self
    }
    fn policy(mut self, policy: &str) -> Self {
        self.0["spec"]["persistentVolumeReclaimPolicy"] = json!(policy);
        self
    }
    fn build(self) -> Arc<CachedVolume> {
        Arc::new(serde_json::from_value(self.0).unwrap())
    }
}

fn ready(free: u64) -> NodeFacts {
    NodeFacts {
        ready: true,
        free_bytes: Some(free),
    }
}

fn world(volumes: Vec<Arc<CachedVolume>>) -> World {
    World {
        claims: vec![],
        volumes,
        classes: vec![
            mk_class("hostpath", PROVISIONER_HOSTPATH),
            mk_class("nfs", PROVISIONER_NFS),
            mk_class("other", "example.com/other"),
        ],
        nodes: [
            ("node-1".to_owned(), ready(100 * GI)),
            ("node-2".to_owned(), ready(100 * GI)),
        ]
        .into_iter()
        .collect(),
        provisioners: Arc::default(),
    }
}

fn provision_nfs(volume: &str, claim: &str, capacity: u64) -> ClaimAction {
    ClaimAction::Provision(Provision {
        volume: volume.into(),
        directory: format!("{volume}_ns_{claim}"),
        backend: Backend::Nfs,
        provisioner: PROVISIONER_NFS.into(),
        class: "nfs".into(),
        node: None,
        capacity,
    })
}

/// The node a decision provisions on, if it provisions.
fn node_of(action: &ClaimAction) -> Option<String> {
    match action {
        ClaimAction::Provision(p) => p.node.clone(),
        _ => None,
    }
}

/// (what the case shows, claim, volumes, expected action)
type Case = (
    &'static str,
    Arc<CachedClaim>,
    Vec<Arc<CachedVolume>>,
    ClaimAction,
);

#[test]
fn binding_decisions_follow_the_seed_rules() {
    let cases: Vec<Case> = vec![
        (
            "named PV of the same class is left for the PV controller to bind",
            mk_claim("c", "nfs", "1Gi").volume("pv-a").build(),
            vec![mk_pv("pv-a", "nfs", "2Gi").build()],
            ClaimAction::Nothing("the PV controller binds the claim to the volume it names"),
        ),
        (
            "a claim the PV controller has not handed over is not ours yet",
            mk_claim("c", "nfs", "1Gi").not_handed_over().build(),
            vec![],
            ClaimAction::Nothing("waiting for the PV controller to hand the claim over"),
        ),
        (
            "the beta annotation alone hands a claim over (older controllers)",
            mk_claim("c", "nfs", "1Gi")
                .not_handed_over()
                .annotated(ANN_BETA_STORAGE_PROVISIONER, PROVISIONER_NFS)
                .build(),
            vec![],
            provision_nfs("pvc-uid-c", "c", GI),
        ),
        (
            "a claim handed to another provisioner is not ours",
            mk_claim("c", "nfs", "1Gi")
                .not_handed_over()
                .annotated(ANN_STORAGE_PROVISIONER, "example.com/other")
                .build(),
            vec![],
            ClaimAction::Nothing("waiting for the PV controller to hand the claim over"),
        ),
        (
            "PV already claimed by another claim does not stop provisioning",
            mk_claim("c", "nfs", "1Gi").build(),
            vec![
                mk_pv("taken", "nfs", "1Gi")
                    .claimed_by("someone", "uid-x")
                    .build(),
            ],
            provision_nfs("pvc-uid-c", "c", GI),
        ),
        (
            "a volume provisioned for this claim is left for the PV controller to bind",
            mk_claim("c", "nfs", "1Gi").build(),
            vec![
                mk_pv("pvc-uid-c", "nfs", "1Gi")
                    .claimed_by("c", "uid-c")
                    .build(),
            ],
            ClaimAction::Nothing("volume provisioned; the PV controller binds it"),
        ),
        (
            "already bound claim is left alone",
            mk_claim("c", "nfs", "1Gi").volume("pv-a").bound().build(),
            vec![mk_pv("pv-a", "nfs", "1Gi").claimed_by("c", "uid-c").build()],
            ClaimAction::Nothing("already bound"),
        ),
        (
            "a bound claim that had a binding problem gets the annotation cleared",
            mk_claim("c", "nfs", "1Gi")
                .volume("pv-a")
                .bound()
                .annotated(ANN_BINDING_PROBLEM, "was too small")
                .build(),
            vec![mk_pv("pv-a", "nfs", "1Gi").claimed_by("c", "uid-c").build()],
            ClaimAction::ClearProblem,
        ),
        (
            "half-bound claim is left for the PV controller to finish",
            mk_claim("c", "nfs", "1Gi").volume("pv-a").build(),
            vec![mk_pv("pv-a", "nfs", "1Gi").claimed_by("c", "uid-c").build()],
            ClaimAction::Nothing("the PV controller binds the claim to its volume"),
        ),
        (
            "terminating claim is left alone",
            mk_claim("c", "nfs", "1Gi").terminating().build(),
            vec![],
            ClaimAction::Nothing("claim is terminating"),
        ),
        (
            "claim of a foreign class is left to its provisioner",
            mk_claim("c", "other", "1Gi").build(),
            vec![mk_pv("pv-a", "other", "1Gi").build()],
            ClaimAction::Nothing("storage class is not served by this provisioner"),
        ),
        (
            "named PV of another class is refused with a clear message",
            mk_claim("c", "nfs", "1Gi").volume("pv-h").build(),
            vec![mk_pv("pv-h", "hostpath", "1Gi").build()],
            ClaimAction::Refuse {
                reason: "StorageClassMismatch",
                message: "storage class mismatch: claim \"ns/c\" requests class \"nfs\" but \
                          PersistentVolume \"pv-h\" has class \"hostpath\"; the claim stays \
                          unbound until they match"
                    .into(),
            },
        ),
        (
            "named PV bound to another claim is refused",
            mk_claim("c", "nfs", "1Gi").volume("pv-a").build(),
            vec![mk_pv("pv-a", "nfs", "1Gi").claimed_by("d", "uid-d").build()],
            ClaimAction::Refuse {
                reason: "VolumeBoundToOtherClaim",
                message: "PersistentVolume \"pv-a\" is already bound to claim \"ns/d\"; claim \
                          \"ns/c\" stays unbound"
                    .into(),
            },
        ),
        (
            "named PV that is too small is refused",
            mk_claim("c", "nfs", "2Gi").volume("pv-a").build(),
            vec![mk_pv("pv-a", "nfs", "1Gi").build()],
            ClaimAction::Refuse {
                reason: "VolumeTooSmall",
                message: "PersistentVolume \"pv-a\" offers 1Gi but claim \"ns/c\" requests 2Gi; \
                          the claim stays unbound"
                    .into(),
            },
        ),
        (
            "named PV without the claim's access modes is refused",
            mk_claim("c", "nfs", "1Gi")
                .volume("pv-a")
                .modes(&["ReadWriteMany"])
                .build(),
            vec![mk_pv("pv-a", "nfs", "1Gi").modes(&["ReadOnlyMany"]).build()],
            ClaimAction::Refuse {
                reason: "AccessModeMismatch",
                message: "PersistentVolume \"pv-a\" does not offer the access modes \
                          [\"ReadWriteMany\"] claim \"ns/c\" asks for; the claim stays unbound"
                    .into(),
            },
        ),
        (
            "named PV that does not exist is provisioned under that name",
            mk_claim("c", "nfs", "1Gi").volume("my-pv").build(),
            vec![],
            provision_nfs("my-pv", "c", GI),
        ),
        (
            "Lost claim whose PV is gone is not given a new empty one",
            mk_claim("c", "nfs", "1Gi").volume("my-pv").lost().build(),
            vec![],
            ClaimAction::Nothing("claim is Lost: its volume is gone"),
        ),
        (
            "named PV with a traversal name is refused",
            mk_claim("c", "nfs", "1Gi").volume("..").build(),
            vec![],
            ClaimAction::Fail {
                message: "refusing volume name \"..\": it would leave the base directory".into(),
            },
        ),
        (
            "no fitting PV provisions pvc-<uid>",
            mk_claim("c", "nfs", "3Gi").build(),
            vec![mk_pv("small", "nfs", "1Gi").build()],
            provision_nfs("pvc-uid-c", "c", 3 * GI),
        ),
        (
            "claim without a storage request fails",
            {
                let mut c = mk_claim("c", "nfs", "1Gi");
                c.0["spec"]["resources"] = json!({});
                c.build()
            },
            vec![],
            ClaimAction::Fail {
                message: "claim has no valid spec.resources.requests.storage".into(),
            },
        ),
    ];
    for (name, claim, volumes, expected) in cases {
        let plan = decide_claim(&claim, &world(volumes));
        assert_eq!(plan, expected, "case: {name}");
    }
}

#[test]
fn nfs_work_and_warnings_belong_to_the_controller() {
    let w = world(vec![mk_pv("static-nfs", "nfs", "1Gi").build()]);
    let claim = mk_claim("c", "nfs", "1Gi").build();
    assert_eq!(
        decide_claim(&claim, &w),
        provision_nfs("pvc-uid-c", "c", GI)
    );
    let claim = mk_claim("c", "hostpath", "1Gi")
        .volume("static-nfs")
        .build();
    let plan = decide_claim(&claim, &w);
    assert!(matches!(plan, ClaimAction::Refuse { .. }), "{plan:?}");
}

#[test]
fn hostpath_honours_the_selected_node_of_wait_for_first_consumer() {
    let claim = mk_claim("c", "hostpath", "1Gi").node("node-2").build();
    let plan = decide_claim(&claim, &world(vec![]));
    let ClaimAction::Provision(p) = plan else {
        panic!("expected provision, got {plan:?}")
    };
    assert_eq!(p.node.as_deref(), Some("node-2"));
    assert_eq!(p.directory, "pvc-uid-c_ns_c");
    assert_eq!(p.backend, Backend::HostPath);
}

#[test]
fn hostpath_is_never_placed_on_a_notready_selected_node() {
    let mut w = world(vec![]);
    w.nodes.insert(
        "node-2".into(),
        NodeFacts {
            ready: false,
            free_bytes: Some(100 * GI),
        },
    );
    let claim = mk_claim("c", "hostpath", "1Gi").node("node-2").build();
    let plan = decide_claim(&claim, &w);
    assert_eq!(
        plan,
        ClaimAction::Reschedule {
            node: "node-2".into(),
            message: format!(
                "cannot provision on the selected node: node \"node-2\" is NotReady; hostPath \
                 volumes are never placed on a NotReady node; {RESCHEDULE}"
            )
        }
    );
}

#[test]
fn hostpath_is_never_placed_on_a_node_short_of_space_and_the_event_says_so() {
    let mut w = world(vec![]);
    w.nodes.insert("node-2".into(), ready(GI / 2));
    let claim = mk_claim("c", "hostpath", "1Gi").node("node-2").build();
    let ClaimAction::Reschedule { node, message } = decide_claim(&claim, &w) else {
        panic!("expected a reschedule")
    };
    assert_eq!(node, "node-2");
    assert_eq!(
        message,
        format!(
            "cannot provision on the selected node: node \"node-2\" has only 512Mi free under \
             the hostPath base directory but the claim requests 1Gi (free space is checked \
             before placing a hostPath volume); {RESCHEDULE}"
        )
    );
}

#[test]
fn hostpath_without_selected_node_picks_a_ready_node_with_space_consistently() {
    let mut w = world(vec![]);
    w.nodes.insert(
        "node-1".into(),
        NodeFacts {
            ready: false,
            free_bytes: Some(100 * GI),
        },
    );
    w.nodes.insert("node-3".into(), ready(GI / 4));
    w.nodes.insert(
        "node-4".into(),
        NodeFacts {
            ready: true,
            free_bytes: None,
        },
    );
    for i in 0..20 {
        let claim = mk_claim(&format!("c{i}"), "hostpath", "1Gi").build();
        let first = decide_claim(&claim, &w);
        assert_eq!(
            node_of(&first).as_deref(),
            Some("node-2"),
            "only node-2 fits"
        );
        assert_eq!(decide_claim(&claim, &w), first, "same input, same choice");
    }
}

#[test]
fn hostpath_spreads_claims_over_fitting_nodes() {
    let w = world(vec![]);
    let picked: std::collections::BTreeSet<_> = (0..20)
        .map(|i| {
            node_of(&decide_claim(
                &mk_claim(&format!("c{i}"), "hostpath", "1Gi").build(),
                &w,
            ))
        })
        .collect();
    assert_eq!(picked.len(), 2, "both nodes used: {picked:?}");
}

#[test]
fn hostpath_without_any_fitting_node_explains_each_node() {
    let mut w = world(vec![]);
    w.nodes.clear();
    w.nodes.insert(
        "a".into(),
        NodeFacts {
            ready: false,
            free_bytes: Some(GI),
        },
    );
    w.nodes.insert("b".into(), ready(1024));
    let ClaimAction::Fail { message } = decide_claim(&mk_claim("c", "hostpath", "1Gi").build(), &w)
    else {
        panic!("expected failure")
    };
    assert!(
        message.starts_with("no node can take a hostPath volume of 1Gi: node \"a\" is NotReady"),
        "{message}"
    );
    assert!(
        message.contains("node \"b\" has only 1Ki free"),
        "{message}"
    );
}

#[test]
fn hostpath_selected_node_without_an_agent_or_unknown_is_rescheduled() {
    let mut w = world(vec![]);
    w.nodes.insert(
        "bare".into(),
        NodeFacts {
            ready: true,
            free_bytes: None,
        },
    );
    for (node, why) in [
        ("bare", "has no provisioner agent reporting free space"),
        ("nowhere", "is not known"),
    ] {
        let claim = mk_claim("c", "hostpath", "1Gi").node(node).build();
        let ClaimAction::Reschedule { node: n, message } = decide_claim(&claim, &w) else {
            panic!("expected a reschedule for {node}")
        };
        assert_eq!(n, node);
        assert!(message.contains(why), "{message}");
    }
}

#[test]
fn volume_of_a_deleted_claim_is_deleted_and_its_node_agent_removes_the_directory() {
    let pv = mk_pv("pvc-1", "hostpath", "1Gi")
        .claimed_by("gone", "uid-gone")
        .released()
        .on_node("node-1")
        .ours(Backend::HostPath, "pvc-1_ns_gone")
        .build();
    let plan = decide_volume(&pv, &world(vec![]));
    assert_eq!(
        plan,
        VolumeAction::Delete {
            backend: Backend::HostPath,
            directory: Some("pvc-1_ns_gone".into()),
            archive: false
        }
    );
}

#[test]
fn nfs_volume_of_a_deleted_claim_is_archived_when_the_class_says_so() {
    let pv = mk_pv("pvc-1", "nfs", "1Gi")
        .claimed_by("gone", "uid-gone")
        .released()
        .ours(Backend::Nfs, "pvc-1_ns_gone")
        .build();
    let plan = decide_volume(&pv, &world(vec![]));
    assert!(
        matches!(plan, VolumeAction::Delete { archive: true, .. }),
        "{plan:?}"
    );
}

#[test]
fn retained_volume_is_kept() {
    let pv = mk_pv("pvc-1", "nfs", "1Gi")
        .claimed_by("gone", "uid-gone")
        .released()
        .ours(Backend::Nfs, "pvc-1_ns_gone")
        .policy("Retain")
        .build();
    assert_eq!(
        decide_volume(&pv, &world(vec![])),
        VolumeAction::Nothing("released volume is retained")
    );
}

#[test]
fn volume_in_use_or_not_ours_is_left_alone() {
    let mut w = world(vec![]);
    w.claims
        .push(mk_claim("c", "nfs", "1Gi").volume("pvc-1").bound().build());
    let used = mk_pv("pvc-1", "nfs", "1Gi")
        .claimed_by("c", "uid-c")
        .ours(Backend::Nfs, "pvc-1_ns_c")
        .build();
    assert_eq!(
        decide_volume(&used, &w),
        VolumeAction::Nothing("volume is not Released")
    );
    let manual = mk_pv("x", "nfs", "1Gi")
        .claimed_by("gone", "u")
        .released()
        .build();
    assert_eq!(
        decide_volume(&manual, &w),
        VolumeAction::Nothing("not provisioned by this provisioner")
    );
    // Released per the PV controller, but our cache still sees the claim holding it: wait.
    let racing = mk_pv("pvc-1", "nfs", "1Gi")
        .claimed_by("c", "uid-c")
        .released()
        .ours(Backend::Nfs, "pvc-1_ns_c")
        .build();
    assert_eq!(
        decide_volume(&racing, &w),
        VolumeAction::Nothing("a claim still holds the volume")
    );
}

#[test]
fn volume_provisioned_for_a_claim_that_bound_elsewhere_is_reclaimed() {
    let mut w = world(vec![]);
    w.claims
        .push(mk_claim("c", "nfs", "1Gi").volume("other").bound().build());
    let extra = mk_pv("pvc-uid-c", "nfs", "1Gi")
        .claimed_by("c", "uid-c")
        .released()
        .ours(Backend::Nfs, "pvc-uid-c_ns_c")
        .build();
    assert!(matches!(
        decide_volume(&extra, &w),
        VolumeAction::Delete { .. }
    ));
}

#[test]
fn orphan_scan_keeps_directories_with_a_volume_or_a_waiting_claim() {
    let mut w = world(vec![mk_pv("pvc-a", "nfs", "1Gi").build()]);
    w.claims.push(mk_claim("waiting", "nfs", "1Gi").build());
    w.claims
        .push(mk_claim("named", "nfs", "1Gi").volume("mine").build());
    let dirs: Vec<String> = [
        "pvc-a_ns_a",                 // its PV exists
        "pvc-uid-waiting_ns_waiting", // created before the PV; claim still pending
        "mine_ns_named",              // named PV not created yet
        "pvc-uid-old_ns_waiting",     // an earlier claim of the same name
        "pvc-b_ns_gone",              // nobody
        "archived-pvc-c_ns_x",        // archive, kept
        "lost+found",                 // not ours
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(
        orphans(&dirs, &w),
        vec![
            "pvc-uid-old_ns_waiting".to_owned(),
            "pvc-b_ns_gone".to_owned()
        ]
    );
}

#[test]
fn wait_for_first_consumer_class_waits_for_the_selected_node() {
    let mut w = world(vec![mk_pv("fits", "hostpath", "1Gi").build()]);
    let wffc = Arc::new(
        serde_json::from_value::<StorageClass>(json!({
            "metadata": {"name": "hostpath"},
            "provisioner": PROVISIONER_HOSTPATH,
            "volumeBindingMode": "WaitForFirstConsumer",
        }))
        .unwrap(),
    );
    w.classes[0] = wffc;
    // Handed over earlier, its selected node since removed to reschedule: wait again.
    let waiting = mk_claim("c", "hostpath", "1Gi").build();
    assert_eq!(
        decide_claim(&waiting, &w),
        ClaimAction::Nothing("waiting for a consumer to be scheduled")
    );
    let scheduled = mk_claim("c", "hostpath", "1Gi").node("node-1").build();
    let plan = decide_claim(&scheduled, &w);
    assert_eq!(node_of(&plan).as_deref(), Some("node-1"), "{plan:?}");
}

#[test]
fn a_hostpath_volume_without_its_node_label_gets_it_first() {
    let mut pv = (*mk_pv("pvc-1", "hostpath", "1Gi")
        .claimed_by("c", "uid-c")
        .released()
        .on_node("node-1")
        .ours(Backend::HostPath, "pvc-1_ns_c")
        .build())
    .clone();
    pv.node_label = None;
    assert_eq!(
        decide_volume(&pv, &world(vec![])),
        VolumeAction::Label("node-1".into()),
        "labelled before anything else, so its agent sees it"
    );
    let nfs = mk_pv("pvc-2", "nfs", "1Gi")
        .ours(Backend::Nfs, "pvc-2_ns_c")
        .build();
    assert_eq!(
        decide_volume(&nfs, &world(vec![])),
        VolumeAction::Nothing("volume is not Released")
    );
}

#[test]
fn the_default_name_also_serves_legacy_classes_and_records_the_class_name() {
    let mut w = world(vec![]);
    w.classes.push(mk_class("old", LEGACY_PROVISIONER_HOSTPATH));
    let claim = mk_claim("c", "old", "1Gi")
        .annotated(ANN_STORAGE_PROVISIONER, LEGACY_PROVISIONER_HOSTPATH)
        .node("node-1")
        .build();
    let ClaimAction::Provision(p) = decide_claim(&claim, &w) else {
        panic!("a legacy class is served by the default name")
    };
    assert_eq!(
        (p.backend, p.provisioner.as_str()),
        (Backend::HostPath, LEGACY_PROVISIONER_HOSTPATH),
        "the volume says which name served it"
    );
    let claim = mk_claim("c", "hostpath", "1Gi").node("node-1").build();
    let ClaimAction::Provision(p) = decide_claim(&claim, &w) else {
        panic!("the default name is served")
    };
    assert_eq!(p.provisioner, PROVISIONER_HOSTPATH);
}

#[test]
fn an_instance_of_its_own_names_serves_only_its_own_classes() {
    let mut w = world(vec![]);
    w.provisioners = Arc::new(Provisioners::new(
        "hostpath.team-a.example",
        "team-a.example/nfs",
    ));
    w.classes = vec![
        mk_class("hostpath", PROVISIONER_HOSTPATH),
        mk_class("old", LEGACY_PROVISIONER_HOSTPATH),
        mk_class("nfs", PROVISIONER_NFS),
        mk_class("mine", "hostpath.team-a.example"),
        mk_class("my-nfs", "team-a.example/nfs"),
    ];
    for class in ["hostpath", "old", "nfs"] {
        assert_eq!(
            decide_claim(&mk_claim("c", class, "1Gi").node("node-1").build(), &w),
            ClaimAction::Nothing("storage class is not served by this provisioner"),
            "{class}"
        );
    }
    let claim = mk_claim("c", "mine", "1Gi")
        .annotated(ANN_STORAGE_PROVISIONER, "hostpath.team-a.example")
        .node("node-1")
        .build();
    assert_eq!(
        node_of(&decide_claim(&claim, &w)).as_deref(),
        Some("node-1")
    );
    let claim = mk_claim("c", "my-nfs", "1Gi")
        .annotated(ANN_STORAGE_PROVISIONER, "team-a.example/nfs")
        .build();
    assert!(matches!(
        decide_claim(&claim, &w),
        ClaimAction::Provision(_)
    ));
    // Volumes of the default instance are not this one's to reclaim.
    let theirs = mk_pv("pvc-1", "nfs", "1Gi")
        .claimed_by("gone", "uid-gone")
        .released()
        .ours(Backend::Nfs, "pvc-1_ns_gone")
        .build();
    assert_eq!(
        decide_volume(&theirs, &w),
        VolumeAction::Nothing("not provisioned by this provisioner")
    );
}
