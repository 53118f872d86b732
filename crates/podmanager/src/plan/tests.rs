use super::*;
use crate::testing::{PodFixture, mk_pm, mk_pod};

fn health(not_ready: &[&str], protection: bool) -> ClusterHealth {
    ClusterHealth {
        known: true,
        not_ready: not_ready.iter().map(|s| s.to_string()).collect(),
        protection,
    }
}

fn deleted(plan: &Plan) -> Vec<(&str, DeleteReason)> {
    plan.delete
        .iter()
        .map(|d| (d.name.as_str(), d.reason))
        .collect()
}

struct Case {
    what: &'static str,
    replicas: i32,
    pods: Vec<Pod>,
    health: ClusterHealth,
    create: &'static [&'static str],
    delete: &'static [(&'static str, DeleteReason)],
    waiting: bool,
}

fn cases() -> Vec<Case> {
    use DeleteReason::*;
    let ok = ClusterHealth::all_ready;
    vec![
        Case {
            what: "new podmanager creates ordinals 0..replicas",
            replicas: 3,
            pods: vec![],
            health: ok(),
            create: &["web-0", "web-1", "web-2"],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "scale up fills the gaps before appending",
            replicas: 5,
            pods: vec![
                mk_pod("web-0").ready(),
                mk_pod("web-2").ready(),
                mk_pod("web-4").ready(),
            ],
            health: ok(),
            create: &["web-1", "web-3"],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "settled podmanager does nothing",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready(),
                mk_pod("web-1").ready(),
                mk_pod("web-2").ready(),
            ],
            health: ok(),
            create: &[],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "scale down removes highest ordinals when all are ready",
            replicas: 2,
            pods: (0..5)
                .map(|i| mk_pod(&format!("web-{i}")).ready())
                .collect(),
            health: ok(),
            create: &[],
            delete: &[
                ("web-4", ScaleDown),
                ("web-3", ScaleDown),
                ("web-2", ScaleDown),
            ],
            waiting: false,
        },
        Case {
            what: "scale down prefers not-ready pods over higher ordinals",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready(),
                mk_pod("web-1"),
                mk_pod("web-2").ready(),
                mk_pod("web-3").ready(),
            ],
            health: ok(),
            create: &[],
            delete: &[("web-1", ScaleDown)],
            waiting: false,
        },
        Case {
            what: "terminating pods are not current and are re-created in place once gone",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready(),
                mk_pod("web-1").ready().on("n1").terminating(),
                mk_pod("web-2").ready(),
            ],
            health: ok(),
            create: &[],
            delete: &[],
            waiting: true,
        },
        Case {
            what: "terminating pod on a NotReady node is replaced on a new ordinal",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready(),
                mk_pod("web-1").ready().on("dead").terminating(),
                mk_pod("web-2").ready(),
            ],
            health: health(&["dead"], false),
            create: &["web-3"],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "finished pods are deleted and not counted",
            replicas: 2,
            pods: vec![mk_pod("web-0").ready(), mk_pod("web-1").phase("Failed")],
            health: ok(),
            create: &[],
            delete: &[("web-1", Finished)],
            waiting: true,
        },
        Case {
            what: "pods with foreign names are deleted and replaced",
            replicas: 1,
            pods: vec![mk_pod("web-abc").ready()],
            health: ok(),
            create: &["web-0"],
            delete: &[("web-abc", UnexpectedName)],
            waiting: false,
        },
        Case {
            what: "image change replaces the highest ordinal first when all are ready",
            replicas: 3,
            pods: (0..3)
                .map(|i| mk_pod(&format!("web-{i}")).ready().image("old"))
                .collect(),
            health: ok(),
            create: &[],
            delete: &[("web-2", Rollout)],
            waiting: false,
        },
        Case {
            what: "image change waits while another pod is not ready",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready().image("old"),
                mk_pod("web-1").ready().image("old"),
                mk_pod("web-2"),
            ],
            health: ok(),
            create: &[],
            delete: &[],
            waiting: true,
        },
        Case {
            what: "image change replaces a not-ready old pod first",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready().image("old"),
                mk_pod("web-1").image("old"),
                mk_pod("web-2").ready(),
            ],
            health: ok(),
            create: &[],
            delete: &[("web-1", Rollout)],
            waiting: false,
        },
        Case {
            what: "image change waits for the replaced pod to finish terminating",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready().image("old"),
                mk_pod("web-1").ready().image("old"),
                mk_pod("web-2").ready().on("n1").terminating(),
            ],
            health: ok(),
            create: &[],
            delete: &[],
            waiting: true,
        },
        Case {
            what: "image change re-creates the replaced ordinal with the new image",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready().image("old"),
                mk_pod("web-1").ready().image("old"),
            ],
            health: ok(),
            create: &["web-2"],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "without protection pods on NotReady nodes are kept and counted, not ready",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready().on("dead"),
                mk_pod("web-1").ready().on("n1"),
                mk_pod("web-2").ready().on("n2"),
            ],
            health: health(&["dead"], false),
            create: &[],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "with protection pods on NotReady nodes are replaced elsewhere, not deleted",
            replicas: 3,
            pods: vec![
                mk_pod("web-0").ready().on("dead1"),
                mk_pod("web-1").ready().on("dead2"),
                mk_pod("web-2").ready().on("n1"),
            ],
            health: health(&["dead1", "dead2"], true),
            create: &["web-3", "web-4"],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "with protection even finished pods on NotReady nodes are left alone",
            replicas: 1,
            pods: vec![mk_pod("web-0").on("dead").phase("Failed")],
            health: health(&["dead"], true),
            create: &["web-1"],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "after the nodes return the surplus replacements are removed",
            replicas: 3,
            pods: (0..5)
                .map(|i| mk_pod(&format!("web-{i}")).ready().on("n1"))
                .collect(),
            health: ok(),
            create: &[],
            delete: &[("web-4", ScaleDown), ("web-3", ScaleDown)],
            waiting: false,
        },
        Case {
            what: "surplus is kept while node health is unknown",
            replicas: 3,
            pods: (0..5)
                .map(|i| mk_pod(&format!("web-{i}")).ready())
                .collect(),
            health: ClusterHealth::default(),
            create: &[],
            delete: &[],
            waiting: true,
        },
        Case {
            what: "missing pods are still created while node health is unknown",
            replicas: 2,
            pods: vec![mk_pod("web-0").ready()],
            health: ClusterHealth::default(),
            create: &["web-1"],
            delete: &[],
            waiting: false,
        },
        Case {
            what: "pods of another podmanager sharing a prefix are not ours by ordinal",
            replicas: 1,
            pods: vec![mk_pod("web-01").ready()],
            health: ok(),
            create: &["web-0"],
            delete: &[("web-01", UnexpectedName)],
            waiting: false,
        },
    ]
}

#[test]
fn plan_decides_creates_and_deletes_for_each_case() {
    for case in cases() {
        let pm = mk_pm("web", case.replicas, "nginx:1.21");
        let got = plan(&pm, &case.pods, &case.health);
        let create: Vec<&str> = got.create.iter().map(String::as_str).collect();
        assert_eq!(create, case.create, "create: {}", case.what);
        assert_eq!(deleted(&got), case.delete, "delete: {}", case.what);
        assert_eq!(
            got.waiting.is_some(),
            case.waiting,
            "waiting ({:?}): {}",
            got.waiting,
            case.what
        );
    }
}

#[test]
fn counts_exclude_terminating_and_mark_pods_on_notready_nodes_not_ready() {
    let pm = mk_pm("web", 3, "nginx:1.21");
    let pods = vec![
        mk_pod("web-0").ready().on("n1"),
        mk_pod("web-1").ready().on("dead"),
        mk_pod("web-2").ready().on("n1").image("old"),
        mk_pod("web-3").ready().on("n1").terminating(),
    ];
    let got = plan(&pm, &pods, &health(&["dead"], true));
    assert_eq!(
        got.counts,
        Counts {
            current: 3,
            ready: 2,
            updated: 2,
            stranded: 1,
            terminating: 1,
        }
    );
    // web-1 is stranded: one more pod is needed, but web-3 is still terminating on n1.
    assert!(got.create.is_empty());
    assert!(got.waiting.is_some());
}

#[test]
fn waiting_message_names_the_pods_a_rollout_waits_for() {
    let pm = mk_pm("web", 2, "nginx:1.21");
    let pods = vec![mk_pod("web-0").image("old").ready(), mk_pod("web-1")];
    let got = plan(&pm, &pods, &ClusterHealth::all_ready());
    assert_eq!(
        got.waiting.as_deref(),
        Some("rollout waits for pod(s) web-1 to become ready before replacing web-0")
    );
}

#[test]
fn ordinal_is_parsed_only_from_canonical_names() {
    assert_eq!(ordinal_of("web", "web-0"), Some(0));
    assert_eq!(ordinal_of("web", "web-12"), Some(12));
    assert_eq!(ordinal_of("web", "web-012"), None);
    assert_eq!(ordinal_of("web", "web-"), None);
    assert_eq!(ordinal_of("web", "web-x1"), None);
    assert_eq!(ordinal_of("web", "webx-1"), None);
    assert_eq!(ordinal_of("web", "web-a-1"), None);
    assert_eq!(ordinal_of("web-a", "web-a-1"), Some(1));
}

#[test]
fn cleanup_deletes_all_but_terminating_and_protected_pods() {
    let pods = vec![
        mk_pod("web-0").on("n1"),
        mk_pod("web-1").on("dead"),
        mk_pod("web-2").on("n1").terminating(),
    ];
    assert_eq!(cleanup(&pods, &health(&["dead"], true)), ["web-0"]);
    assert_eq!(
        cleanup(&pods, &health(&["dead"], false)),
        ["web-0", "web-1"]
    );
}

#[test]
fn a_template_change_with_the_same_image_rolls_pods_made_from_the_old_template() {
    let mut pm = mk_pm("web", 2, "nginx:1.21");
    let with_hash = |name: &str, pm: &PodManager| {
        let mut pod = mk_pod(name).ready();
        let labels = crate::template::pod_labels(pm);
        pod.metadata.labels = Some(labels);
        pod
    };
    let pods = vec![with_hash("web-0", &pm), with_hash("web-1", &pm)];
    assert!(plan(&pm, &pods, &health(&[], false)).is_settled());
    // The same image, another environment: every pod is outdated, replaced one at a time.
    let kept = serde_json::json!({"spec": {"containers": [
        {"name": "app", "image": "", "env": [{"name": "MODE", "value": "fast"}]}]}});
    pm.metadata.annotations = Some(std::collections::BTreeMap::from([(
        crate::convert::TEMPLATE_ANNOTATION.to_string(),
        kept.to_string(),
    )]));
    let p = plan(&pm, &pods, &health(&[], false));
    assert_eq!(p.counts.updated, 0);
    assert_eq!(deleted(&p), vec![("web-1", DeleteReason::Rollout)]);
}
