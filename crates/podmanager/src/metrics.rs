//! Metrics of the operator, recorded into the process-wide recorder of `ballast_runtime`.

use std::time::Duration;

/// `podmanager_reconcile_total{result}`: reconciles by outcome (`success` or an error label).
pub const RECONCILE_TOTAL: &str = "podmanager_reconcile_total";
/// `podmanager_reconcile_duration_seconds`: time per reconcile, API calls included.
pub const RECONCILE_DURATION: &str = "podmanager_reconcile_duration_seconds";
/// `podmanager_pod_operations_total{operation,result}`: pod creates and deletes.
pub const POD_OPERATIONS_TOTAL: &str = "podmanager_pod_operations_total";

/// Handle passed in the reconcile context; cheap to clone, records into the global recorder.
#[derive(Clone, Debug, Default)]
pub struct Metrics;

impl Metrics {
    /// Describe the metrics once so `/metrics` carries HELP lines.
    pub fn new() -> Self {
        metrics::describe_counter!(RECONCILE_TOTAL, "PodManager reconciles by result");
        metrics::describe_histogram!(
            RECONCILE_DURATION,
            metrics::Unit::Seconds,
            "Time taken by one PodManager reconcile"
        );
        metrics::describe_counter!(
            POD_OPERATIONS_TOTAL,
            "Pod creates and deletes made by the PodManager operator"
        );
        Self
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
}
