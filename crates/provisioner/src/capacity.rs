//! The node agents' capacity reports: one Lease per node in the provisioner's namespace, held
//! by that node's agent, carrying the free bytes under the hostPath base directory.
//!
//! Why a Lease: it is Kubernetes' own object for "this node-local component is alive"
//! (kubelet's heartbeats in `kube-node-lease` are Leases), with a holder, a renew time and a
//! duration, so a report whose agent is gone expires by itself. The controller turns the fresh
//! reports into CSIStorageCapacity objects for the scheduler (`plan::capacity`); the agents
//! write only their Lease, so they write nothing outside their namespace.
//!
//! Timing, as the kubelet's node Lease: valid [`LEASE_SECONDS`] (40s), renewed every
//! [`RENEW_SECONDS`] (10s, a quarter), so a dead agent is believed no longer than a dead
//! kubelet is, and a missed renewal or two is not taken for a death. Writes stay rare besides:
//! an agent also rewrites its report when free space moved by more than [`CHANGE_PERCENT`].

use std::collections::BTreeMap;
use std::time::Duration;

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
/// A report not renewed for this long is taken as gone: its node gets no new hostPath volumes
/// and loses its capacity objects. The kubelet's node Lease duration
/// (`nodeLeaseDurationSeconds`), so an agent's death is noticed as fast as a node's.
pub const LEASE_SECONDS: i32 = 40;
/// An agent renews its report this often: a quarter of [`LEASE_SECONDS`], as the kubelet
/// renews its node Lease, so three renewals may fail before the report expires.
pub const RENEW_SECONDS: i32 = LEASE_SECONDS / 4;
/// Free space moving by more than this (relative to the last report) is reported.
pub const CHANGE_PERCENT: u64 = 5;

/// How long a report stays valid ([`LEASE_SECONDS`] unless configured otherwise).
pub fn default_lifetime() -> Duration {
    Duration::from_secs(LEASE_SECONDS.unsigned_abs().into())
}

/// How often an agent renews a report valid for `lifetime`: a quarter of it, at least a second.
pub fn renew_every(lifetime: Duration) -> Duration {
    (lifetime / 4).max(Duration::from_secs(1))
}

/// The name of `node`'s report.
pub fn name(node: &str) -> String {
    format!("hostpath-{}", node_label(node))
}

/// `node`'s report: `free_bytes` as of `now`, held by agent `identity`, valid for `lifetime`
/// (whole seconds, at least one).
pub fn report(
    namespace: &str,
    node: &str,
    identity: &str,
    free_bytes: u64,
    now: Timestamp,
    lifetime: Duration,
) -> Lease {
    let seconds = i32::try_from(lifetime.as_secs().max(1)).unwrap_or(i32::MAX);
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
            lease_duration_seconds: Some(seconds),
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

/// When the report stops being valid: its renew time plus its duration.
pub fn expires_at(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds?));
    renewed.checked_add(duration).ok()
}

/// The report's content, whatever its age.
fn content(lease: &Lease) -> Option<Report> {
    Some(Report {
        node: annotation(&lease.metadata, ANN_NODE)?.to_owned(),
        free_bytes: annotation(&lease.metadata, ANN_FREE_BYTES)?.parse().ok()?,
    })
}

/// The report's content, when it was renewed within its duration at `now`.
pub fn read(lease: &Lease, now: Timestamp) -> Option<Report> {
    if expires_at(lease)? < now {
        return None;
    }
    content(lease)
}

/// The earliest moment after `now` at which one of the fresh `reports` expires: when the
/// controller must look again, as nothing is written when an agent falls silent.
pub fn next_expiry<'a>(
    reports: impl IntoIterator<Item = &'a Lease>,
    now: Timestamp,
) -> Option<Timestamp> {
    reports
        .into_iter()
        .filter_map(expires_at)
        .filter(|at| *at >= now)
        .min()
}

/// Whether free space moved by more than [`CHANGE_PERCENT`] of `before`.
pub fn moved(before: u64, now: u64) -> bool {
    // moved / before > CHANGE_PERCENT / 100, in integers.
    u128::from(before.abs_diff(now)) * 100 > u128::from(before) * u128::from(CHANGE_PERCENT)
}

/// What the controller last took from a node's report: the free bytes and when it expires.
pub type Seen = (u64, Timestamp);

/// Whether a written report is news for placement (worth a full pass over the claims): the
/// node's first report, one after the last had expired, or free space moved by more than
/// [`CHANGE_PERCENT`]. A renewal saying the same is not: with every agent renewing every
/// [`RENEW_SECONDS`], a pass per renewal would re-examine every claim several times a second
/// on a large cluster. Returns the report's node and what to remember of it.
pub fn news(seen: Option<Seen>, lease: &Lease, now: Timestamp) -> Option<(String, Seen, bool)> {
    let report = content(lease)?;
    let expires = expires_at(lease)?;
    let fresh_news = match seen {
        None => true,
        Some((before, expired)) => expired < now || moved(before, report.free_bytes),
    };
    let remembered = match seen {
        Some((before, _)) if !fresh_news => (before, expires),
        _ => (report.free_bytes, expires),
    };
    Some((report.node, remembered, fresh_news))
}

/// Whether an agent rewrites its report: never written, renewal due (`renew` after the last
/// write), or free space moved by more than [`CHANGE_PERCENT`].
pub fn worth_writing(
    last: Option<(u64, Timestamp)>,
    free_bytes: u64,
    now: Timestamp,
    renew: Duration,
) -> bool {
    let Some((before, at)) = last else {
        return true;
    };
    let renew = SignedDuration::try_from(renew).unwrap_or(SignedDuration::MAX);
    now.duration_since(at) >= renew || moved(before, free_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn lifetime() -> Duration {
        default_lifetime()
    }

    #[test]
    fn a_report_lives_as_long_as_a_kubelets_node_lease_and_is_renewed_as_often() {
        assert_eq!(lifetime(), Duration::from_secs(40));
        assert_eq!(renew_every(lifetime()), Duration::from_secs(10));
        assert_eq!(
            i64::from(RENEW_SECONDS),
            renew_every(lifetime()).as_secs() as i64
        );
        assert_eq!(renew_every(Duration::from_secs(2)), Duration::from_secs(1));
    }

    #[test]
    fn a_report_reads_back_while_fresh_and_expires_when_its_agent_falls_silent() {
        let lease = report("ns", "node-1", "agent-x", 1024, at(0), lifetime());
        assert_eq!(lease.metadata.name.as_deref(), Some("hostpath-node-1"));
        assert_eq!(
            lease.spec.as_ref().unwrap().lease_duration_seconds,
            Some(40)
        );
        let fresh = Report {
            node: "node-1".into(),
            free_bytes: 1024,
        };
        assert_eq!(read(&lease, at(LEASE_SECONDS.into())), Some(fresh));
        assert_eq!(read(&lease, at(i64::from(LEASE_SECONDS) + 1)), None);
        assert_eq!(expires_at(&lease), Some(at(40)));
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
        let lease = report("ns", &node, "a", 1, at(0), lifetime());
        assert!(lease.metadata.name.unwrap().len() <= 63);
        assert_eq!(
            read(&report("ns", &node, "a", 1, at(0), lifetime()), at(0))
                .unwrap()
                .node,
            node
        );
    }

    #[test]
    fn reports_are_rewritten_only_on_a_change_of_a_few_percent_or_to_renew() {
        let renew = renew_every(lifetime());
        assert!(worth_writing(None, 100, at(0), renew));
        let last = Some((1000, at(0)));
        assert!(!worth_writing(last, 1000, at(5), renew));
        assert!(
            !worth_writing(last, 950, at(5), renew),
            "5% is not more than 5%"
        );
        assert!(worth_writing(last, 949, at(5), renew));
        assert!(worth_writing(last, 1051, at(5), renew));
        assert!(!worth_writing(last, 1000, at(9), renew));
        assert!(worth_writing(last, 1000, at(10), renew), "renewal due");
        assert!(worth_writing(Some((0, at(0))), 1, at(1), renew));
    }

    #[test]
    fn the_controller_looks_again_when_the_first_fresh_report_expires() {
        let reports = [
            report("ns", "a", "x", 1, at(0), lifetime()),
            report("ns", "b", "x", 1, at(-30), lifetime()),
            report("ns", "c", "x", 1, at(-100), lifetime()),
        ];
        assert_eq!(
            next_expiry(&reports, at(5)),
            Some(at(10)),
            "b's, not c's long gone"
        );
        assert_eq!(next_expiry(&reports, at(11)), Some(at(40)));
        assert_eq!(next_expiry(&reports, at(41)), None);
    }

    #[test]
    fn only_a_new_revived_or_moved_report_is_news_for_placement() {
        let now = at(0);
        let first = report("ns", "a", "x", 1000, now, lifetime());
        let (node, seen, news_) = news(None, &first, now).unwrap();
        assert_eq!((node.as_str(), seen, news_), ("a", (1000, at(40)), true));
        // A renewal with a small drift: not news, and the reference value stays.
        let renewed = report("ns", "a", "x", 1040, at(10), lifetime());
        assert_eq!(
            news(Some(seen), &renewed, at(10)),
            Some(("a".into(), (1000, at(50)), false))
        );
        let moved_on = report("ns", "a", "x", 1100, at(10), lifetime());
        assert_eq!(
            news(Some(seen), &moved_on, at(10)),
            Some(("a".into(), (1100, at(50)), true))
        );
        // Back after its report had expired.
        let revived = report("ns", "a", "x", 1000, at(60), lifetime());
        assert!(
            news(Some(seen), &revived, at(60)).unwrap().2,
            "back from expiry"
        );
        let mut broken = first.clone();
        broken.metadata.annotations = None;
        assert_eq!(news(None, &broken, now), None);
    }
}
