//! eviction-guard: protects pods on NotReady nodes during a node failure storm.
//!
//! In: Node watch events (the only cache), AdmissionReviews for pods (DELETE, UPDATE,
//! pods/status UPDATE, pods/eviction CREATE) on `/validate`, mode changes through the seed's
//! callbacks and the gRPC control service. Out: admission verdicts (429 for evictions, 403 for
//! deletes and updates), the mode persisted in a ConfigMap, interception state and node health
//! over gRPC, metrics, and an audit log line for every refusal and mode change.

pub mod rules;
pub mod storm;
