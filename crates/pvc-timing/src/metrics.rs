//! The metrics this service exports, by name. Names of the first two are the seed's contract.
//!
//! Histograms whose name ends in `_seconds` get the runtime's bucket list (sub-second to an
//! hour), which covers time-to-bind from instant local volumes to slow cloud provisioning.

/// Counter `{phase}`: a claim entered `phase` (counted once per history entry, by the
/// controller, from what the API server stored). `phase` is one of the known claim phases.
pub const PHASE_TRANSITIONS: &str = "pvc_phase_transitions_total";
/// Histogram `{storage_class}`: seconds from a claim's creation to its first Bound (from the
/// stored history). `storage_class` is an existing class, `other`, or empty for none.
pub const TIME_TO_BOUND: &str = "pvc_time_to_bound_seconds";
/// Counter `{kind}`: `pvc-timing` values that could not be used as they stood.
pub const ANNOTATION_REPAIRS: &str = "pvc_timing_annotation_repairs_total";
/// Counter `{reason}`: admission requests answered without a patch because of an error.
pub const WEBHOOK_ERRORS: &str = "pvc_timing_webhook_errors_total";
/// Counter: `webhook-trigger` annotations the controller added.
pub const TRIGGERS_ADDED: &str = "pvc_timing_triggers_added_total";
/// Counter `{error}`: failed controller reconciles.
pub const CONTROLLER_ERRORS: &str = "pvc_timing_controller_errors_total";

/// Label value for claims without `spec.storageClassName`.
pub const NO_STORAGE_CLASS: &str = "";

/// Registers help texts with the global recorder.
pub fn describe() {
    metrics::describe_counter!(
        PHASE_TRANSITIONS,
        "PersistentVolumeClaim phase transitions stored in the pvc-timing history, by phase entered."
    );
    metrics::describe_histogram!(
        TIME_TO_BOUND,
        metrics::Unit::Seconds,
        "Seconds from PersistentVolumeClaim creation to its first Bound phase, by storage class."
    );
    metrics::describe_counter!(
        ANNOTATION_REPAIRS,
        "pvc-timing annotation values that were corrupt, foreign or dropped, by repair kind."
    );
    metrics::describe_counter!(
        WEBHOOK_ERRORS,
        "Admission requests the pvc-timing webhook let through unchanged because of an error."
    );
    metrics::describe_counter!(
        TRIGGERS_ADDED,
        "webhook-trigger annotations added to Bound claims by the pvc-timing controller."
    );
    metrics::describe_counter!(
        CONTROLLER_ERRORS,
        "Failed pvc-timing controller reconciles, by error."
    );
}
