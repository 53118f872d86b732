//! The validating webhook's I/O: read the latest snapshot, look the pod up for an eviction (the
//! one GET the guard makes; evictions are rare), call [`rules::review`], count, audit (through
//! [`crate::audit`], off the review's path), answer.

use std::sync::Arc;
use std::time::Duration;

use ballast_runtime::admission::{Answer, Handler};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::audit::Refused;
use crate::guard::{Guard, error_chain};
use crate::metrics;
use crate::release::{NODE_CONTROLLER, Refusal, RefusedStep};
use crate::rules::{
    self, EVICTION_DENY_CODE, Intent, PodFacts, PodRequest, PodView, Policy, Verdict,
};

/// Name of the webhook in the runtime's admission metrics.
pub const WEBHOOK_NAME: &str = "eviction-guard";
/// `details.retryAfterSeconds` of every 429: protection follows node health, which kubelets
/// report about every 10s, so asking again sooner is wasted (the API server turns it into a
/// `Retry-After` header, as for other 429s).
pub const RETRY_AFTER_SECONDS: u32 = 10;

/// A retryable refusal (429) with its retry hint.
fn deny_retryable(message: String) -> Answer {
    Answer::deny(EVICTION_DENY_CODE, "TooManyRequests", message).retry_after(RETRY_AFTER_SECONDS)
}

/// The eviction pod lookup (an eviction names its pod, nothing more) must finish well inside
/// the webhook timeout of the shipped configuration, with time to answer: a slow API server
/// makes the answer a retryable refusal, never a timed-out call.
const POD_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
const _: () = assert!(
    POD_LOOKUP_TIMEOUT.as_secs() + 2 <= crate::webhook_config::TIMEOUT_SECONDS as u64,
    "the pod lookup must leave the webhook time to answer"
);

/// The `/validate` handler.
pub struct Webhook {
    guard: Arc<Guard>,
    policy: Policy,
    /// Looks up the pod of an eviction; None only in tests that never send evictions.
    client: Option<kube::Client>,
}

impl Webhook {
    pub fn new(guard: Arc<Guard>, policy: Policy, client: Option<kube::Client>) -> Self {
        Webhook {
            guard,
            policy,
            client,
        }
    }

    async fn lookup(&self, namespace: &str, name: &str) -> Result<Option<PodFacts>, String> {
        let Some(client) = &self.client else {
            return Err("no API client to look the pod up".to_owned());
        };
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        match tokio::time::timeout(POD_LOOKUP_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(pod)) => Ok(pod.as_ref().map(PodFacts::from_pod)),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no answer within {POD_LOOKUP_TIMEOUT:?}")),
        }
    }

    /// Keeps the node controller's refused evictions on record for their release.
    fn remember(&self, req: &PodRequest<'_>, op: rules::Operation, node: &str) {
        if req.user_info.username.as_deref() != Some(NODE_CONTROLLER) {
            return;
        }
        let (step, pod) = match op {
            rules::Operation::Delete => (RefusedStep::Delete, req.old_object.as_ref()),
            // the eviction's first step; its Ready=False updates are not evictions
            rules::Operation::Status if marks_disruption_target(req.object.as_ref()) => {
                (RefusedStep::StatusPatch, req.object.as_ref())
            }
            _ => return,
        };
        let Some(uid) = pod.and_then(|p| p.metadata.uid.as_deref()) else {
            return;
        };
        self.guard.record_refusal(Refusal {
            uid: uid.to_owned(),
            namespace: req.namespace().to_owned(),
            name: req.name.clone().into_owned(),
            node: node.to_owned(),
            at: chrono::Utc::now(),
            step,
            count: 1,
        });
    }
}

fn marks_disruption_target(pod: Option<&PodView<'_>>) -> bool {
    pod.is_some_and(|p| p.status.conditions.disruption_target == Some(true))
}

impl Handler for Webhook {
    type Object<'a> = PodView<'a>;

    async fn review<'r, 'a: 'r>(&'r self, req: &'r PodRequest<'a>) -> Answer {
        let snapshot = self.guard.snapshot();
        let namespace = req.namespace();
        let user = req.user_info.name();

        let mut evicted = None;
        let needs_pod = rules::classify(req, &self.policy) == Intent::Eviction
            && !snapshot.protection.protected.is_empty()
            && !rules::is_exempt(req, &self.policy);
        if needs_pod {
            match self.lookup(namespace, &req.name).await {
                Ok(pod) => evicted = pod,
                Err(error) => {
                    // Protection is on and we cannot tell where the pod runs: refuse as
                    // retryable rather than risk evicting a protected pod.
                    metrics::pod_lookup_failed();
                    let message = format!(
                        "eviction-guard could not look up pod {namespace}/{}: {error}; pods on \
                         NotReady nodes are protected ({}), retry the eviction",
                        req.name, snapshot.protection.reason
                    );
                    tracing::warn!(
                        target: "audit",
                        user = %user,
                        operation = "eviction",
                        namespace = %namespace,
                        name = %req.name,
                        dry_run = req.is_dry_run(),
                        error = %error,
                        "refused eviction: pod lookup failed"
                    );
                    return deny_retryable(message);
                }
            }
        }

        match rules::review(req, evicted.as_ref(), &snapshot, &self.policy) {
            Verdict::Allow { op: None, .. } => Answer::allow(),
            Verdict::Allow { op: Some(op), why } => {
                if !req.is_dry_run() {
                    metrics::allowed(op);
                }
                tracing::debug!(
                    operation = op.label(),
                    namespace = %namespace,
                    name = %req.name,
                    why = ?why,
                    "allowed"
                );
                Answer::allow()
            }
            Verdict::Deny {
                op,
                code,
                node,
                message,
            } => {
                if !req.is_dry_run() {
                    metrics::intercepted(op);
                    self.remember(req, op, &node);
                }
                let version = match op {
                    rules::Operation::Delete => req.old_object.as_ref(),
                    _ => req.object.as_ref(),
                }
                .and_then(|o| o.metadata.resource_version.as_deref())
                .unwrap_or_default();
                self.guard.audit().refused(
                    Refused {
                        user: user.to_owned(),
                        operation: op.label(),
                        namespace: namespace.to_owned(),
                        name: req.name.clone().into_owned(),
                        node,
                        code,
                        dry_run: req.is_dry_run(),
                        version: version.to_owned(),
                        reason: snapshot.protection.reason.clone(),
                    },
                    chrono::Utc::now(),
                );
                if code == EVICTION_DENY_CODE {
                    deny_retryable(message)
                } else {
                    Answer::deny(code, "Forbidden", message)
                }
            }
        }
    }
}
