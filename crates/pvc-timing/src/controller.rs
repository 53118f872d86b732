//! The controller: watches PVCs and, once one is Bound, adds `webhook-trigger: "<unix seconds>"`
//! exactly once (seed behaviour). That main-resource update passes through the webhook, which
//! then records the Bound time even where the API server discarded the webhook's change on the
//! `/status` update. Runs only while it holds the Lease when leader election is on.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admission::Clock;
use crate::error::{Error, Result};
use crate::metrics as m;
use crate::timing::{BOUND, TRIGGER_ANNOTATION};

/// The field manager named in the claim's managedFields.
pub const FIELD_MANAGER: &str = "pvc-timing";
/// After a write conflict the watch brings the newer claim within moments; look again soon.
const CONFLICT_REQUEUE: Duration = Duration::from_secs(1);
/// Back-off after any other failure (API server unreachable, forbidden...).
const ERROR_REQUEUE: Duration = Duration::from_secs(10);

/// Whether `pvc` should get its `webhook-trigger` now: Bound, not being deleted, not yet
/// triggered, and in a namespace our webhook serves.
pub fn needs_trigger(pvc: &PersistentVolumeClaim, excluded_namespaces: &[String]) -> bool {
    let bound = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == BOUND);
    let triggered = pvc
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(TRIGGER_ANNOTATION));
    let excluded = pvc
        .metadata
        .namespace
        .as_ref()
        .is_some_and(|ns| excluded_namespaces.iter().any(|e| e == ns));
    bound && !triggered && !excluded && pvc.metadata.deletion_timestamp.is_none()
}

/// The merge patch adding the trigger. It carries the resourceVersion we decided on, so a
/// concurrent writer (another replica during a leader hand-over) makes it fail with 409 instead
/// of overwriting: the trigger is written once.
pub fn trigger_patch(resource_version: Option<&str>, now: DateTime<Utc>) -> Value {
    let mut metadata =
        json!({ "annotations": { TRIGGER_ANNOTATION: now.timestamp().to_string() } });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({ "metadata": metadata })
}

/// How the controller is set up.
#[derive(Debug, Clone, Default)]
pub struct ControllerConfig {
    /// Lease to hold before acting; None runs unconditionally (single replica, tests).
    pub leader: Option<ballast_runtime::leader::LeaseConfig>,
    /// Namespaces the webhook does not serve, so a trigger there would record nothing.
    pub excluded_namespaces: Vec<String>,
}

struct Context {
    client: Client,
    excluded_namespaces: Vec<String>,
    clock: Arc<dyn Clock>,
}

/// Runs until `shutdown`: with a Lease, only while leading.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<()> {
    let ctx = Arc::new(Context {
        client: client.clone(),
        excluded_namespaces: config.excluded_namespaces,
        clock,
    });
    let Some(lease) = config.leader else {
        run_controller(ctx, shutdown).await;
        return Ok(());
    };
    let (mut leading, election) =
        ballast_runtime::leader::spawn(client, lease.clone(), shutdown.clone());
    loop {
        // Standby: wait to lead.
        while !*leading.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => return finish(election).await,
                changed = leading.changed() => if changed.is_err() { return finish(election).await },
            }
        }
        tracing::info!(lease = %lease.name, "leading: starting the PVC controller");
        let term = shutdown.child_token();
        let mut controller = std::pin::pin!(run_controller(ctx.clone(), term.clone()));
        let lost = async {
            while leading.changed().await.is_ok() {
                if !*leading.borrow_and_update() {
                    return;
                }
            }
        };
        tokio::select! {
            () = &mut controller => {}
            () = lost => {
                if !shutdown.is_cancelled() {
                    tracing::info!(lease = %lease.name, "lost the lease: stopping the PVC controller");
                }
                term.cancel();
                controller.await;
            }
        }
        if shutdown.is_cancelled() {
            return finish(election).await;
        }
    }
}

async fn finish(election: tokio::task::JoinHandle<()>) -> Result<()> {
    election.await.map_err(Error::Task)
}

async fn run_controller(ctx: Arc<Context>, stop: CancellationToken) {
    let api: Api<PersistentVolumeClaim> = Api::all(ctx.client.clone());
    let stopped = stop.clone();
    let controller = Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(async move { stopped.cancelled().await });
    let store = controller.store();
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

async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Context>) -> Result<Action> {
    if !needs_trigger(&pvc, &ctx.excluded_namespaces) {
        return Ok(Action::await_change());
    }
    let namespace = pvc.namespace().unwrap_or_default();
    let name = pvc.name_any();
    let claim = format!("{namespace}/{name}");
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = trigger_patch(pvc.resource_version().as_deref(), ctx.clock.now());
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match api.patch(&name, &params, &Patch::Merge(&patch)).await {
        Ok(updated) => {
            metrics::counter!(m::TRIGGERS_ADDED).increment(1);
            let annotations = updated.annotations();
            tracing::info!(
                claim,
                trigger = annotations.get(TRIGGER_ANNOTATION).map(String::as_str),
                pvc_timing = annotations
                    .get(crate::timing::ANNOTATION)
                    .map(String::as_str),
                "added webhook-trigger to a Bound claim"
            );
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(status)) if status.is_conflict() => {
            tracing::debug!(claim, "claim changed meanwhile; deciding again");
            Ok(Action::requeue(CONFLICT_REQUEUE))
        }
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(Action::await_change()),
        Err(source) => Err(Error::Trigger { claim, source }),
    }
}

fn error_policy(_pvc: Arc<PersistentVolumeClaim>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "PVC reconcile failed");
    metrics::counter!(m::CONTROLLER_ERRORS, "error" => err.metric_label()).increment(1);
    Action::requeue(ERROR_REQUEUE)
}

#[cfg(test)]
mod tests;
