use super::*;
use crate::admission::FixedClock;
use chrono::TimeZone;
use k8s_openapi::api::core::v1::PersistentVolumeClaimStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

fn mk_pvc(ns: &str, name: &str, phase: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some("42".into()),
            ..ObjectMeta::default()
        },
        status: Some(PersistentVolumeClaimStatus {
            phase: Some(phase.into()),
            ..PersistentVolumeClaimStatus::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

#[test]
fn triggers_a_bound_claim_without_a_trigger() {
    assert!(needs_trigger(&mk_pvc("apps", "data", "Bound"), &[]));
}

#[test]
fn leaves_pending_and_lost_claims_alone() {
    assert!(!needs_trigger(&mk_pvc("apps", "data", "Pending"), &[]));
    assert!(!needs_trigger(&mk_pvc("apps", "data", "Lost"), &[]));
    let mut no_status = mk_pvc("apps", "data", "Bound");
    no_status.status = None;
    assert!(!needs_trigger(&no_status, &[]));
}

#[test]
fn triggers_each_claim_only_once() {
    let mut pvc = mk_pvc("apps", "data", "Bound");
    pvc.metadata.annotations =
        Some([(TRIGGER_ANNOTATION.to_owned(), "1795510741".to_owned())].into());
    assert!(!needs_trigger(&pvc, &[]));
}

#[test]
fn skips_claims_being_deleted_and_excluded_namespaces() {
    let mut deleting = mk_pvc("apps", "data", "Bound");
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    assert!(!needs_trigger(&deleting, &[]));
    let excluded = ["kube-system".to_owned()];
    assert!(!needs_trigger(
        &mk_pvc("kube-system", "data", "Bound"),
        &excluded
    ));
    assert!(needs_trigger(&mk_pvc("apps", "data", "Bound"), &excluded));
}

/// Requests the stand-in API server saw: (method, path and query, content type, body).
type Seen = Arc<std::sync::Mutex<Vec<(String, String, String, Value)>>>;

/// A stand-in API server: records each request (method, path and query, content type,
/// body) and answers with `status` and `body`.
fn api(status: u16, body: Value) -> (Client, Seen) {
    use http_body_util::BodyExt;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let log = log.clone();
        let body = body.clone();
        async move {
            let (parts, payload) = req.into_parts();
            let bytes = payload.collect().await?.to_bytes();
            log.lock().unwrap().push((
                parts.method.to_string(),
                parts.uri.to_string(),
                parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ));
            let response = http::Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response)
        }
    });
    (Client::new(service, "default"), seen)
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context {
        client,
        excluded_namespaces: vec![],
        clock: Arc::new(FixedClock(
            Utc.with_ymd_and_hms(2026, 11, 23, 8, 59, 4).unwrap(),
        )),
    })
}

#[tokio::test]
async fn reconcile_sends_one_merge_patch_with_the_trigger() {
    let pvc = mk_pvc("apps", "data", "Bound");
    let mut updated = serde_json::to_value(&pvc).unwrap();
    updated["metadata"]["annotations"] = json!({"webhook-trigger": "1795424344"});
    let (client, seen) = api(200, updated);
    let action = reconcile(Arc::new(pvc), context(client)).await.unwrap();
    assert_eq!(action, Action::await_change());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (method, uri, content_type, body) = &seen[0];
    assert_eq!(method, "PATCH");
    assert_eq!(
        uri,
        "/api/v1/namespaces/apps/persistentvolumeclaims/data?&fieldManager=pvc-timing"
    );
    assert_eq!(content_type, "application/merge-patch+json");
    assert_eq!(
        body,
        &json!({"metadata": {"resourceVersion": "42", "annotations": {"webhook-trigger": "1795424344"}}})
    );
}

#[tokio::test]
async fn reconcile_of_an_untriggerable_claim_calls_nothing() {
    let (client, seen) = api(500, json!({}));
    let action = reconcile(Arc::new(mk_pvc("apps", "data", "Pending")), context(client))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_write_conflict_is_retried_soon_rather_than_reported() {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "the object has been modified", "reason": "Conflict", "code": 409});
    let (client, _) = api(409, status);
    let action = reconcile(Arc::new(mk_pvc("apps", "data", "Bound")), context(client))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(CONFLICT_REQUEUE));
}

#[tokio::test]
async fn other_api_failures_are_errors_naming_the_claim() {
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "forbidden", "reason": "Forbidden", "code": 403});
    let (client, _) = api(403, status);
    let err = reconcile(Arc::new(mk_pvc("apps", "data", "Bound")), context(client))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to add the webhook-trigger annotation to apps/data"
    );
}

#[test]
fn the_trigger_is_unix_seconds_guarded_by_resource_version() {
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 8, 59, 4).unwrap();
    assert_eq!(
        trigger_patch(Some("42"), now),
        json!({"metadata": {"resourceVersion": "42", "annotations": {"webhook-trigger": "1795424344"}}})
    );
    assert_eq!(
        trigger_patch(None, now),
        json!({"metadata": {"annotations": {"webhook-trigger": "1795424344"}}})
    );
}

const CREATED: &str = "2026-11-23T08:59:01Z";
const PENDING_ONLY: &str =
    r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#;
const BOUND_AT_13: &str = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:14Z"}]}"#;

/// A claim as stored, created at [`CREATED`], with these annotations.
fn stored(phase: &str, annotations: &[(&str, &str)]) -> PersistentVolumeClaim {
    let mut pvc = mk_pvc("apps", "data", phase);
    pvc.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        CREATED.parse().unwrap(),
    ));
    pvc.metadata.annotations = Some(
        annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    pvc
}

#[test]
fn a_pending_claim_is_never_written_to() {
    // the PV controller is working on it: a write now would make its next write conflict
    let pending = stored("Pending", &[(ANNOTATION, PENDING_ONLY)]);
    assert!(plan(&pending, &[]).is_empty());
    let mut no_phase = pending.clone();
    no_phase.status = None;
    assert!(plan(&no_phase, &[]).is_empty());
}

#[test]
fn a_new_history_entry_is_counted_once_and_marked() {
    // bound before the controller looked: Pending and Bound counted at once
    let bound = stored("Bound", &[(ANNOTATION, BOUND_AT_13)]);
    let first = plan(&bound, &[]);
    assert_eq!(
        first,
        Plan {
            trigger: true,
            counted: Some(2),
            transitions: vec!["Pending", "Bound"],
            time_to_bound: Some(13.0),
        }
    );
    // Once the mark is stored (by this replica, or one before a restart), nothing is left.
    let marked = stored(
        "Bound",
        &[
            (ANNOTATION, BOUND_AT_13),
            (COUNTED_ANNOTATION, "2"),
            (TRIGGER_ANNOTATION, "1795424354"),
        ],
    );
    assert!(plan(&marked, &[]).is_empty());
}

#[test]
fn a_bind_not_witnessed_is_counted_but_never_observed() {
    let found = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T10:00:00Z","observed":false}]}"#;
    let plan = plan(&stored("Bound", &[(ANNOTATION, found)]), &[]);
    assert_eq!(plan.transitions, ["Pending", "Bound"]);
    assert_eq!(plan.counted, Some(2));
    assert_eq!(
        plan.time_to_bound, None,
        "an hour from creation to first sighting is not a time to bind"
    );
}

#[test]
fn binding_counts_bound_and_observes_the_stored_time_to_bound() {
    let bound = stored(
        "Bound",
        &[(ANNOTATION, BOUND_AT_13), (COUNTED_ANNOTATION, "1")],
    );
    let plan = plan(&bound, &[]);
    assert!(plan.trigger);
    assert_eq!(plan.counted, Some(2));
    assert_eq!(plan.transitions, ["Bound"]);
    assert_eq!(plan.time_to_bound, Some(13.0));
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 8, 59, 20).unwrap();
    assert_eq!(
        plan_patch(&plan, Some("42"), now),
        json!({"metadata": {"resourceVersion": "42", "annotations": {
            "webhook-trigger": "1795424360", COUNTED_ANNOTATION: "2"}}})
    );
}

#[test]
fn a_manual_trigger_from_before_the_binding_does_not_stop_the_controllers_own() {
    // Annotated by a user at 08:59:05 while Pending; bound at 08:59:14.
    let early = stored(
        "Bound",
        &[
            (ANNOTATION, BOUND_AT_13),
            (TRIGGER_ANNOTATION, "1795424345"),
            (COUNTED_ANNOTATION, "2"),
        ],
    );
    assert!(needs_trigger(&early, &[]));
    // The controller's own, written after the binding, is final.
    let own = stored(
        "Bound",
        &[
            (ANNOTATION, BOUND_AT_13),
            (TRIGGER_ANNOTATION, "1795424354"),
            (COUNTED_ANNOTATION, "2"),
        ],
    );
    assert!(!needs_trigger(&own, &[]));
    assert!(plan(&own, &[]).is_empty());
}

#[test]
fn a_history_started_again_is_marked_without_counting() {
    let restarted = stored(
        "Lost",
        &[
            (
                ANNOTATION,
                r#"{"currentPhase":"Lost","timings":[{"phase":"Lost","time":"2026-11-23T09:00:00Z"}]}"#,
            ),
            (COUNTED_ANNOTATION, "3"),
        ],
    );
    let plan = plan(&restarted, &[]);
    assert_eq!(plan.counted, Some(1));
    assert!(plan.transitions.is_empty());
    assert_eq!(plan.time_to_bound, None);
}

#[test]
fn a_second_bound_spell_is_counted_but_not_observed_again() {
    let again = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:14Z"},{"phase":"Lost","time":"2026-11-23T09:00:00Z"},{"phase":"Bound","time":"2026-11-23T09:01:00Z"}]}"#;
    let pvc = stored(
        "Bound",
        &[
            (ANNOTATION, again),
            (COUNTED_ANNOTATION, "2"),
            (TRIGGER_ANNOTATION, "1795424354"),
        ],
    );
    let plan = plan(&pvc, &[]);
    assert_eq!(plan.transitions, ["Lost", "Bound"]);
    assert_eq!(plan.time_to_bound, None);
}

#[tokio::test]
async fn reconcile_writes_the_mark_under_a_resource_version_precondition() {
    let pending = stored(
        "Lost",
        &[(
            ANNOTATION,
            r#"{"currentPhase":"Lost","timings":[{"phase":"Lost","time":"2026-11-23T09:00:00Z"}]}"#,
        )],
    );
    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "the object has been modified", "reason": "Conflict", "code": 409});
    let (client, seen) = api(409, status);
    let action = reconcile(Arc::new(pending), context(client)).await.unwrap();
    assert_eq!(action, Action::requeue(CONFLICT_REQUEUE));
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].3,
        json!({"metadata": {"resourceVersion": "42", "annotations": {COUNTED_ANNOTATION: "1"}}})
    );
}
