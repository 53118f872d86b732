use serde_json::json;

use super::*;
use crate::error::Error;
use crate::testing::mk_pm;
use crate::{PodManagerStatus, convert};

fn with_status(mut pm: PodManager, current: i32, ready: i32) -> PodManager {
    pm.status = Some(PodManagerStatus {
        current_replicas: current,
        ready_replicas: ready,
        ..PodManagerStatus::default()
    });
    pm
}

#[test]
fn totals_add_up_desired_current_and_ready_replicas() {
    let pms = [
        with_status(mk_pm("web", 3, "nginx"), 3, 3),
        with_status(mk_pm("api", 5, "nginx"), 4, 2),
        // never reconciled yet: no status
        mk_pm("new", 2, "nginx"),
    ];
    assert_eq!(
        totals(&pms),
        Totals {
            podmanagers: 3,
            unready: 2,
            desired: 10,
            current: 7,
            ready: 5,
        }
    );
    assert_eq!(totals(&[]), Totals::default());
}

#[test]
fn podmanagers_being_deleted_are_left_out_of_the_totals() {
    let mut going = with_status(mk_pm("old", 4, "nginx"), 2, 1);
    going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let pms = [with_status(mk_pm("web", 1, "nginx"), 1, 1), going];
    assert_eq!(
        totals(&pms),
        Totals {
            podmanagers: 1,
            unready: 0,
            desired: 1,
            current: 1,
            ready: 1,
        }
    );
}

#[test]
fn a_surplus_of_ready_pods_during_scale_down_is_not_unready() {
    let pms = [with_status(mk_pm("web", 2, "nginx"), 4, 4)];
    let t = totals(&pms);
    assert_eq!((t.unready, t.desired, t.ready), (0, 2, 4));
}

fn review(desired: &str, versions: &[&str]) -> Value {
    let objects: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"apiVersion": v, "kind": "PodManager",
                   "metadata": {"name": format!("pm-{i}"), "namespace": "shop"},
                   "spec": {"replicas": 1, "image": "nginx",
                            "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}}})
        })
        .collect();
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
           "request": {"uid": "u", "desiredAPIVersion": desired, "objects": objects}})
}

fn labels(desired: &str, versions: &[&str]) -> Conversion {
    let r = review(desired, versions);
    Conversion::of(&r, &convert::review(&r))
}

#[test]
fn conversions_are_labelled_by_the_objects_version_the_version_asked_for_and_result() {
    assert_eq!(
        labels(convert::V2, &[convert::V1, convert::V1]),
        Conversion {
            from: "v1",
            to: "v2",
            result: "success"
        }
    );
    assert_eq!(
        labels(convert::V1, &[convert::V2]),
        Conversion {
            from: "v2",
            to: "v1",
            result: "success"
        }
    );
    assert_eq!(
        labels("apps.mycompany.com/v3", &[convert::V1]),
        Conversion {
            from: "v1",
            to: "other",
            result: "failure"
        },
        "a version not served fails, and its name does not become a label value"
    );
    assert_eq!(
        labels(convert::V2, &[convert::V1, convert::V2]).from,
        "mixed"
    );
    assert_eq!(labels(convert::V2, &["example.com/v9"]).from, "other");
    assert_eq!(labels(convert::V2, &[]).from, "none");
}

#[test]
fn a_failure_in_the_answer_is_counted_as_a_failure() {
    let r = review(convert::V1, &[convert::V2]);
    let answer =
        json!({"response": {"uid": "u", "result": {"status": "Failure", "message": "no"}}});
    assert_eq!(Conversion::of(&r, &answer).result, "failure");
}

#[test]
fn every_error_a_reconcile_returns_has_a_result_exported_at_zero() {
    let api = || kube::Error::LinesCodecMaxLineLengthExceeded;
    let (namespace, name) = (String::from("ns"), String::from("pm"));
    let errors = [
        Error::WriteStatus {
            namespace: namespace.clone(),
            name: name.clone(),
            source: api(),
        },
        Error::PodOperations {
            namespace: namespace.clone(),
            name: name.clone(),
            failures: 1,
        },
        Error::AddFinalizer {
            namespace,
            name: name.clone(),
            source: api(),
        },
        Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject)),
        Error::Incomplete(name),
    ];
    for e in &errors {
        assert!(
            RECONCILE_RESULTS.contains(&e.metric_label()),
            "{} is not exported at 0",
            e.metric_label()
        );
    }
    assert_eq!(RECONCILE_RESULTS.len(), errors.len() + 1, "and success");
}

#[test]
fn every_family_is_described_and_every_counter_exported_from_start_up() {
    let handle = ballast_runtime::metrics::prometheus();
    Metrics::new();
    let text = handle.render();
    for family in [
        RECONCILE_TOTAL,
        POD_OPERATIONS_TOTAL,
        PODMANAGERS,
        PODMANAGERS_UNREADY,
        REPLICAS_DESIRED,
        REPLICAS_CURRENT,
        REPLICAS_READY,
        CONVERSION_REQUESTS_TOTAL,
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} described:\n{text}"
        );
    }
    let sample =
        |name, labels: &[(&str, &str)]| ballast_runtime::metrics::sample(&text, name, labels);
    for result in RECONCILE_RESULTS {
        assert!(
            sample(RECONCILE_TOTAL, &[("result", result)]).is_some(),
            "{result}"
        );
    }
    for (from, to) in [("v1", "v2"), ("v2", "v1")] {
        for result in ["success", "failure"] {
            assert!(
                sample(
                    CONVERSION_REQUESTS_TOTAL,
                    &[("from", from), ("to", to), ("result", result)]
                )
                .is_some(),
                "{from}->{to} {result}:\n{text}"
            );
        }
    }
    for op in ["create", "delete"] {
        assert!(
            sample(
                POD_OPERATIONS_TOTAL,
                &[("operation", op), ("result", "error")]
            )
            .is_some()
        );
    }
    assert!(sample(REPLICAS_DESIRED, &[]).is_some());
}
