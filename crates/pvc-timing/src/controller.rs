//! The controller: watches PVCs and
//! - once one is Bound, adds `webhook-trigger: "<unix seconds>"` (seed behaviour). That
//!   main-resource update passes through the webhook, which then records the Bound time even
//!   where the API server discarded the webhook's change on the `/status` update. A trigger a
//!   user wrote before the claim was bound does not count as ours.
//! - counts what was stored: the phase transitions and the time to Bound read from the
//!   `pvc-timing` history the API server holds, each entry once. How many entries are counted
//!   is kept on the claim (`ballast.dev/pvc-timing-counted`), written with a resourceVersion
//!   precondition before the counters move, so restarts and leader changes never count twice.
//!   An observer never slows what it observes: nothing is written to a claim while it is
//!   Pending — the PV controller (and an external provisioner) are working on it, and a write
//!   between their read and their write makes theirs fail and wait for a resync — so a claim's
//!   entries are counted once it has left Pending (with the trigger when it is Bound). A time
//!   pvc-timing did not witness (`"observed":false`: bound while it was down) is counted as a
//!   transition and never observed in the time-to-bound histogram.
//!
//! Runs only while it holds the Lease when leader election is on (see
//! `ballast_runtime::Service::run_while_leading`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admission::Clock;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::timing::{ANNOTATION, BOUND, PvcTiming, TRIGGER_ANNOTATION};

/// The field manager named in the claim's managedFields.
pub const FIELD_MANAGER: &str = "pvc-timing";
/// After a write conflict the watch brings the newer claim within moments; look again soon.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(1);
/// Back-off after any other failure (API server unreachable, forbidden...).
const ERROR_REQUEUE: Duration = Duration::from_secs(10);

/// The annotation where the controller keeps how many `pvc-timing` entries it has counted.
pub const COUNTED_ANNOTATION: &str = "ballast.dev/pvc-timing-counted";
/// Storage-class label value for classes that do not exist (keeps the label set closed).
pub const OTHER_STORAGE_CLASS: &str = "other";

fn annotation<'a>(pvc: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    pvc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn history(pvc: &PersistentVolumeClaim) -> Option<PvcTiming> {
    annotation(pvc, ANNOTATION).and_then(|v| PvcTiming::parse(v).ok())
}

fn excluded(pvc: &PersistentVolumeClaim, excluded_namespaces: &[String]) -> bool {
    pvc.metadata
        .namespace
        .as_ref()
        .is_some_and(|ns| excluded_namespaces.iter().any(|e| e == ns))
}

/// Whether `pvc` should get its `webhook-trigger` now: Bound, not being deleted, in a namespace
/// our webhook serves, and without a trigger of its own. A trigger older than the recorded
/// Bound time was written before the claim was bound (by a user): it is replaced.
pub fn needs_trigger(pvc: &PersistentVolumeClaim, excluded_namespaces: &[String]) -> bool {
    let bound = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == BOUND);
    if !bound || excluded(pvc, excluded_namespaces) || pvc.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let trigger = annotation(pvc, TRIGGER_ANNOTATION).and_then(|t| t.trim().parse::<i64>().ok());
    let bound_at = history(pvc).and_then(|h| {
        h.timings
            .iter()
            .rev()
            .find(|t| t.phase == BOUND)
            .and_then(|t| crate::timing::parse_time(&t.time))
    });
    match (trigger, bound_at) {
        (None, _) => true,
        (Some(trigger), Some(bound_at)) => trigger < bound_at.timestamp(),
        // Bound, not recorded, a trigger present: the webhook records Bound on the next
        // main-resource write; triggering again could loop while the webhook is away.
        (Some(_), None) => false,
    }
}

/// Whether the claim is still Pending (no phase yet reads as Pending).
fn pending(pvc: &PersistentVolumeClaim) -> bool {
    crate::timing::normalise_phase(pvc.status.as_ref().and_then(|s| s.phase.as_deref()))
        == crate::timing::PENDING
}

/// What the controller does for one claim.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Add `webhook-trigger`.
    pub trigger: bool,
    /// The new value of [`COUNTED_ANNOTATION`], when it changes.
    pub counted: Option<usize>,
    /// Phases entered, to count once the write succeeded.
    pub transitions: Vec<&'static str>,
    /// Seconds from creation to the first Bound, to observe once the write succeeded.
    pub time_to_bound: Option<f64>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        !self.trigger && self.counted.is_none()
    }
}

/// Decides, from the claim as stored, what to trigger and what to count: nothing while it is
/// Pending.
pub fn plan(pvc: &PersistentVolumeClaim, excluded_namespaces: &[String]) -> Plan {
    let mut plan = Plan {
        trigger: needs_trigger(pvc, excluded_namespaces),
        ..Plan::default()
    };
    if excluded(pvc, excluded_namespaces) || pending(pvc) {
        return plan;
    }
    let Some(history) = history(pvc) else {
        return plan;
    };
    let len = history.timings.len();
    let counted = annotation(pvc, COUNTED_ANNOTATION)
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if counted == len {
        return plan;
    }
    // More counted than recorded: the history was started again (it was corrupt); its entries
    // describe what was already counted.
    plan.counted = Some(len);
    if counted > len {
        return plan;
    }
    let (before, new) = history.timings.split_at(counted);
    plan.transitions = new
        .iter()
        .filter_map(|t| crate::timing::known_phase(&t.phase))
        .collect();
    let first_bound = !before.iter().any(|t| t.phase == BOUND);
    let created = pvc
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| DateTime::<Utc>::from_timestamp(t.0.as_second(), 0));
    if first_bound
        && new.iter().any(|t| t.phase == BOUND)
        && let (Some(created), Some(bound)) = (created, history.first_time_in(BOUND))
    {
        plan.time_to_bound = Some((bound - created).num_milliseconds().max(0) as f64 / 1000.0);
    }
    plan
}

/// The merge patch carrying `plan`'s annotations. It carries the resourceVersion we decided
/// on, so a concurrent writer (another replica during a leader hand-over) makes it fail with
/// 409 instead of overwriting: each entry is counted once, the trigger written once.
pub fn plan_patch(plan: &Plan, resource_version: Option<&str>, now: DateTime<Utc>) -> Value {
    let mut annotations = serde_json::Map::new();
    if plan.trigger {
        annotations.insert(
            TRIGGER_ANNOTATION.into(),
            json!(now.timestamp().to_string()),
        );
    }
    if let Some(counted) = plan.counted {
        annotations.insert(COUNTED_ANNOTATION.into(), json!(counted.to_string()));
    }
    let mut metadata = json!({ "annotations": annotations });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({ "metadata": metadata })
}

/// The patch adding only the trigger (see [`plan_patch`]).
pub fn trigger_patch(resource_version: Option<&str>, now: DateTime<Utc>) -> Value {
    let plan = Plan {
        trigger: true,
        ..Plan::default()
    };
    plan_patch(&plan, resource_version, now)
}

/// How the controller is set up.
#[derive(Debug, Clone, Default)]
pub struct ControllerConfig {
    /// Lease to hold before acting; None runs unconditionally (single replica, tests).
    pub leader: Option<ballast_runtime::leader::LeaseConfig>,
    /// Namespaces the webhook does not serve, so a trigger there would record nothing.
    pub excluded_namespaces: Vec<String>,
}

/// What every reconcile of the controller shares.
pub struct Context {
    client: Client,
    excluded_namespaces: Vec<String>,
    clock: Arc<dyn Clock>,
}

impl Context {
    pub fn new(client: Client, config: &ControllerConfig, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Context {
            client,
            excluded_namespaces: config.excluded_namespaces.clone(),
            clock,
        })
    }
}

/// Runs the controller until `stop` (the scaffold runs it only while this replica leads).
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let api: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let stopped = stop.clone();
    // The cache keeps claims lean (no managed fields, no last-applied copy): what a reconcile
    // reads is all there, at a fraction of the memory.
    let (store, writer) = reflector::store();
    let claims = watcher(api, watcher::Config::default())
        .backoff(ballast_runtime::watch::backoff())
        .modify(ballast_runtime::watch::lean::<PersistentVolumeClaim>)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(claims, store.clone())
        .with_config(
            controller::Config::default()
                .concurrency(ballast_runtime::kubeclient::RECONCILES_IN_FLIGHT),
        )
        .graceful_shutdown_on(async move { stopped.cancelled().await });
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            tracing::info!(claims = store.len(), "PVC cache synced");
        }
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "PVC controller event");
            }
        })
        .await;
}

/// The `storage_class` label of a claim: its class when that class exists, `other` when it
/// does not, empty for claims without one.
async fn storage_class_label(client: &Client, pvc: &PersistentVolumeClaim) -> Result<String> {
    let Some(class) = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .filter(|c| !c.is_empty())
    else {
        return Ok(m::NO_STORAGE_CLASS.to_owned());
    };
    let classes: Api<StorageClass> = Api::all(client.clone());
    match classes.get_opt(class).await {
        Ok(Some(_)) => Ok(class.to_owned()),
        Ok(None) => Ok(OTHER_STORAGE_CLASS.to_owned()),
        Err(source) => Err(Error::StorageClass {
            class: class.to_owned(),
            source,
        }),
    }
}

async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Context>) -> Result<Action> {
    let plan = plan(&pvc, &ctx.excluded_namespaces);
    if plan.is_empty() {
        return Ok(Action::await_change());
    }
    let namespace = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let claim = format!("{namespace}/{name}");
    let storage_class = match plan.time_to_bound {
        Some(_) => Some(storage_class_label(&ctx.client, &pvc).await?),
        None => None,
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = plan_patch(&plan, pvc.resource_version().as_deref(), ctx.clock.now());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match api.patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(updated) => {
            // Stored: now count, once.
            for phase in &plan.transitions {
                tracing::info!(claim, phase, "claim entered a phase");
                metrics::counter!(m::PHASE_TRANSITIONS, "phase" => *phase).increment(1);
            }
            if let (Some(seconds), Some(storage_class)) = (plan.time_to_bound, storage_class) {
                tracing::info!(claim, storage_class, seconds, "claim bound");
                metrics::histogram!(m::TIME_TO_BOUND, "storage_class" => storage_class)
                    .record(seconds);
            }
            if plan.trigger {
                metrics::counter!(m::TRIGGERS_ADDED).increment(1);
                let annotations = updated.annotations();
                tracing::info!(
                    claim,
                    trigger = annotations.get(TRIGGER_ANNOTATION).map(String::as_str),
                    pvc_timing = annotations.get(ANNOTATION).map(String::as_str),
                    "added webhook-trigger to a Bound claim"
                );
            }
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(status)) if status.is_conflict() => {
            tracing::debug!(claim, "claim changed meanwhile; deciding again");
            Ok(Action::requeue(CONFLICT_REQUEUE))
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Action::await_change()),
        Err(source) if plan.trigger => Err(Error::Trigger { claim, source }),
        Err(source) => Err(Error::Count { claim, source }),
    }
}

fn error_policy(_pvc: Arc<PersistentVolumeClaim>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "PVC reconcile failed");
    metrics::counter!(m::CONTROLLER_ERRORS, "error" => err.metric_label()).increment(1);
    Action::requeue(ERROR_REQUEUE)
}

#[cfg(test)]
mod tests;
