//! Metrics of the operator, recorded into the process-wide recorder of `ballast_runtime`.
//!
//! Counters are exported at 0 from start-up (every label value known in advance), so alerts
//! and `rate()` work from the first scrape. The replica gauges are totals over the PodManagers
//! this replica reconciles, recomputed from the controller's cache on every change: the
//! `metrics` facade cannot remove a series, so a per-PodManager (or per-namespace) series of a
//! deleted object would stay behind with its last value; a total never goes stale. A standby
//! replica (not leading) shows 0, so `sum()` over replicas is the cluster's figure. For one
//! PodManager, `kubectl get podmanagers` shows the same columns (READY, CURRENT).

use std::time::Duration;

use serde_json::Value;

use crate::convert::{V1, V2};
use crate::crd::PodManager;

/// `podmanager_reconcile_total{result}`: reconciles by outcome (`success` or an error label).
pub const RECONCILE_TOTAL: &str = "podmanager_reconcile_total";
/// `podmanager_reconcile_duration_seconds`: time per reconcile, API calls included.
pub const RECONCILE_DURATION: &str = "podmanager_reconcile_duration_seconds";
/// `podmanager_pod_operations_total{operation,result}`: pod creates and deletes.
pub const POD_OPERATIONS_TOTAL: &str = "podmanager_pod_operations_total";
/// `podmanager_podmanagers`: PodManagers reconciled by this replica (not being deleted).
pub const PODMANAGERS: &str = "podmanager_podmanagers";
/// `podmanager_podmanagers_unready`: of those, the ones with fewer ready pods than desired.
pub const PODMANAGERS_UNREADY: &str = "podmanager_podmanagers_unready";
/// `podmanager_replicas_desired`: the sum of their `spec.replicas`.
pub const REPLICAS_DESIRED: &str = "podmanager_replicas_desired";
/// `podmanager_replicas_current`: the sum of their `status.currentReplicas`.
pub const REPLICAS_CURRENT: &str = "podmanager_replicas_current";
/// `podmanager_replicas_ready`: the sum of their `status.readyReplicas`.
pub const REPLICAS_READY: &str = "podmanager_replicas_ready";
/// `podmanager_conversion_requests_total{from,to,result}`: ConversionReviews answered by the
/// conversion webhook (see [`Conversion`] for the label values).
pub const CONVERSION_REQUESTS_TOTAL: &str = "podmanager_conversion_requests_total";
/// `podmanager_events_dropped_total`: Events not recorded because too many waited to be written.
pub const EVENTS_DROPPED_TOTAL: &str = "podmanager_events_dropped_total";

/// `result` of a reconcile that succeeded.
pub const SUCCESS: &str = "success";
/// Every `result` of [`RECONCILE_TOTAL`]: success, and each error a reconcile can return.
pub const RECONCILE_RESULTS: [&str; 6] = [
    SUCCESS,
    "write_status",
    "pod_operations",
    "add_finalizer",
    "finalizer",
    "incomplete",
];

/// Handle passed in the reconcile context; cheap to clone, records into the global recorder.
#[derive(Clone, Debug, Default)]
pub struct Metrics;

impl Metrics {
    /// Describes every family (HELP lines) and exports each counter and gauge at 0. Call at
    /// start-up, once the recorder is installed (`ballast_runtime::Service::new`).
    pub fn new() -> Self {
        use metrics::{describe_counter, describe_gauge};
        describe_counter!(RECONCILE_TOTAL, "PodManager reconciles by result");
        metrics::describe_histogram!(
            RECONCILE_DURATION,
            metrics::Unit::Seconds,
            "Time taken by one PodManager reconcile"
        );
        describe_counter!(
            POD_OPERATIONS_TOTAL,
            "Pod creates and deletes made by the PodManager operator"
        );
        describe_gauge!(
            PODMANAGERS,
            "PodManagers this replica reconciles, not being deleted (0 while not leading)."
        );
        describe_gauge!(
            PODMANAGERS_UNREADY,
            "PodManagers this replica reconciles whose status shows fewer ready pods than spec.replicas (0 while not leading)."
        );
        describe_gauge!(
            REPLICAS_DESIRED,
            "Sum of spec.replicas over the PodManagers this replica reconciles (0 while not leading)."
        );
        describe_gauge!(
            REPLICAS_CURRENT,
            "Sum of status.currentReplicas (pods that exist and are not terminating) over the PodManagers this replica reconciles (0 while not leading)."
        );
        describe_gauge!(
            REPLICAS_READY,
            "Sum of status.readyReplicas over the PodManagers this replica reconciles (0 while not leading)."
        );
        describe_counter!(
            CONVERSION_REQUESTS_TOTAL,
            "ConversionReviews answered by the v1/v2 conversion webhook, by the objects' version, the version asked for and result."
        );
        describe_counter!(
            EVENTS_DROPPED_TOTAL,
            "Events not recorded because the queue of events waiting to be written was full."
        );
        metrics::counter!(EVENTS_DROPPED_TOTAL).increment(0);
        for result in RECONCILE_RESULTS {
            metrics::counter!(RECONCILE_TOTAL, "result" => result).increment(0);
        }
        for operation in ["create", "delete"] {
            for result in ["success", "error"] {
                metrics::counter!(POD_OPERATIONS_TOTAL, "operation" => operation, "result" => result)
                    .increment(0);
            }
        }
        for (from, to) in [(VERSION_V1, VERSION_V2), (VERSION_V2, VERSION_V1)] {
            for result in [CONVERTED, FAILED] {
                Conversion { from, to, result }.count(0);
            }
        }
        let metrics = Self;
        metrics.replicas(&Totals::default());
        metrics
    }

    /// Count one reconcile: `result` is `success` or an error's metric label.
    pub fn reconciled(&self, result: &'static str, took: Duration) {
        metrics::counter!(RECONCILE_TOTAL, "result" => result).increment(1);
        metrics::histogram!(RECONCILE_DURATION).record(took.as_secs_f64());
    }

    /// Count one pod create or delete.
    pub fn pod_operation(&self, operation: &'static str, ok: bool) {
        let result = if ok { "success" } else { "error" };
        metrics::counter!(POD_OPERATIONS_TOTAL, "operation" => operation, "result" => result)
            .increment(1);
    }

    /// Shows `totals` on the replica gauges (all 0 when this replica stops leading).
    pub fn replicas(&self, totals: &Totals) {
        let Totals {
            podmanagers,
            unready,
            desired,
            current,
            ready,
        } = *totals;
        metrics::gauge!(PODMANAGERS).set(podmanagers as f64);
        metrics::gauge!(PODMANAGERS_UNREADY).set(unready as f64);
        metrics::gauge!(REPLICAS_DESIRED).set(desired as f64);
        metrics::gauge!(REPLICAS_CURRENT).set(current as f64);
        metrics::gauge!(REPLICAS_READY).set(ready as f64);
    }
}

/// The replica gauges' values: totals over a set of PodManagers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub podmanagers: u64,
    /// PodManagers whose status shows fewer ready pods than `spec.replicas`.
    pub unready: u64,
    pub desired: u64,
    pub current: u64,
    pub ready: u64,
}

/// Totals over `pms`, leaving out those being deleted: they want no pods any more (the
/// finalizer is removing theirs), as a deleted Deployment leaves kube-state-metrics' figures.
/// The status is what the last reconcile wrote, as `kubectl get` shows it.
pub fn totals<'a>(pms: impl IntoIterator<Item = &'a PodManager>) -> Totals {
    let count = |n: i32| u64::try_from(n).unwrap_or(0);
    pms.into_iter()
        .filter(|pm| pm.metadata.deletion_timestamp.is_none())
        .fold(Totals::default(), |mut t, pm| {
            let desired = count(pm.spec.replicas);
            let (current, ready) = pm.status.as_ref().map_or((0, 0), |s| {
                (count(s.current_replicas), count(s.ready_replicas))
            });
            t.podmanagers += 1;
            t.unready += u64::from(ready < desired);
            t.desired += desired;
            t.current += current;
            t.ready += ready;
            t
        })
}

/// `from` / `to` of a PodManager in `apps.mycompany.com/v1`.
pub const VERSION_V1: &str = "v1";
/// `from` / `to` of a PodManager in `apps.mycompany.com/v2`.
pub const VERSION_V2: &str = "v2";
/// `from` / `to` of any other apiVersion (another group, a version not served).
pub const VERSION_OTHER: &str = "other";
/// `from` when a review carries objects in more than one version.
pub const VERSION_MIXED: &str = "mixed";
/// `from` when a review carries no objects.
pub const VERSION_NONE: &str = "none";
/// `from` and `to` of a body that is no ConversionReview.
pub const VERSION_UNKNOWN: &str = "unknown";
/// `result`: every object converted (`response.result.status` `Success`).
pub const CONVERTED: &str = "success";
/// `result`: answered with a Failure (the API server fails the read or write that needed it).
pub const FAILED: &str = "failure";
/// `result`: not a ConversionReview, answered 400.
pub const MALFORMED: &str = "malformed";

/// The labels of one [`CONVERSION_REQUESTS_TOTAL`] count. Every value comes from a short fixed
/// list, whatever the request holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conversion {
    /// The objects' version: `v1`, `v2`, `other`, `mixed`, `none` (or `unknown`).
    pub from: &'static str,
    /// The version asked for (`desiredAPIVersion`): `v1`, `v2`, `other` (or `unknown`).
    pub to: &'static str,
    /// `success`, `failure` or `malformed`.
    pub result: &'static str,
}

impl Conversion {
    /// A body that is no ConversionReview.
    pub const MALFORMED: Self = Self {
        from: VERSION_UNKNOWN,
        to: VERSION_UNKNOWN,
        result: MALFORMED,
    };

    /// The labels of `review` answered with `answer` (see [`crate::convert::review`]).
    pub fn of(review: &Value, answer: &Value) -> Self {
        let version = |v: Option<&Value>| match v.and_then(Value::as_str) {
            Some(V1) => VERSION_V1,
            Some(V2) => VERSION_V2,
            _ => VERSION_OTHER,
        };
        let objects = review
            .pointer("/request/objects")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let from = objects
            .iter()
            .map(|o| version(o.get("apiVersion")))
            .reduce(|a, b| if a == b { a } else { VERSION_MIXED })
            .unwrap_or(VERSION_NONE);
        let to = version(review.pointer("/request/desiredAPIVersion"));
        let converted = answer
            .pointer("/response/result/status")
            .and_then(Value::as_str)
            == Some("Success");
        Self {
            from,
            to,
            result: if converted { CONVERTED } else { FAILED },
        }
    }

    /// Adds `n` to this request's counter.
    pub fn count(self, n: u64) {
        let Self { from, to, result } = self;
        metrics::counter!(CONVERSION_REQUESTS_TOTAL, "from" => from, "to" => to, "result" => result)
            .increment(n);
    }
}

#[cfg(test)]
mod tests;
