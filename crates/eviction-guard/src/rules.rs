//! The admission decision, pure: from an AdmissionRequest, the pod it concerns and the current
//! [`Snapshot`], decide whether to refuse it (DESIGN §5).
//!
//! Refused, while pods on the pod's node are protected: DELETE of a pod, CREATE of
//! `pods/eviction` (429, retryable), UPDATEs adding `deletionTimestamp` /
//! `deletionGracePeriodSeconds`, and status UPDATEs marking the pod not Ready, Failed or a
//! `DisruptionTarget` (can be turned off). Never refused: exempt users and groups, unscheduled
//! pods, pods whose node object is gone, pods on out-of-service nodes and on Ready nodes.

use std::borrow::Cow;
use std::collections::BTreeSet;

use ballast_runtime::admission::{Operation as AdmissionOp, Request, null_as_default};
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use crate::storm::Snapshot;

/// HTTP code for refused evictions: drains and autoscalers retry on 429.
pub const EVICTION_DENY_CODE: u16 = 429;
/// HTTP code for refused deletions and updates.
pub const DENY_CODE: u16 = 403;

/// Admission settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub exempt_users: BTreeSet<String>,
    pub exempt_groups: BTreeSet<String>,
    /// Refuse status updates marking pods not ready / failed / disruption targets.
    pub intercept_status: bool,
    /// How to lift protection, appended to every denial message.
    pub lift_hint: String,
    /// What lifting protection does to refused deletions ([`crate::release::after_lift`]),
    /// appended to every denial but an eviction's.
    pub after_lift: String,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            exempt_users: BTreeSet::new(),
            exempt_groups: BTreeSet::new(),
            intercept_status: true,
            lift_hint: lift_hint("eviction-guard.ballast-system.svc:9090", false),
            after_lift: crate::release::after_lift(&crate::release::ReleaseConfig::default()),
        }
    }
}

/// The standard "how to lift protection" sentence for a control service address.
pub fn lift_hint(grpc_address: &str, grpc_tls: bool) -> String {
    // grpcurl speaks TLS unless told otherwise
    let plaintext = if grpc_tls { "" } else { "-plaintext " };
    format!(
        "to lift protection set mode DISABLED: grpcurl {plaintext}-H 'authorization: Bearer $TOKEN' \
         -d '{{\"mode\":\"MODE_DISABLED\",\"reason\":\"...\"}}' {grpc_address} \
         ballast.control.v1.ControlService/SetMode (or POST /callback/disable-interception)"
    )
}

/// The operations the guard can refuse; `label()` is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Delete,
    Eviction,
    /// UPDATE adding deletionTimestamp / deletionGracePeriodSeconds.
    MarkDeletion,
    /// status UPDATE marking the pod not Ready, Failed or a DisruptionTarget.
    Status,
}

impl Operation {
    pub fn label(self) -> &'static str {
        match self {
            Operation::Delete => "delete",
            Operation::Eviction => "eviction",
            Operation::MarkDeletion => "update",
            Operation::Status => "status",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Operation::Delete => "deletion",
            Operation::Eviction => "eviction",
            Operation::MarkDeletion => "marking for deletion",
            Operation::Status => "status update (not ready / failed / disruption target)",
        }
    }
}

/// The few pod fields the decision reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodFacts {
    pub node: Option<String>,
    pub deletion_timestamp: bool,
    pub deletion_grace: Option<i64>,
    /// The Ready condition: Some(true) True, Some(false) False/Unknown, None absent.
    pub ready: Option<bool>,
    pub phase: Option<String>,
    pub disruption_target: bool,
}

impl PodFacts {
    /// From a pod in a review.
    pub fn from_view(pod: &PodView<'_>) -> Self {
        PodFacts {
            node: pod
                .spec
                .node_name
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            deletion_timestamp: pod.metadata.deletion_timestamp.is_some(),
            deletion_grace: pod.metadata.deletion_grace_period_seconds,
            ready: pod.status.conditions.ready,
            phase: pod.status.phase.as_deref().map(str::to_owned),
            disruption_target: pod.status.conditions.disruption_target == Some(true),
        }
    }

    /// From a typed pod (the GET an eviction needs).
    pub fn from_pod(pod: &Pod) -> Self {
        let conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let cond = |ty: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == ty)
                .map(|c| c.status.as_str())
        };
        PodFacts {
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|s| !s.is_empty()),
            deletion_timestamp: pod.metadata.deletion_timestamp.is_some(),
            deletion_grace: pod.metadata.deletion_grace_period_seconds,
            ready: cond("Ready").map(|s| s == "True"),
            phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
            disruption_target: cond("DisruptionTarget") == Some("True"),
        }
    }
}

fn facts(obj: Option<&PodView<'_>>) -> Option<PodFacts> {
    obj.map(PodFacts::from_view)
}

/// What the guard reads of a pod in a review (`object`, `oldObject`); every other field is
/// skipped unread.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PodView<'a> {
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub metadata: PodMetaView<'a>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub spec: PodSpecView<'a>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub status: PodStatusView<'a>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMetaView<'a> {
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub resource_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub deletion_timestamp: Option<Cow<'a, str>>,
    #[serde(default)]
    pub deletion_grace_period_seconds: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpecView<'a> {
    #[serde(borrow, default)]
    pub node_name: Option<Cow<'a, str>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PodStatusView<'a> {
    #[serde(borrow, default)]
    pub phase: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "conditions")]
    pub conditions: Conditions,
}

/// The two pod conditions the guard reads, as the first condition of each type says: Some(true)
/// for status True, Some(false) for False or Unknown, None when absent.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Conditions {
    pub ready: Option<bool>,
    pub disruption_target: Option<bool>,
}

/// Folds `status.conditions` into [`Conditions`] as it is read, keeping no list.
fn conditions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Conditions, D::Error> {
    #[derive(Deserialize)]
    struct Condition<'a> {
        #[serde(borrow, default, rename = "type")]
        type_: Cow<'a, str>,
        #[serde(borrow, default)]
        status: Cow<'a, str>,
    }
    struct Fold;
    impl<'de> serde::de::Visitor<'de> for Fold {
        type Value = Conditions;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of pod conditions")
        }
        fn visit_unit<E>(self) -> Result<Conditions, E> {
            Ok(Conditions::default())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Conditions, A::Error> {
            let mut out = Conditions::default();
            while let Some(c) = seq.next_element::<Condition<'de>>()? {
                let slot = match c.type_.as_ref() {
                    "Ready" => &mut out.ready,
                    "DisruptionTarget" => &mut out.disruption_target,
                    _ => continue,
                };
                if slot.is_none() {
                    *slot = Some(c.status == "True");
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(Fold)
}

/// A review request as the guard decodes it.
pub type PodRequest<'a> = Request<'a, PodView<'a>>;

/// What a request asks, as far as the guard cares.
#[derive(Clone, Debug, PartialEq)]
pub enum Intent {
    /// Nothing the guard ever refuses.
    Ignored,
    /// An eviction: the pod is not in the request and must be looked up by name.
    Eviction,
    /// A guarded operation on the pod described.
    Guarded(Operation, Option<PodFacts>),
}

/// Classify a request (pure, no lookups).
pub fn classify(req: &PodRequest<'_>, policy: &Policy) -> Intent {
    if !req.resource.group.is_empty() || req.resource.resource != "pods" {
        return Intent::Ignored;
    }
    match (&req.operation, req.sub_resource()) {
        (AdmissionOp::Create, "eviction") => Intent::Eviction,
        (AdmissionOp::Delete, "") => {
            Intent::Guarded(Operation::Delete, facts(req.old_object.as_ref()))
        }
        (AdmissionOp::Update, "") => {
            let (Some(new), old) = (
                facts(req.object.as_ref()),
                facts(req.old_object.as_ref()).unwrap_or_default(),
            ) else {
                return Intent::Ignored;
            };
            let adds_deletion = (new.deletion_timestamp && !old.deletion_timestamp)
                || (new.deletion_grace.is_some() && new.deletion_grace != old.deletion_grace);
            if adds_deletion {
                Intent::Guarded(Operation::MarkDeletion, Some(new))
            } else {
                Intent::Ignored
            }
        }
        (AdmissionOp::Update, "status") if policy.intercept_status => {
            let (Some(new), old) = (
                facts(req.object.as_ref()),
                facts(req.old_object.as_ref()).unwrap_or_default(),
            ) else {
                return Intent::Ignored;
            };
            let marks_not_ready = new.ready == Some(false) && old.ready != Some(false);
            let marks_failed =
                new.phase.as_deref() == Some("Failed") && old.phase.as_deref() != Some("Failed");
            let marks_disruption = new.disruption_target && !old.disruption_target;
            if marks_not_ready || marks_failed || marks_disruption {
                Intent::Guarded(Operation::Status, Some(new))
            } else {
                Intent::Ignored
            }
        }
        _ => Intent::Ignored,
    }
}

/// Why a request was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Not an operation the guard refuses.
    NotGuarded,
    /// The caller is an exempt user or in an exempt group.
    Exempt,
    /// No pod to judge (eviction of a pod that does not exist, DELETE without oldObject).
    PodUnknown,
    /// The pod is not bound to a node.
    Unscheduled,
    /// The pod's node is not a known worker node (deleted, or not a worker).
    NodeGone,
    /// The node is tainted out-of-service.
    OutOfService,
    NodeReady,
    /// The node is NotReady but its pods are not protected now.
    NotProtecting,
}

/// The decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Allow {
        op: Option<Operation>,
        why: Allowed,
    },
    Deny {
        op: Operation,
        code: u16,
        node: String,
        message: String,
    },
}

impl Verdict {
    pub fn op(&self) -> Option<Operation> {
        match self {
            Verdict::Allow { op, .. } => *op,
            Verdict::Deny { op, .. } => Some(*op),
        }
    }
}

/// Whether the caller is exempt.
pub fn is_exempt(req: &PodRequest<'_>, policy: &Policy) -> bool {
    let user = &req.user_info;
    user.username
        .as_deref()
        .is_some_and(|u| policy.exempt_users.contains(u))
        || user.groups().any(|g| policy.exempt_groups.contains(g))
}

/// Decide. `evicted_pod` is the pod looked up for an eviction (None when not found or not an
/// eviction). Dry-run requests get the same verdict; the caller keeps them out of the counters.
pub fn review(
    req: &PodRequest<'_>,
    evicted_pod: Option<&PodFacts>,
    snapshot: &Snapshot,
    policy: &Policy,
) -> Verdict {
    let (op, pod) = match classify(req, policy) {
        Intent::Ignored => {
            return Verdict::Allow {
                op: None,
                why: Allowed::NotGuarded,
            };
        }
        Intent::Eviction => (Operation::Eviction, evicted_pod.cloned()),
        Intent::Guarded(op, pod) => (op, pod),
    };
    let allow = |why| Verdict::Allow { op: Some(op), why };
    if is_exempt(req, policy) {
        return allow(Allowed::Exempt);
    }
    if snapshot.protection.protected.is_empty() {
        return allow(Allowed::NotProtecting);
    }
    let Some(pod) = pod else {
        return allow(Allowed::PodUnknown);
    };
    let Some(node_name) = pod.node else {
        return allow(Allowed::Unscheduled);
    };
    let Some(node) = snapshot.workers.get(&node_name) else {
        return allow(Allowed::NodeGone);
    };
    if node.out_of_service {
        return allow(Allowed::OutOfService);
    }
    if node.ready {
        return allow(Allowed::NodeReady);
    }
    let protection = &snapshot.protection;
    if !protection.protected.contains(&node_name) {
        return allow(Allowed::NotProtecting);
    }
    let fmt_time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "an unknown time".to_owned())
    };
    let then = if op == Operation::Eviction {
        "the eviction is retryable: retry it once protection is lifted (clients retry 429 by \
         themselves)"
    } else {
        policy.after_lift.as_str()
    };
    let message = format!(
        "eviction-guard refused {} of pod {}/{}: node {} is NotReady ({}) since {}, and pods on \
         NotReady nodes are protected (mode {}: {}; protection on since {}); {}; {}",
        op.noun(),
        req.namespace(),
        req.name,
        node_name,
        node.reason,
        fmt_time(node.since),
        protection.mode,
        protection.reason,
        fmt_time(protection.since),
        policy.lift_hint,
        then,
    );
    Verdict::Deny {
        op,
        code: if op == Operation::Eviction {
            EVICTION_DENY_CODE
        } else {
            DENY_CODE
        },
        node: node_name,
        message,
    }
}

#[cfg(test)]
mod tests;
