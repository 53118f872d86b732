//! Invariants of `plan` over any set of pods, node health and `replicas`: it never plans more
//! pods than `replicas` allows, never deletes a pod it does not control (after the reconciler's
//! ownership filter) or one the guard protects, and creates a bounded number of pods per pass.
//!
//! `PROPTEST_CASES` raises the budget (`scripts/fuzz` runs 10^6 per target); without it each
//! target runs a small one so the normal test run stays fast.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use podmanager::crd::PodManager;
use podmanager::plan::{
    ClusterHealth, DeleteReason, MAX_CREATIONS_PER_PASS, cleanup, ordinal_of, plan, pod_name,
};
use podmanager::pods::CachedPod;
use podmanager::template::is_controlled_by;
use proptest::prelude::*;
use serde_json::json;

/// Cases per target when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    // A failing case is saved beside this file and tried first on every later run.
    config.failure_persistence = Some(Box::new(
        proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
    ));
    config
}

const IMAGE: &str = "nginx:1.27";
const NODES: &[&str] = &["node-0", "node-1", "node-2", "node-3"];

fn mk_pm(replicas: i32) -> PodManager {
    serde_json::from_value(json!({
        "apiVersion": "apps.mycompany.com/v1",
        "kind": "PodManager",
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-web"},
        "spec": {"replicas": replicas, "image": IMAGE},
    }))
    .expect("a PodManager")
}

/// One pod of the namespace as the API lists it.
#[derive(Debug, Clone)]
struct PodSpec {
    owner: u8,
    node: Option<&'static str>,
    phase: &'static str,
    ready: bool,
    terminating: bool,
    current_image: bool,
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)],
        prop::option::of(prop::sample::select(NODES.to_vec())),
        prop::sample::select(vec![
            "Running",
            "Running",
            "Pending",
            "Failed",
            "Succeeded",
            "",
        ]),
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.7),
    )
        .prop_map(
            |(owner, node, phase, ready, terminating, current_image)| PodSpec {
                owner,
                node,
                phase,
                ready,
                terminating,
                current_image,
            },
        )
}

fn pod_name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0u32..12).prop_map(|o| pod_name("web", o)),
        1 => Just("web-01".to_owned()),
        1 => Just("web-".to_owned()),
        1 => Just("web-x".to_owned()),
        1 => Just("web-4294967296".to_owned()),
        1 => Just("web-2-0".to_owned()),
        1 => Just("api-0".to_owned()),
        1 => "[a-z0-9-]{1,10}",
    ]
}

/// Pods with distinct names, as a namespace holds them.
fn pods() -> impl Strategy<Value = BTreeMap<String, PodSpec>> {
    prop::collection::btree_map(pod_name_strategy(), pod_spec(), 0..14)
}

/// The pod as JSON, as the API would send it.
fn pod_json(name: &str, p: &PodSpec) -> serde_json::Value {
    let owner_refs = match p.owner {
        // Controlled by this PodManager.
        0 => json!([{"apiVersion": "apps.mycompany.com/v1", "kind": "PodManager", "name": "web",
                      "uid": "uid-web", "controller": true, "blockOwnerDeletion": true}]),
        // Controlled by another object.
        1 => json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                      "uid": "uid-other", "controller": true}]),
        // Referencing this PodManager without being controlled by it.
        2 => json!([{"apiVersion": "apps.mycompany.com/v1", "kind": "PodManager", "name": "web",
                      "uid": "uid-web"}]),
        _ => json!(null),
    };
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
                     "ownerReferences": owner_refs},
        "spec": {"containers": [{"name": "app",
                                 "image": if p.current_image { IMAGE } else { "nginx:1.25" }}]},
        "status": {"phase": p.phase},
    });
    if let Some(node) = p.node {
        pod["spec"]["nodeName"] = json!(node);
    }
    if p.ready {
        pod["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    }
    if p.terminating {
        pod["metadata"]["deletionTimestamp"] = json!("2026-11-28T12:00:00Z");
    }
    pod
}

fn mk_pod(name: &str, p: &PodSpec) -> Pod {
    serde_json::from_value(pod_json(name, p)).expect("a Pod")
}

fn health() -> impl Strategy<Value = ClusterHealth> {
    (
        prop::bool::weighted(0.85),
        prop::collection::btree_set(prop::sample::select(NODES.to_vec()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(known, not_ready, protection)| ClusterHealth {
            known,
            not_ready: not_ready.into_iter().map(str::to_owned).collect(),
            protection,
        })
}

fn replicas() -> impl Strategy<Value = i32> {
    prop_oneof![
        8 => 0i32..10,
        1 => Just(i32::MAX),
        1 => Just(-1),
        1 => 400i32..2_000,
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plans_stay_within_replicas_and_touch_only_owned_deletable_pods(
        replicas in replicas(),
        listed in pods(),
        health in health(),
    ) {
        let pm = mk_pm(replicas);
        let all: Vec<Pod> = listed.iter().map(|(name, p)| mk_pod(name, p)).collect();
        // What the reconciler hands to `plan`: the pods this PodManager controls.
        let owned: Vec<Pod> = all.iter().filter(|p| is_controlled_by(*p, &pm)).cloned().collect();
        let out = plan(&pm, &owned, &health);
        // The operator plans over its cache's lean pods, decoded from the same JSON: the same
        // pods are its own, and the same plan comes out.
        let cached: Vec<CachedPod> = listed
            .iter()
            .map(|(name, p)| serde_json::from_value(pod_json(name, p)).expect("a CachedPod"))
            .filter(|p| is_controlled_by(p, &pm))
            .collect();
        prop_assert_eq!(&plan(&pm, &cached, &health), &out);
        prop_assert_eq!(cleanup(&cached, &health), cleanup(&owned, &health));

        let owned_names: BTreeSet<&str> =
            owned.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
        let spec_of = |name: &str| &listed[name];
        let pinned = |p: &PodSpec| {
            health.protection && p.node.is_some_and(|n| health.not_ready.contains(n))
        };
        let usable = |name: &str| {
            let p = spec_of(name);
            ordinal_of("web", name).is_some()
                && !p.terminating
                && !matches!(p.phase, "Failed" | "Succeeded")
                && !pinned(p)
        };

        // Deletions: distinct, owned, not already terminating, never a protected pod.
        let deleted: BTreeSet<&str> = out.delete.iter().map(|d| d.name.as_str()).collect();
        prop_assert_eq!(deleted.len(), out.delete.len(), "a pod deleted twice");
        for name in &deleted {
            prop_assert!(owned_names.contains(name), "deletes {} it does not control", name);
            prop_assert!(!spec_of(name).terminating, "deletes {} again", name);
            prop_assert!(!pinned(spec_of(name)), "deletes {} on a protected node", name);
        }
        if !health.known {
            prop_assert!(
                out.delete.iter().all(|d| !matches!(d.reason, DeleteReason::ScaleDown | DeleteReason::Rollout)),
                "removes pods while node health is unknown: {:?}", out.delete
            );
        }
        prop_assert!(out.delete.iter().filter(|d| d.reason == DeleteReason::Rollout).count() <= 1);

        // Creations: ours by name, new, distinct, bounded.
        let created: BTreeSet<&str> = out.create.iter().map(String::as_str).collect();
        prop_assert_eq!(created.len(), out.create.len(), "a pod created twice");
        prop_assert!(out.create.len() <= MAX_CREATIONS_PER_PASS as usize);
        for name in &created {
            prop_assert!(ordinal_of("web", name).is_some(), "creates {} outside the naming scheme", name);
            // Only the pods it controls are known to `plan`; a foreign pod holding one of its
            // names is a collision the reconciler meets as AlreadyExists.
            prop_assert!(!owned_names.contains(name), "creates {} which exists", name);
        }
        prop_assert!(out.create.is_empty() || out.delete.iter().all(|d| d.reason != DeleteReason::ScaleDown));

        // Never more usable pods than replicas once the plan is applied; exactly replicas when
        // shrinking with node health known.
        let replicas = replicas.max(0) as usize;
        let usable_before = owned_names.iter().filter(|n| usable(n)).count();
        let usable_after = usable_before - deleted.iter().filter(|n| usable(n)).count() + created.len();
        if usable_before <= replicas {
            prop_assert!(
                usable_after <= replicas,
                "{usable_before} usable, {} created, {} deleted: {usable_after} > {replicas}",
                created.len(), deleted.len()
            );
        } else {
            prop_assert!(created.is_empty());
            if health.known {
                prop_assert_eq!(usable_after, replicas);
            } else {
                prop_assert_eq!(usable_after, usable_before);
            }
        }

        // Counts describe the owned pods.
        let counts = out.counts;
        prop_assert!(counts.ready <= counts.current && counts.stranded <= counts.current);
        prop_assert_eq!(
            counts.terminating as usize,
            owned_names.iter().filter(|n| spec_of(n).terminating).count()
        );
    }

    #[test]
    fn a_pass_on_its_own_result_goes_on_from_where_it_stopped(
        replicas in prop_oneof![4 => 0i32..20, 1 => 400i32..1_200],
        health in health(),
    ) {
        // Start from nothing, apply each pass's creations as ready pods: the count converges
        // to replicas, at most MAX_CREATIONS_PER_PASS at a time, never past it.
        let pm = mk_pm(replicas);
        let ready = mk_pod("template", &PodSpec {
            owner: 0,
            node: Some("node-9"),
            phase: "Running",
            ready: true,
            terminating: false,
            current_image: true,
        });
        let mut pods: Vec<Pod> = Vec::new();
        for _ in 0..(replicas as u32).div_ceil(MAX_CREATIONS_PER_PASS) + 1 {
            let out = plan(&pm, &pods, &health);
            prop_assert!(out.create.len() <= MAX_CREATIONS_PER_PASS as usize);
            for name in out.create {
                let mut pod = ready.clone();
                pod.metadata.name = Some(name);
                pods.push(pod);
            }
            prop_assert!(pods.len() <= replicas as usize);
        }
        prop_assert_eq!(pods.len(), replicas as usize);
    }
}

/// A PodManager stored with the largest `replicas` the type holds is planned in bounded
/// passes, not with billions of names at once.
#[test]
fn a_huge_replica_count_creates_a_bounded_batch() {
    let out = plan(&mk_pm(i32::MAX), &[] as &[Pod], &ClusterHealth::all_ready());
    assert_eq!(out.create.len(), MAX_CREATIONS_PER_PASS as usize);
    assert_eq!(out.create.first().map(String::as_str), Some("web-0"));
    assert_eq!(out.create.last().map(String::as_str), Some("web-499"));
}
