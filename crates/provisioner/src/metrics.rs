//! Metric names and the few places they are recorded.
//!
//! The per-node free-space gauges come from the agents' capacity reports as the controller
//! reads them (every controller replica, leading or not: they all watch the reports, so take
//! `max by (node)`). A series cannot be removed through the `metrics` facade, so a report that
//! expired or was deleted (its agent stopped, its node removed) turns its node's free bytes to
//! NaN rather than leaving the last value standing: no alert on low space fires on it, graphs
//! show a gap, and the renewal timestamp says since when the node has been silent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;

use crate::capacity;
use crate::objects::annotation;

/// Volumes created (every PV this provisioner created), by class.
pub const PROVISIONED: &str = "provisioner_volumes_provisioned_total";
/// Volumes whose directory was removed (or archived) and PV deleted, by class.
pub const DELETED: &str = "provisioner_volumes_deleted_total";
/// Failed operations, by class, operation (`provision`, `bind`, `reclaim`) and reason label.
pub const FAILURES: &str = "provisioner_failures_total";
/// Events not recorded because the writer's queue was full.
pub const EVENTS_DROPPED: &str = "provisioner_events_dropped_total";
/// Seconds from starting to provision a claim until its volume is created, by class.
pub const PROVISION_DURATION: &str = "provisioner_provision_duration_seconds";
/// Seconds a changed object waited in the work queue before its reconcile started, by kind
/// (`claim`, `volume`, `capacities`).
pub const QUEUE_WAIT: &str = "provisioner_queue_wait_seconds";

/// Gauge `{node}`: free bytes under the hostPath base directory, from the node agent's report
/// while it is fresh; NaN once it expired or was deleted.
pub const HOSTPATH_FREE_BYTES: &str = "provisioner_hostpath_free_bytes";
/// Gauge `{node}`: when the node agent last renewed its report, in Unix seconds (its age is
/// `time() - ` this; a report is fresh for 40s after its renewal).
pub const HOSTPATH_REPORT_RENEWED: &str = "provisioner_hostpath_report_renewed_timestamp_seconds";

/// HELP texts of every family; call once the recorder is installed.
pub fn describe() {
    metrics::describe_counter!(PROVISIONED, "Volumes provisioned, by storage class.");
    metrics::describe_counter!(
        DELETED,
        "Volumes whose directory was removed or archived and PV deleted, by storage class."
    );
    metrics::describe_counter!(
        FAILURES,
        "Failed provisioner operations, by storage class, operation and reason."
    );
    metrics::describe_counter!(
        EVENTS_DROPPED,
        "Events not recorded because the queue of events waiting to be written was full."
    );
    metrics::describe_histogram!(
        PROVISION_DURATION,
        metrics::Unit::Seconds,
        "Seconds from starting to provision a claim until its volume is created, by storage class."
    );
    metrics::describe_histogram!(
        QUEUE_WAIT,
        metrics::Unit::Seconds,
        "Seconds a changed object waited in the work queue before its reconcile started, by kind (claim, volume, capacities)."
    );
    metrics::describe_gauge!(
        HOSTPATH_FREE_BYTES,
        metrics::Unit::Bytes,
        "Free bytes under the hostPath base directory of a node, as its agent's fresh capacity report says; NaN once the report expired or was deleted."
    );
    metrics::describe_gauge!(
        HOSTPATH_REPORT_RENEWED,
        metrics::Unit::Seconds,
        "Unix time at which a node's hostPath agent last renewed its capacity report."
    );
}

pub fn provisioned(class: &str, took: Duration) {
    metrics::counter!(PROVISIONED, "class" => class.to_owned()).increment(1);
    metrics::histogram!(PROVISION_DURATION, "class" => class.to_owned()).record(took.as_secs_f64());
}

pub fn queue_wait(kind: &'static str, waited: Duration) {
    metrics::histogram!(QUEUE_WAIT, "kind" => kind).record(waited.as_secs_f64());
}

pub fn deleted(class: &str) {
    metrics::counter!(DELETED, "class" => class.to_owned()).increment(1);
}

pub fn failed(class: &str, operation: &'static str, reason: &'static str) {
    metrics::counter!(FAILURES, "class" => class.to_owned(), "operation" => operation, "reason" => reason)
        .increment(1);
}

/// What the free-space gauges show for one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// The free bytes of a fresh report; `None` (shown as NaN) without one.
    pub free_bytes: Option<u64>,
    /// When the report was last renewed (Unix milliseconds), kept after it is gone.
    pub renewed_ms: Option<i64>,
}

/// What the gauges show for each node from `reports` at `now`, given what they show now
/// (`shown`): a node keeps its series once it has one, without free bytes once its report is
/// no longer fresh, and with the last renewal seen. Free bytes are read as placement reads
/// them ([`capacity::read`]).
pub fn node_reports(
    shown: &BTreeMap<String, NodeReport>,
    reports: &[Arc<Lease>],
    now: Timestamp,
) -> BTreeMap<String, NodeReport> {
    let mut next: BTreeMap<String, NodeReport> = BTreeMap::new();
    for lease in reports {
        let Some(node) = annotation(&lease.metadata, capacity::ANN_NODE) else {
            continue;
        };
        let renewed = lease
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_millisecond());
        let entry = next.entry(node.to_owned()).or_default();
        entry.renewed_ms = entry.renewed_ms.max(renewed);
        if let Some(fresh) = capacity::read(lease, now) {
            entry.free_bytes = Some(fresh.free_bytes);
        }
    }
    for (node, before) in shown {
        next.entry(node.clone()).or_insert(NodeReport {
            free_bytes: None,
            renewed_ms: before.renewed_ms,
        });
    }
    next
}

/// The free-space gauges of one controller: what they show, so that a pass writes only what
/// changed and a node whose report went away is set NaN.
#[derive(Debug, Default)]
pub struct FreeSpace {
    shown: BTreeMap<String, NodeReport>,
}

impl FreeSpace {
    /// Brings the gauges in line with `reports` at `now`.
    pub fn update(&mut self, reports: &[Arc<Lease>], now: Timestamp) {
        let next = node_reports(&self.shown, reports, now);
        for (node, report) in &next {
            if self.shown.get(node) == Some(report) {
                continue;
            }
            let free = report.free_bytes.map_or(f64::NAN, |b| b as f64);
            metrics::gauge!(HOSTPATH_FREE_BYTES, "node" => node.clone()).set(free);
            if let Some(ms) = report.renewed_ms {
                metrics::gauge!(HOSTPATH_REPORT_RENEWED, "node" => node.clone())
                    .set(ms as f64 / 1000.0);
            }
        }
        self.shown = next;
    }
}

#[cfg(test)]
mod tests;
