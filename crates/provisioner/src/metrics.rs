//! Metric names and the few places they are recorded.

use std::time::Duration;

/// Volumes created (every PV this provisioner created), by class.
pub const PROVISIONED: &str = "provisioner_volumes_provisioned_total";
/// Volumes whose directory was removed (or archived) and PV deleted, by class.
pub const DELETED: &str = "provisioner_volumes_deleted_total";
/// Failed operations, by class, operation (`provision`, `bind`, `reclaim`) and reason label.
pub const FAILURES: &str = "provisioner_failures_total";
/// Seconds from starting to provision a claim until its volume is created, by class.
pub const PROVISION_DURATION: &str = "provisioner_provision_duration_seconds";

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
    metrics::describe_histogram!(
        PROVISION_DURATION,
        metrics::Unit::Seconds,
        "Seconds from starting to provision a claim until its volume is created, by storage class."
    );
}

pub fn provisioned(class: &str, took: Duration) {
    metrics::counter!(PROVISIONED, "class" => class.to_owned()).increment(1);
    metrics::histogram!(PROVISION_DURATION, "class" => class.to_owned()).record(took.as_secs_f64());
}

pub fn deleted(class: &str) {
    metrics::counter!(DELETED, "class" => class.to_owned()).increment(1);
}

pub fn failed(class: &str, operation: &'static str, reason: &'static str) {
    metrics::counter!(FAILURES, "class" => class.to_owned(), "operation" => operation, "reason" => reason)
        .increment(1);
}
