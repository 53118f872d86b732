//! The release's calls: [`run`] follows the guard's snapshots into the [`Plan`] on every replica
//! and, while this replica leads, carries out what [`crate::release`] decides — `DisruptionTarget`
//! through `/status`, then DELETE with a uid precondition — rate-limited per node, re-reading the
//! node before each pod, with an `EvictionReleased` event. The leader saves the plan in a
//! ConfigMap named like its Lease, and a new leader starts from it.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use governor::{Quota, RateLimiter};
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::guard::{Guard, error_chain};
use crate::metrics;
use crate::release::{
    DISRUPTION_MESSAGE, DISRUPTION_REASON, EVENT_REASON, EvictionTaint, Keep, Plan, ReleaseConfig,
    pod_verdict, release_event_name,
};

/// How often the release pass runs besides on every protection change.
const RESYNC: Duration = Duration::from_secs(10);
/// The next pass's delay while pods wait out [`crate::release::CONTROLLER_SETTLE`].
const SETTLE_RECHECK: Duration = Duration::from_secs(1);
/// The ConfigMap key holding the saved plan.
const PLAN_KEY: &str = "plan";

/// Runs the release until `shutdown`: tracks the plan always, acts while this replica leads.
pub async fn run(
    client: kube::Client,
    guard: Arc<Guard>,
    cfg: ReleaseConfig,
    namespace: String,
    mut leading: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let per_node = Duration::from_secs_f64(1.0 / cfg.nodes_per_second.max(1e-6));
    let quota = Quota::with_period(per_node)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::MIN);
    let limiter = RateLimiter::direct(quota);
    let recorder = Recorder {
        client: client.clone(),
        instance: cfg.identity.clone(),
    };
    let store = PlanStore {
        api: Api::namespaced(client.clone(), &namespace),
        name: cfg.lease_name.clone(),
    };
    let settle = guard.config().settle;
    let mut snapshots = guard.subscribe();
    let mut plan = Plan::default();
    // What the store holds as far as this leader knows; None: not read since leading.
    let mut saved: Option<Plan> = None;
    loop {
        plan.track(&guard.snapshot(), settle);
        let leads = *leading.borrow();
        let mut next = RESYNC;
        if leads {
            if saved.is_none() {
                match store.load().await {
                    Ok(stored) => {
                        if stored != Plan::default() {
                            tracing::info!(nodes = ?stored.nodes.keys().collect::<Vec<_>>(), not_before = ?stored.not_before, "release: carrying on with the saved plan");
                        }
                        plan.adopt(stored.clone());
                        plan.track(&guard.snapshot(), settle);
                        saved = Some(stored);
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "release: failed to read the saved plan; retrying")
                    }
                }
            }
            if let Some(stored) = saved.as_mut() {
                if *stored != plan {
                    match store.save(&plan).await {
                        Ok(()) => *stored = plan.clone(),
                        Err(e) => {
                            tracing::warn!(error = %error_chain(&e), "release: failed to save the plan; retrying")
                        }
                    }
                }
                next = pass(&client, &guard, &plan, &limiter, &recorder, &shutdown).await;
            } else {
                next = SETTLE_RECHECK;
            }
        } else {
            saved = None;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = snapshots.changed() => if r.is_err() { return },
            r = leading.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(next) => {}
        }
    }
}

/// The plan, saved by the leader in a ConfigMap of the guard's namespace.
struct PlanStore {
    api: Api<ConfigMap>,
    name: String,
}

impl PlanStore {
    async fn load(&self) -> Result<Plan, kube::Error> {
        let Some(cm) = self.api.get_opt(&self.name).await? else {
            return Ok(Plan::default());
        };
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(PLAN_KEY))
            .cloned()
            .unwrap_or_default();
        if text.is_empty() {
            return Ok(Plan::default());
        }
        Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(configmap = %self.name, error = %e, "release: the saved plan is unreadable; starting a new one");
            Plan::default()
        }))
    }

    async fn save(&self, plan: &Plan) -> Result<(), kube::Error> {
        let text = serde_json::to_string(plan).map_err(kube::Error::SerdeError)?;
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": self.name, "labels": {
                "app.kubernetes.io/name": "eviction-guard",
                "app.kubernetes.io/component": "release"}},
            "data": {PLAN_KEY: text},
        }))
        .map_err(kube::Error::SerdeError)?;
        match self.api.get_opt(&self.name).await? {
            None => self.api.create(&PostParams::default(), &cm).await.map(drop),
            Some(current) => {
                let mut next = cm;
                next.metadata.resource_version = current.metadata.resource_version;
                self.api
                    .replace(&self.name, &PostParams::default(), &next)
                    .await
                    .map(drop)
            }
        }
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

/// Writes the release's Events (events.k8s.io/v1, reported by `eviction-guard` and this
/// replica's identity).
struct Recorder {
    client: kube::Client,
    instance: String,
}

impl Recorder {
    /// Creates pod `pod`'s `EvictionReleased` Event under its fixed name; 409 when it exists.
    async fn released(&self, pod: &ObjectReference, note: String) -> Result<(), kube::Error> {
        let ns = pod.namespace.clone().unwrap_or_default();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(release_event_name(
                    pod.name.as_deref().unwrap_or_default(),
                    pod.uid.as_deref().unwrap_or_default(),
                )),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            action: Some("DeletePod".into()),
            reason: Some(EVENT_REASON.into()),
            note: Some(note),
            type_: Some("Normal".into()),
            event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            regarding: Some(pod.clone()),
            reporting_controller: Some("eviction-guard".into()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        Api::<Event>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
    }
}

/// One pass over the plan's nodes whose pods are not protected; returns when to pass again.
async fn pass(
    client: &kube::Client,
    guard: &Arc<Guard>,
    plan: &Plan,
    limiter: &Limiter,
    recorder: &Recorder,
    shutdown: &CancellationToken,
) -> Duration {
    let snapshot = guard.snapshot();
    if !snapshot.synced {
        return SETTLE_RECHECK;
    }
    let mut next = RESYNC;
    if let Some(wait) = plan
        .not_before
        .and_then(|t| (t - Utc::now()).to_std().ok())
        .filter(|w| !w.is_zero() && !plan.nodes.is_empty())
    {
        // nothing before the storm has settled; look again then
        return wait.min(RESYNC);
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    for name in plan.nodes.keys() {
        let protected = |g: &Guard| g.snapshot().protection.protected.contains(name);
        if protected(guard) {
            continue;
        }
        let Some((_, taint)) = read_verdict(&nodes, name, plan, false).await else {
            continue;
        };
        let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
        let list = match pods.list(&lp).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(node = %name, error = %error_chain(&e), "release: failed to list pods");
                continue;
            }
        };
        let mut due: Vec<Pod> = Vec::new();
        for p in list {
            let uid = p.metadata.uid.as_deref().unwrap_or_default();
            let remembered = guard.refusal(uid).is_some();
            match pod_verdict(&p, name, &taint, remembered, Utc::now()) {
                Ok(()) => due.push(p),
                Err(Keep::Settling) => next = SETTLE_RECHECK,
                Err(_) => {}
            }
        }
        if due.is_empty() {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return next,
            _ = limiter.until_ready() => {}
        }
        for pod in due {
            // The node again, right before each pod: one that came back, even for a moment,
            // or is protected again keeps the rest of its pods.
            let Some((node, taint)) = read_verdict(&nodes, name, plan, protected(guard)).await
            else {
                break;
            };
            let why = guard.snapshot().protection.reason.clone();
            release_pod(client, guard, recorder, &pod, &node, &taint, &why).await;
        }
    }
    next
}

/// `name` read from the API and judged by the plan: Some when its pods may be released now.
async fn read_verdict(
    nodes: &Api<Node>,
    name: &str,
    plan: &Plan,
    protected: bool,
) -> Option<(String, EvictionTaint)> {
    let node = match nodes.get_opt(name).await {
        Ok(Some(n)) => n,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!(node = %name, error = %error_chain(&e), "release: failed to read node");
            return None;
        }
    };
    match plan.node_verdict(&node, protected, Utc::now()) {
        Ok(taint) => Some((name.to_owned(), taint)),
        Err(keep) => {
            if matches!(keep, Keep::NodeReady | Keep::NotInPlan | Keep::Protected) {
                tracing::info!(node = %name, why = ?keep, "release: node keeps its pods");
            }
            None
        }
    }
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
    // The Event before the DELETE, named after the pod's uid: a leader that dies between the
    // two leaves the pod to its successor, whose create then finds the Event written.
    let note = format!(
        "eviction-guard is completing the taint-based eviction it had held back: node {node} is \
         still NotReady and tainted {} NoExecute, the pod's toleration expired, and its pods are \
         no longer protected ({why_lifted})",
        taint.key
    );
    let reference = ObjectReference {
        uid: Some(uid.clone()),
        ..pod.object_ref(&())
    };
    match recorder.released(&reference, note).await {
        Ok(()) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::info!(namespace = %ns, name = %name, "release: event already recorded (a previous attempt or leader)");
        }
        Err(e) => {
            tracing::warn!(namespace = %ns, name = %name, error = %error_chain(&e), "release: failed to record event");
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
}
