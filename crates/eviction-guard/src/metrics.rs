//! Metric names (the seed's where it had them) and the few places that record them. The
//! admission latency histogram (`admission_duration_seconds{webhook="eviction-guard"}`) is
//! recorded by the runtime's admission route.

use ballast_control::Mode;

use crate::rules::Operation;
use crate::storm::Protection;

/// NotReady worker nodes now (seed name).
pub const NODE_NOTREADY_COUNT: &str = "node_notready_count";
/// Refused requests, label `operation` (seed name).
pub const EVICTION_INTERCEPTED_TOTAL: &str = "eviction_intercepted_total";
/// Guarded requests let through, label `operation` (seed name).
pub const EVICTION_ALLOWED_TOTAL: &str = "eviction_allowed_total";
/// 1 while pods on NotReady nodes are protected.
pub const PROTECTION_ACTIVE: &str = "eviction_protection_active";
/// Worker nodes watched.
pub const WORKER_NODES: &str = "eviction_guard_worker_nodes";
/// Mode changes, label `mode` (the new mode).
pub const MODE_CHANGES_TOTAL: &str = "eviction_guard_mode_changes_total";
/// Eviction pod lookups that failed, so the eviction was refused as retryable.
pub const POD_LOOKUP_ERRORS_TOTAL: &str = "eviction_guard_pod_lookup_errors_total";

/// Refused evictions of the node controller the guard completed once protection lifted.
pub const RELEASED_TOTAL: &str = "eviction_guard_released_total";
/// Releases that failed (retried on the next pass).
pub const RELEASE_ERRORS_TOTAL: &str = "eviction_guard_release_errors_total";

/// Node watch errors (the watch retries with backoff; the node cache may be stale meanwhile).
pub const NODE_WATCH_ERRORS_TOTAL: &str = "eviction_guard_node_watch_errors_total";
/// 1 while the Node watch's last result was an event, 0 after an error until the next event.
pub const NODE_WATCH_HEALTHY: &str = "eviction_guard_node_watch_healthy";

/// Every operation label of the interception counters.
const OPERATIONS: [Operation; 4] = [
    Operation::Delete,
    Operation::Eviction,
    Operation::MarkDeletion,
    Operation::Status,
];

/// HELP texts for every family, and every counter the README lists at 0, so an operator can
/// alert on them (and on `rate()`) from the first scrape. Call once the recorder is installed.
pub fn register() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        NODE_NOTREADY_COUNT,
        "Worker nodes whose Ready condition is False or Unknown (name kept from the seed)."
    );
    describe_counter!(
        EVICTION_INTERCEPTED_TOTAL,
        "Requests refused to protect pods on NotReady nodes, by operation."
    );
    describe_counter!(
        EVICTION_ALLOWED_TOTAL,
        "Guarded requests (deletes, evictions, deletion marks, status updates) let through, by operation."
    );
    describe_gauge!(
        PROTECTION_ACTIVE,
        "1 while pods on NotReady worker nodes are protected, 0 otherwise."
    );
    describe_gauge!(WORKER_NODES, "Worker nodes the guard watches.");
    describe_counter!(
        MODE_CHANGES_TOTAL,
        "Interception mode changes made through this replica, by new mode."
    );
    describe_counter!(
        POD_LOOKUP_ERRORS_TOTAL,
        "Evictions refused as retryable because their pod could not be read."
    );
    describe_counter!(
        NODE_WATCH_ERRORS_TOTAL,
        "Errors of the Node watch (it retries; the node cache may be stale meanwhile)."
    );
    describe_gauge!(
        NODE_WATCH_HEALTHY,
        "1 while the Node watch's last result was an event, 0 after an error."
    );
    describe_counter!(
        RELEASED_TOTAL,
        "Pods whose refused taint-based eviction the guard completed once protection lifted."
    );
    describe_counter!(
        RELEASE_ERRORS_TOTAL,
        "Failed attempts to complete a refused eviction (retried on the next pass)."
    );
    for op in OPERATIONS {
        metrics::counter!(EVICTION_INTERCEPTED_TOTAL, "operation" => op.label()).increment(0);
        metrics::counter!(EVICTION_ALLOWED_TOTAL, "operation" => op.label()).increment(0);
    }
    for mode in [Mode::Auto, Mode::Disabled, Mode::Forced] {
        metrics::counter!(MODE_CHANGES_TOTAL, "mode" => mode.as_str()).increment(0);
    }
    for name in [
        POD_LOOKUP_ERRORS_TOTAL,
        NODE_WATCH_ERRORS_TOTAL,
        RELEASED_TOTAL,
        RELEASE_ERRORS_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// `healthy`: an event arrived; otherwise an error did (counted).
pub(crate) fn node_watch(healthy: bool) {
    metrics::gauge!(NODE_WATCH_HEALTHY).set(if healthy { 1.0 } else { 0.0 });
    if !healthy {
        metrics::counter!(NODE_WATCH_ERRORS_TOTAL).increment(1);
    }
}

pub(crate) fn protection(p: &Protection, synced: bool) {
    if !synced {
        return;
    }
    metrics::gauge!(NODE_NOTREADY_COUNT).set(p.notready.len() as f64);
    metrics::gauge!(PROTECTION_ACTIVE).set(if p.protecting { 1.0 } else { 0.0 });
    metrics::gauge!(WORKER_NODES).set(p.workers as f64);
}

pub(crate) fn intercepted(op: Operation) {
    metrics::counter!(EVICTION_INTERCEPTED_TOTAL, "operation" => op.label()).increment(1);
}

pub(crate) fn allowed(op: Operation) {
    metrics::counter!(EVICTION_ALLOWED_TOTAL, "operation" => op.label()).increment(1);
}

pub(crate) fn mode_changed(mode: Mode) {
    metrics::counter!(MODE_CHANGES_TOTAL, "mode" => mode.as_str()).increment(1);
}

pub(crate) fn released() {
    metrics::counter!(RELEASED_TOTAL).increment(1);
}

pub(crate) fn release_failed() {
    metrics::counter!(RELEASE_ERRORS_TOTAL).increment(1);
}

pub(crate) fn pod_lookup_failed() {
    metrics::counter!(POD_LOOKUP_ERRORS_TOTAL).increment(1);
}
