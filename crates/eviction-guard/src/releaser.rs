//! The release's calls: [`run`] follows the guard's snapshots while this replica leads and
//! carries out what [`crate::release`] decides — `DisruptionTarget` through `/status`, then
//! DELETE with a uid precondition — rate-limited per node, with an `EvictionReleased` event.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use governor::{Quota, RateLimiter};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::guard::{Guard, error_chain};
use crate::metrics;
use crate::release::{
    DISRUPTION_MESSAGE, DISRUPTION_REASON, EVENT_REASON, EvictionTaint, Keep, ReleaseConfig,
    node_verdict, pod_verdict, track_protected,
};

/// How often the release pass runs besides on every protection change.
const RESYNC: Duration = Duration::from_secs(10);
/// The next pass's delay while pods wait out [`CONTROLLER_SETTLE`].
const SETTLE_RECHECK: Duration = Duration::from_secs(1);

/// Runs the release while this replica leads, until `shutdown`.
pub async fn run(
    client: kube::Client,
    guard: Arc<Guard>,
    cfg: ReleaseConfig,
    mut leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let per_node = Duration::from_secs_f64(1.0 / cfg.nodes_per_second.max(1e-6));
    let quota = Quota::with_period(per_node)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN);
    let limiter = RateLimiter::direct(quota);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "eviction-guard".into(),
            instance: Some(cfg.identity.clone()),
        },
    );
    let mut snapshots = guard.subscribe();
    let mut seen_protected = BTreeSet::new();
    loop {
        track_protected(&mut seen_protected, &guard.snapshot());
        let leads = *leading.borrow();
        let settling = leads
            && pass(
                &client,
                &guard,
                &seen_protected,
                &limiter,
                &recorder,
                &shutdown,
            )
            .await;
        let next = if settling { SETTLE_RECHECK } else { RESYNC };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = snapshots.changed() => if r.is_err() { return },
            r = leading.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(next) => {}
        }
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

/// One pass over the NotReady worker nodes whose pods are not protected; whether pods are
/// waiting out [`CONTROLLER_SETTLE`].
async fn pass(
    client: &kube::Client,
    guard: &Arc<Guard>,
    seen_protected: &BTreeSet<String>,
    limiter: &Limiter,
    recorder: &Recorder,
    shutdown: &CancellationToken,
) -> bool {
    let snapshot = guard.snapshot();
    if !snapshot.synced {
        return false;
    }
    let mut settling = false;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    for health in snapshot
        .workers
        .values()
        .filter(|n| !n.ready && seen_protected.contains(&n.name))
    {
        let protected = guard.snapshot().protection.protected.contains(&health.name);
        if protected {
            continue;
        }
        let node = match nodes.get_opt(&health.name).await {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(node = %health.name, error = %error_chain(&e), "release: failed to read node");
                continue;
            }
        };
        let Ok(taint) = node_verdict(&node, false) else {
            continue;
        };
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", health.name));
        let list = match pods.list(&lp).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(node = %health.name, error = %error_chain(&e), "release: failed to list pods");
                continue;
            }
        };
        let mut due: Vec<Pod> = Vec::new();
        for p in list {
            let uid = p.metadata.uid.as_deref().unwrap_or_default();
            let remembered = guard.refusal(uid).is_some();
            match pod_verdict(&p, &health.name, &taint, remembered, Utc::now()) {
                Ok(()) => due.push(p),
                Err(Keep::Settling) => settling = true,
                Err(_) => {}
            }
        }
        if due.is_empty() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = limiter.until_ready() => {}
        }
        // protection may have come back while waiting for the rate limit
        let snapshot = guard.snapshot();
        if snapshot.protection.protected.contains(&health.name) {
            continue;
        }
        for pod in due {
            release_pod(
                client,
                guard,
                recorder,
                &pod,
                &health.name,
                &taint,
                &snapshot.protection.reason,
            )
            .await;
        }
    }
    settling
}

async fn release_pod(
    client: &kube::Client,
    guard: &Guard,
    recorder: &Recorder,
    pod: &Pod,
    node: &str,
    taint: &EvictionTaint,
    why_lifted: &str,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let refusal = guard.refusal(&uid);
    let marked = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        });
    if !marked {
        let patch = json!({"metadata": {"uid": uid}, "status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": DISRUPTION_REASON,
            "message": DISRUPTION_MESSAGE, "lastTransitionTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}]}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            metrics::release_failed();
            tracing::warn!(namespace = %ns, name = %name, node = %node, error = %error_chain(&e), "release: failed to mark pod DisruptionTarget; next pass retries");
            return;
        }
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            // gone or replaced meanwhile: nothing left to release
            guard.forget_refusal(&uid);
            return;
        }
        Err(e) => {
            metrics::release_failed();
            tracing::warn!(namespace = %ns, name = %name, node = %node, error = %error_chain(&e), "release: failed to delete pod; next pass retries");
            return;
        }
    }
    guard.forget_refusal(&uid);
    metrics::released();
    let refused = refusal.as_ref().map_or_else(
        || "refused before this replica started".to_owned(),
        |r| {
            format!(
                "refused {} times since {} (last: {})",
                r.count,
                r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                r.step.label()
            )
        },
    );
    tracing::warn!(
        target: "audit",
        namespace = %ns,
        name = %name,
        uid = %uid,
        node = %node,
        taint = %taint.key,
        refused = %refused,
        protection = %why_lifted,
        "released refused eviction of pod {ns}/{name}: DisruptionTarget set and pod deleted"
    );
    let note = format!(
        "eviction-guard completed the taint-based eviction it had held back: node {node} is still \
         NotReady and tainted {} NoExecute, the pod's toleration expired, and its pods are no \
         longer protected ({why_lifted})",
        taint.key
    );
    let event = Event {
        type_: EventType::Normal,
        reason: EVENT_REASON.into(),
        note: Some(note),
        action: "DeletePod".into(),
        secondary: None,
    };
    let reference = ObjectReference {
        uid: Some(uid),
        ..pod.object_ref(&())
    };
    if let Err(e) = recorder.publish(&event, &reference).await {
        tracing::warn!(namespace = %ns, name = %name, error = %error_chain(&e), "release: failed to record event");
    }
}
