//! The I/O layer: a kube-runtime Controller over PodManagers and the pods they own. Each
//! reconcile reads the owned pods from the pod watch's cache ([`crate::pods`]), asks
//! [`crate::plan::plan`] what to do, applies it (events for every create, delete and failure,
//! written in the background) and writes the status through the status subresource only when
//! it changed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ballast_runtime::backlog::Backlog;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::crd::PodManager;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::plan::{self, ClusterHealth, DeleteReason};
use crate::pods::{CachedPod, PodCache};
use crate::{FINALIZER, LABEL_NAME, status, template};

/// Safety-net requeue for a settled PodManager; pod and node events normally trigger sooner.
const REQUEUE_SETTLED: Duration = Duration::from_secs(300);
/// Requeue while waiting for something pod events may not announce (e.g. a foreign pod's name).
const REQUEUE_WAITING: Duration = Duration::from_secs(15);
/// Event reasons, as the ReplicaSet controller names them (users alert and filter on these).
pub const REASON_CREATED: &str = "SuccessfulCreate";
pub const REASON_CREATE_FAILED: &str = "FailedCreate";
pub const REASON_DELETED: &str = "SuccessfulDelete";
pub const REASON_DELETE_FAILED: &str = "FailedDelete";
/// Triggers for one PodManager within this long of each other make one reconcile (trailing
/// edge): its pods turning Ready one after another write its status once, not once per pod.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Retry delay after a failed reconcile.
const REQUEUE_ERROR: Duration = Duration::from_secs(5);
/// How long a reconcile waits for the pod cache's first list before it is requeued instead
/// (bounded, so that a shutdown never waits on a watch that cannot list).
const CACHE_WAIT: Duration = Duration::from_secs(2);

/// What every reconcile needs.
pub struct Context {
    pub client: kube::Client,
    /// Events on PodManagers, written in the background ([`event_writer`]).
    pub events: Backlog<(Event, ObjectReference)>,
    pub metrics: Metrics,
    /// Latest node health; read once per reconcile.
    pub health: watch::Receiver<ClusterHealth>,
    /// Reconciles run by this instance (tests and the demo check who reconciles).
    pub reconciles: Arc<AtomicU64>,
    /// The pods carrying the `podmanager` label, from the pod watch; emptied at the start of
    /// every leadership term.
    pub pods: Arc<PodCache>,
}

/// Events waiting to be written, at most (client-go's broadcaster queues 1,000 too); past that
/// they are dropped and counted (`podmanager_events_dropped_total`).
pub const EVENT_QUEUE: usize = 1000;
/// Event writes in flight at once: with 4, a burst of 10,000 claims on a real control plane
/// dropped 4,000–13,000 of its 20,000 events; with 16, about 200 (BENCHMARKS.md).
const EVENT_WRITERS: usize = 16;

/// The event queue of [`Context::events`], and its writer to run as a task: a reconcile never
/// waits for an event to be written (two API writes per pod created, otherwise).
pub fn event_writer(
    recorder: Recorder,
    shutdown: CancellationToken,
) -> (
    Backlog<(Event, ObjectReference)>,
    impl Future<Output = ()> + Send + 'static,
) {
    Backlog::new(
        EVENT_QUEUE,
        EVENT_WRITERS,
        crate::metrics::EVENTS_DROPPED_TOTAL,
        shutdown,
        move |(event, regarding): (Event, ObjectReference)| {
            let recorder = recorder.clone();
            async move {
                if let Err(err) = recorder.publish(&event, &regarding).await {
                    tracing::warn!(
                        namespace = regarding.namespace.as_deref().unwrap_or_default(),
                        name = regarding.name.as_deref().unwrap_or_default(),
                        reason = %event.reason,
                        error = %err,
                        "failed to publish event"
                    );
                }
            }
        },
    )
}

/// Runs the controller until `stop` is cancelled, then lets in-flight reconciles finish.
pub async fn run_controller(ctx: Arc<Context>, namespace: Option<&str>, stop: CancellationToken) {
    let (pms, pods): (Api<PodManager>, Api<CachedPod>) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let (reader, writer) = reflector::store();
    let (cache, gauges) = (reader.clone(), ctx.metrics.clone());
    // Our own status writes change neither generation nor finalizers nor deletion: filtered
    // out here, so writing status never triggers another reconcile.
    let trigger = watcher(pms, watcher::Config::default())
        .backoff(ballast_runtime::watch::backoff())
        // Cached without managed fields or kubectl's last-applied copy: no decision reads them,
        // and on a real API server with 1,000 PodManagers they took 5.5 MB (BENCHMARKS.md).
        .modify(ballast_runtime::watch::lean::<PodManager>)
        .reflect(writer)
        // Every change (status writes included) has reached the cache here: the replica gauges
        // are recomputed from it, once the (re)list is complete.
        .inspect(move |event| {
            if let Ok(
                watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
            ) = event
            {
                gauges.replicas(&crate::metrics::totals(
                    cache.state().iter().map(|pm| &**pm),
                ));
            }
        })
        .applied_objects()
        .predicate_filter(spec_or_lifecycle, Default::default());
    // One pod watch feeds the cache and triggers the owners' reconciles; the cache is updated
    // before the trigger, so a reconcile always sees the change that triggered it.
    ctx.pods.reset();
    let pod_cache = ctx.pods.clone();
    let pod_changes = watcher(pods, watcher::Config::default().labels(LABEL_NAME))
        .backoff(ballast_runtime::watch::backoff())
        .inspect_ok(move |event| pod_cache.apply(event))
        .touched_objects();
    let health_changes =
        tokio_stream::wrappers::WatchStream::from_changes(ctx.health.clone()).map(|_| ());
    Controller::for_stream(trigger, reader)
        .with_config(
            controller::Config::default()
                .concurrency(ballast_runtime::kubeclient::RECONCILES_IN_FLIGHT)
                .debounce(DEBOUNCE),
        )
        .owns_stream(pod_changes)
        .reconcile_all_on(health_changes)
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| std::future::ready(()))
        .await;
    // No longer leading: the new leader counts these PodManagers.
    ctx.metrics.replicas(&crate::metrics::Totals::default());
}

/// Predicate: generation, finalizers and whether deletion has started.
fn spec_or_lifecycle(pm: &PodManager) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pm.metadata.generation.hash(&mut h);
    pm.finalizers().hash(&mut h);
    pm.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// One reconcile, wrapped in the finalizer and counted.
pub async fn reconcile(pm: Arc<PodManager>, ctx: Arc<Context>) -> Result<Action> {
    if tokio::time::timeout(CACHE_WAIT, ctx.pods.synced())
        .await
        .is_err()
    {
        tracing::debug!(
            namespace = pm.namespace().unwrap_or_default(),
            name = pm.name_any(),
            "pods not listed yet; requeued"
        );
        return Ok(Action::requeue(CACHE_WAIT));
    }
    let started = Instant::now();
    ctx.reconciles.fetch_add(1, Ordering::Relaxed);
    let result = reconcile_inner(pm, &ctx).await;
    let label = match &result {
        Ok(_) => "success",
        Err(e) => e.metric_label(),
    };
    ctx.metrics.reconciled(label, started.elapsed());
    result
}

async fn reconcile_inner(pm: Arc<PodManager>, ctx: &Context) -> Result<Action> {
    let ns = pm
        .namespace()
        .ok_or_else(|| Error::Incomplete(pm.name_any()))?;
    let api: Api<PodManager> = Api::namespaced(ctx.client.clone(), &ns);
    let pm = if pm.metadata.deletion_timestamp.is_none() && !has_finalizer(&pm) {
        Arc::new(add_finalizer(&api, &pm).await?)
    } else {
        pm
    };
    finalizer(&api, FINALIZER, pm, |event| async move {
        match event {
            finalizer::Event::Apply(pm) => apply(&pm, ctx).await,
            finalizer::Event::Cleanup(pm) => cleanup(&pm, ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    })
}

fn has_finalizer(pm: &PodManager) -> bool {
    pm.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds our finalizer with a merge patch carrying the resourceVersion read (a precondition, so
/// a concurrent finalizer change is never overwritten), and returns the updated object so the
/// same reconcile goes on to apply it. kube's `finalizer()` helper then finds it present.
async fn add_finalizer(api: &Api<PodManager>, pm: &PodManager) -> Result<PodManager> {
    let mut finalizers = pm.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": pm.metadata.resource_version,
        }
    });
    let updated = api
        .patch(
            &pm.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::AddFinalizer {
            namespace: pm.namespace().unwrap_or_default(),
            name: pm.name_any(),
            source,
        })?;
    tracing::info!(
        namespace = pm.namespace().unwrap_or_default(),
        name = pm.name_any(),
        "added finalizer"
    );
    Ok(updated)
}

fn error_policy(pm: Arc<PodManager>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(
        namespace = pm.namespace().unwrap_or_default(),
        name = pm.name_any(),
        error = %ballast_runtime::chain(err),
        reason = err.metric_label(),
        "reconcile failed; retrying"
    );
    Action::requeue(REQUEUE_ERROR)
}

/// The pods `pm` controls, from the cache: carrying its name label and a controller reference
/// to its uid.
fn owned_pods(pm: &PodManager, ctx: &Context) -> Vec<Arc<CachedPod>> {
    let mut pods = ctx
        .pods
        .labelled(&pm.namespace().unwrap_or_default(), &pm.name_any());
    pods.retain(|p| template::is_controlled_by(&**p, pm));
    pods
}

async fn apply(pm: &PodManager, ctx: &Context) -> Result<Action> {
    let ns = pm.namespace().unwrap_or_default();
    let name = pm.name_any();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = owned_pods(pm, ctx);
    let health = ctx.health.borrow().clone();
    let plan = plan::plan(pm, &pods, &health);

    let mut failures = Vec::new();
    let mut foreign = false;
    // Pods this reconcile created or deleted: the pod watch reports each, and that triggers
    // the reconcile whose status counts them.
    let mut pods_written = 0;
    for deletion in &plan.delete {
        let why = delete_reason_text(deletion.reason);
        match delete_owned_pod(ctx, pm, &pods_api, &pods, &deletion.name, why).await {
            Ok(deleted) => pods_written += usize::from(deleted),
            Err(msg) => failures.push(msg),
        }
    }
    // Slow start: batches of 1, 2, 4, … pods at once, up to the first batch with a failure.
    let created = crate::batch::slow_start(
        &plan.create,
        |n| create_pod(ctx, pm, &pods_api, n),
        |o| matches!(o, Err(_) | Ok(Created::Failed(_))),
    )
    .await;
    let skipped = plan.create.len() - created.len();
    for outcome in created {
        match outcome? {
            Created::Yes => pods_written += 1,
            Created::Exists => foreign = true,
            Created::Failed(msg) => failures.push(msg),
        }
    }
    if skipped > 0 {
        tracing::info!(namespace = %ns, name = %name, skipped, "pod creates failed; the rest are skipped until the retry");
    }

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let desired = status::desired(pm, &plan, &failures, &now);
    if !status::write_now(&failures, pods_written) {
        tracing::debug!(namespace = %ns, name = %name, pods_written, "status left to the reconcile that sees the pod changes");
    } else if pm.status.as_ref() != Some(&desired) {
        let api: Api<PodManager> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({ "status": desired });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::WriteStatus {
                namespace: ns.clone(),
                name: name.clone(),
                source,
            })?;
        tracing::debug!(namespace = %ns, name = %name, ready = desired.ready_replicas, current = desired.current_replicas, "status written");
    }

    if !failures.is_empty() {
        return Err(Error::PodOperations {
            namespace: ns,
            name,
            failures: failures.len(),
        });
    }
    Ok(if plan.is_settled() && !foreign {
        Action::requeue(REQUEUE_SETTLED)
    } else {
        Action::requeue(REQUEUE_WAITING)
    })
}

/// What became of one pod create.
enum Created {
    Yes,
    /// The name is taken: our earlier create landed, or a foreign pod holds it.
    Exists,
    /// Failed, with the message recorded in the Warning event.
    Failed(String),
}

/// Creates pod `pod_name` of `pm`, counting, logging and recording an event either way.
async fn create_pod(
    ctx: &Context,
    pm: &PodManager,
    pods_api: &Api<Pod>,
    pod_name: &str,
) -> Result<Created> {
    let (ns, name) = (pm.namespace().unwrap_or_default(), pm.name_any());
    let Some(pod) = template::pod_for(pm, pod_name) else {
        return Err(Error::Incomplete(name));
    };
    match pods_api.create(&PostParams::default(), &pod).await {
        Ok(created) => {
            ctx.metrics.pod_operation("create", true);
            tracing::info!(namespace = %ns, name = %name, pod = %pod_name, image = %pm.spec.image, "created pod");
            let note = format!("Created pod {pod_name} with image {}", pm.spec.image);
            let pod_ref = PodRef {
                name: pod_name,
                uid: created.metadata.uid.as_deref(),
            };
            publish(
                ctx,
                pm,
                EventType::Normal,
                REASON_CREATED,
                "CreatePod",
                note,
                pod_ref,
            );
            Ok(Created::Yes)
        }
        // Deterministic names: a requeue finds out once a foreign pod is gone.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            tracing::debug!(namespace = %ns, name = %name, pod = %pod_name, "pod already exists");
            Ok(Created::Exists)
        }
        Err(err) => {
            ctx.metrics.pod_operation("create", false);
            let reason = ballast_runtime::error::kube_error(&err);
            let msg = format!("failed to create pod {pod_name}: {reason}");
            tracing::warn!(namespace = %ns, name = %name, pod = %pod_name, error = %reason, "failed to create pod");
            let pod_ref = PodRef {
                name: pod_name,
                uid: None,
            };
            publish(
                ctx,
                pm,
                EventType::Warning,
                REASON_CREATE_FAILED,
                "CreatePod",
                msg.clone(),
                pod_ref,
            );
            Ok(Created::Failed(msg))
        }
    }
}

/// Deletes every pod of `pm` the guard would let us delete; garbage collection does the rest.
async fn cleanup(pm: &PodManager, ctx: &Context) -> Result<Action> {
    let ns = pm.namespace().unwrap_or_default();
    let name = pm.name_any();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = owned_pods(pm, ctx);
    let health = ctx.health.borrow().clone();
    let mut failures = 0;
    for pod_name in plan::cleanup(&pods, &health) {
        let why = "PodManager deleted";
        if delete_owned_pod(ctx, pm, &pods_api, &pods, &pod_name, why)
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    if failures > 0 {
        return Err(Error::PodOperations {
            namespace: ns,
            name,
            failures,
        });
    }
    tracing::info!(namespace = %ns, name = %name, "podmanager cleaned up; releasing finalizer");
    Ok(Action::await_change())
}

/// Deletes one of `pm`'s pods (as listed in `pods`), counting, logging and recording an Event
/// either way; `why` ends the note ("Deleted pod NAME (why)"). `Ok(false)` when the pod was
/// already gone or replaced; `Err` carries the failure, as also written into the Warning event.
async fn delete_owned_pod(
    ctx: &Context,
    pm: &PodManager,
    pods_api: &Api<Pod>,
    pods: &[Arc<CachedPod>],
    pod_name: &str,
    why: &str,
) -> Result<bool, String> {
    let (ns, name) = (pm.namespace().unwrap_or_default(), pm.name_any());
    let uid = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(pod_name))
        .and_then(|p| p.metadata.uid.clone());
    let pod_ref = PodRef {
        name: pod_name,
        uid: uid.as_deref(),
    };
    match delete_pod(pods_api, pod_name, uid.clone()).await {
        Ok(true) => {
            ctx.metrics.pod_operation("delete", true);
            tracing::info!(namespace = %ns, name = %name, pod = %pod_name, reason = why, "deleted pod");
            let note = format!("Deleted pod {pod_name} ({why})");
            publish(
                ctx,
                pm,
                EventType::Normal,
                REASON_DELETED,
                "DeletePod",
                note,
                pod_ref,
            );
            Ok(true)
        }
        Ok(false) => Ok(false),
        Err(err) => {
            ctx.metrics.pod_operation("delete", false);
            let reason = ballast_runtime::error::kube_error(&err);
            tracing::warn!(namespace = %ns, name = %name, pod = %pod_name, error = %reason, "failed to delete pod");
            let msg = format!("failed to delete pod {pod_name}: {reason}");
            publish(
                ctx,
                pm,
                EventType::Warning,
                REASON_DELETE_FAILED,
                "DeletePod",
                msg.clone(),
                pod_ref,
            );
            Err(msg)
        }
    }
}

/// Deletes one pod, only if it is still the one we saw (uid precondition). `Ok(false)` when it
/// was already gone or replaced.
async fn delete_pod(pods: &Api<Pod>, name: &str, uid: Option<String>) -> Result<bool, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

fn delete_reason_text(reason: DeleteReason) -> &'static str {
    match reason {
        DeleteReason::ScaleDown => "scale down",
        DeleteReason::Rollout => "pod template changed",
        DeleteReason::Finished => "pod finished",
        DeleteReason::UnexpectedName => "name is not <podmanager>-<ordinal>",
    }
}

/// The pod an event is about.
#[derive(Clone, Copy)]
struct PodRef<'a> {
    name: &'a str,
    uid: Option<&'a str>,
}

/// Queues an event on `pm` for the writer; never waits for it, never fails the reconcile.
fn publish(
    ctx: &Context,
    pm: &PodManager,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    pod: PodRef<'_>,
) {
    // The pod as `related` keeps events about different pods apart: the recorder folds events
    // with the same regarding/related/reason into one series, keeping the first note.
    let related = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(pod.name.to_string()),
        namespace: pm.namespace(),
        uid: pod.uid.map(str::to_string),
        ..ObjectReference::default()
    };
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: Some(related),
    };
    let target = format!("{}/{}", pm.namespace().unwrap_or_default(), pm.name_any());
    ctx.events.send((event, pm.object_ref(&())), &target);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::mk_pm;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn status_writes_do_not_pass_the_podmanager_watch_filter() {
        let pm = mk_pm("web", 3, "nginx:1.21");
        let mut with_status = pm.clone();
        with_status.status = Some(crate::PodManagerStatus {
            ready_replicas: 3,
            current_replicas: 3,
            ..crate::PodManagerStatus::default()
        });
        with_status.metadata.resource_version = Some("42".into());
        assert_eq!(spec_or_lifecycle(&pm), spec_or_lifecycle(&with_status));
    }

    #[test]
    fn spec_finalizer_and_deletion_changes_pass_the_podmanager_watch_filter() {
        let pm = mk_pm("web", 3, "nginx:1.21");
        let mut bumped = pm.clone();
        bumped.metadata.generation = Some(2);
        let mut finalized = pm.clone();
        finalized.metadata.finalizers = Some(vec![FINALIZER.into()]);
        let mut deleting = pm.clone();
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        for changed in [&bumped, &finalized, &deleting] {
            assert_ne!(spec_or_lifecycle(&pm), spec_or_lifecycle(changed));
        }
    }
}
