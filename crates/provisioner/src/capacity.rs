//! The node agents' capacity reports: one Lease per node in the provisioner's namespace, held
//! by that node's agent, carrying the free bytes under the hostPath base directory.
//!
//! Why a Lease: it is Kubernetes' own object for "this node-local component is alive"
//! (kubelet's heartbeats in `kube-node-lease` are Leases), with a holder, a renew time and a
//! duration, so a report whose agent is gone expires by itself. CSIStorageCapacity would say
//! "capacity" more precisely, but the scheduler reads it only for CSI drivers, and a hostPath
//! provisioner is none; Node annotations would need every agent to patch Nodes.
//!
//! Writes stay rare: an agent rewrites its report only when free space moved by more than
//! [`CHANGE_PERCENT`] or the report is a third of its [`LEASE_SECONDS`] old.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::objects::{annotation, node_label};

/// Label on every report, selecting them from other Leases of the namespace.
pub const LABEL_REPORT: &str = "ballast.dev/hostpath-capacity";
/// Annotation: the node the report is about (the Lease name may carry a hash of it).
pub const ANN_NODE: &str = "ballast.dev/node";
/// Annotation: free bytes under the hostPath base directory.
pub const ANN_FREE_BYTES: &str = "ballast.dev/hostpath-free-bytes";
/// A report not renewed for this long is taken as gone: its node gets no new hostPath volumes.
pub const LEASE_SECONDS: i32 = 600;
/// Free space moving by more than this (relative to the last report) is reported.
pub const CHANGE_PERCENT: u64 = 5;

/// The name of `node`'s report.
pub fn name(node: &str) -> String {
    format!("hostpath-{}", node_label(node))
}

/// `node`'s report: `free_bytes` as of `now`, held by agent `identity`.
pub fn report(
    namespace: &str,
    node: &str,
    identity: &str,
    free_bytes: u64,
    now: Timestamp,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name(node)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                LABEL_REPORT.to_owned(),
                "true".to_owned(),
            )])),
            annotations: Some(BTreeMap::from([
                (ANN_NODE.to_owned(), node.to_owned()),
                (ANN_FREE_BYTES.to_owned(), free_bytes.to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        }),
    }
}

/// What a fresh report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub node: String,
    pub free_bytes: u64,
}

/// The report's content, when it was renewed within its duration at `now`.
pub fn read(lease: &Lease, now: Timestamp) -> Option<Report> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds?));
    if now.duration_since(renewed) > duration {
        return None;
    }
    Some(Report {
        node: annotation(&lease.metadata, ANN_NODE)?.to_owned(),
        free_bytes: annotation(&lease.metadata, ANN_FREE_BYTES)?.parse().ok()?,
    })
}

/// Whether an agent rewrites its report: never written, renewal due (a third of the duration,
/// as Kubernetes' leases renew), or free space moved by more than [`CHANGE_PERCENT`].
pub fn worth_writing(last: Option<(u64, Timestamp)>, free_bytes: u64, now: Timestamp) -> bool {
    let Some((before, at)) = last else {
        return true;
    };
    let renew_every = SignedDuration::from_secs(i64::from(LEASE_SECONDS / 3));
    if now.duration_since(at) >= renew_every {
        return true;
    }
    let moved = before.abs_diff(free_bytes);
    // moved / before > CHANGE_PERCENT / 100, in integers.
    u128::from(moved) * 100 > u128::from(before) * u128::from(CHANGE_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn a_report_reads_back_while_fresh_and_expires_when_its_agent_falls_silent() {
        let lease = report("ns", "node-1", "agent-x", 1024, at(0));
        assert_eq!(lease.metadata.name.as_deref(), Some("hostpath-node-1"));
        let fresh = Report {
            node: "node-1".into(),
            free_bytes: 1024,
        };
        assert_eq!(read(&lease, at(LEASE_SECONDS.into())), Some(fresh));
        assert_eq!(read(&lease, at(i64::from(LEASE_SECONDS) + 1)), None);
        let mut broken = lease.clone();
        broken
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_FREE_BYTES.into(), "lots".into());
        assert_eq!(read(&broken, at(0)), None);
    }

    #[test]
    fn long_node_names_get_a_report_name_that_fits() {
        let node = format!("{}.example.internal", "n".repeat(70));
        let lease = report("ns", &node, "a", 1, at(0));
        assert!(lease.metadata.name.unwrap().len() <= 63);
        assert_eq!(
            read(&report("ns", &node, "a", 1, at(0)), at(0))
                .unwrap()
                .node,
            node
        );
    }

    #[test]
    fn reports_are_rewritten_only_on_a_change_of_a_few_percent_or_to_renew() {
        assert!(worth_writing(None, 100, at(0)));
        let last = Some((1000, at(0)));
        assert!(!worth_writing(last, 1000, at(10)));
        assert!(!worth_writing(last, 950, at(10)), "5% is not more than 5%");
        assert!(worth_writing(last, 949, at(10)));
        assert!(worth_writing(last, 1051, at(10)));
        assert!(!worth_writing(last, 1000, at(199)));
        assert!(worth_writing(last, 1000, at(200)), "renewal due");
        assert!(worth_writing(Some((0, at(0))), 1, at(1)));
    }
}
