use super::*;
use ballast_runtime::admission::{decode, decode_value, encode};
use chrono::TimeZone;
use serde_json::json;

/// Requests captured from a Kubernetes 1.36 API server (see tests/data).
fn fixture(name: &str) -> Value {
    let text = match name {
        "pvc-create" => include_str!("../../tests/data/pvc-create.json"),
        "pvc-update-binder-static-bind" => {
            include_str!("../../tests/data/pvc-update-binder-static-bind.json")
        }
        "pvc-status-update-binder-bound" => {
            include_str!("../../tests/data/pvc-status-update-binder-bound.json")
        }
        "pvc-update-binder-external-provisioner-annotation" => {
            include_str!("../../tests/data/pvc-update-binder-external-provisioner-annotation.json")
        }
        "pvc-update-binder-dynamic-bind" => {
            include_str!("../../tests/data/pvc-update-binder-dynamic-bind.json")
        }
        "pvc-status-update-binder-bound-dynamic" => {
            include_str!("../../tests/data/pvc-status-update-binder-bound-dynamic.json")
        }
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap()
}

fn request(review: &Value) -> ClaimRequest<'static> {
    decode_value(review.clone()).unwrap()
}

/// Seconds after the fixtures' claim `data-1` was created (2026-11-23T08:59:01Z).
fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 59, 1).unwrap() + chrono::Duration::seconds(secs)
}

/// Sets an annotation on `object` and `oldObject` (as if stored before the request).
fn annotate(review: &mut Value, key: &str, value: &str, which: &[&str]) {
    for field in which {
        let meta = &mut review["request"][field]["metadata"];
        if meta.get("annotations").is_none_or(Value::is_null) {
            meta["annotations"] = json!({});
        }
        meta["annotations"][key] = json!(value);
    }
}

fn patch_json(mutation: &Mutation) -> Value {
    serde_json::to_value(mutation.patch.as_ref().expect("a patch")).unwrap()
}

const PENDING_AT_CREATION: &str =
    r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#;

#[test]
fn create_adds_the_annotations_map_with_pending_at_creation() {
    let req = request(&fixture("pvc-create"));
    let mutation = mutate(&req, at(1), None).unwrap().unwrap();
    assert_eq!(
        patch_json(&mutation),
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"pvc-timing": PENDING_AT_CREATION}}])
    );
}

#[test]
fn every_fixture_gets_the_expected_patch() {
    // Captured without this webhook, so none carries a history: claims that predate the webhook
    // were Pending since their creation (known); one found Bound was not seen binding, so its
    // Bound is marked not observed, at the time of the request.
    let pending_since = |created: &str| {
        format!(
            r#"{{"currentPhase":"Pending","timings":[{{"phase":"Pending","time":"{created}"}}]}}"#
        )
    };
    let bound_unobserved = |created: &str| {
        format!(
            r#"{{"currentPhase":"Bound","timings":[{{"phase":"Pending","time":"{created}"}},{{"phase":"Bound","time":"2026-11-23T09:01:06Z","observed":false}}]}}"#
        )
    };
    let (static_created, dynamic_created) = ("2026-11-23T08:59:01Z", "2026-11-23T09:01:05Z");
    let add_key =
        |v: String| json!([{"op": "add", "path": "/metadata/annotations/pvc-timing", "value": v}]);
    let cases = [
        (
            "pvc-create",
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"pvc-timing": PENDING_AT_CREATION}}]),
            Some("Pending"),
        ),
        (
            "pvc-update-binder-static-bind",
            add_key(pending_since(static_created)),
            Some("Pending"),
        ),
        (
            "pvc-status-update-binder-bound",
            add_key(bound_unobserved(static_created)),
            Some("Bound"),
        ),
        (
            "pvc-update-binder-external-provisioner-annotation",
            add_key(pending_since(dynamic_created)),
            Some("Pending"),
        ),
        (
            "pvc-update-binder-dynamic-bind",
            add_key(pending_since(dynamic_created)),
            Some("Pending"),
        ),
        (
            "pvc-status-update-binder-bound-dynamic",
            add_key(bound_unobserved(dynamic_created)),
            Some("Bound"),
        ),
    ];
    for (name, want, appended) in cases {
        let req = request(&fixture(name));
        let mutation = mutate(&req, at(125), None).unwrap().unwrap();
        assert_eq!(patch_json(&mutation), want, "{name}");
        assert_eq!(mutation.outcome.appended.as_deref(), appended, "{name}");
    }
}

#[test]
fn static_binding_walk_records_pending_then_bound_at_the_status_write() {
    // CREATE: the webhook's own patch is what gets stored.
    let create = request(&fixture("pvc-create"));
    let created = mutate(&create, at(0), None).unwrap().unwrap();
    let stored = created.outcome.value.clone();

    // The PV controller writes volumeName: still Pending, nothing to add.
    let mut bind = fixture("pvc-update-binder-static-bind");
    annotate(&mut bind, ANNOTATION, &stored, &["object", "oldObject"]);
    let binding = mutate(&request(&bind), at(2), None).unwrap().unwrap();
    assert_eq!(binding.patch, None);

    // Then Bound through /status.
    let mut status = fixture("pvc-status-update-binder-bound");
    annotate(&mut status, ANNOTATION, &stored, &["object", "oldObject"]);
    let bound = mutate(&request(&status), at(3), None).unwrap().unwrap();
    let want = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"}]}"#;
    assert_eq!(
        patch_json(&bound),
        json!([{"op": "replace", "path": "/metadata/annotations/pvc-timing", "value": want}])
    );

    // The API server reinvokes the webhook with its own result: no patch.
    let mut again = fixture("pvc-status-update-binder-bound");
    annotate(&mut again, ANNOTATION, &stored, &["oldObject"]);
    annotate(&mut again, ANNOTATION, want, &["object"]);
    let reinvoked = mutate(&request(&again), at(4), None).unwrap().unwrap();
    assert_eq!(reinvoked.patch, None);
}

#[test]
fn trigger_update_records_bound_at_the_controllers_sighting_when_status_path_dropped_it() {
    // The API server discarded the annotation change made on /status; the controller saw Bound
    // at +3 and its webhook-trigger update reaches the webhook at +10.
    let mut review = fixture("pvc-status-update-binder-bound");
    review["request"]["subResource"] = Value::Null;
    review["request"]["oldObject"]["status"] = review["request"]["object"]["status"].clone();
    annotate(
        &mut review,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    let trigger = at(3).timestamp().to_string();
    annotate(&mut review, TRIGGER_ANNOTATION, &trigger, &["object"]);

    let mutation = mutate(&request(&review), at(10), None).unwrap().unwrap();
    let want = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"}]}"#;
    assert_eq!(
        patch_json(&mutation),
        json!([{"op": "replace", "path": "/metadata/annotations/pvc-timing", "value": want}])
    );
}

#[test]
fn dry_run_gets_the_same_patch() {
    let mut review = fixture("pvc-status-update-binder-bound");
    review["request"]["dryRun"] = json!(true);
    annotate(
        &mut review,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    let mutation = mutate(&request(&review), at(3), None).unwrap().unwrap();
    assert!(mutation.patch.is_some());
}

#[test]
fn a_second_bound_spell_is_appended() {
    let lost = r#"{"currentPhase":"Lost","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"},{"phase":"Lost","time":"2026-11-23T09:00:01Z"}]}"#;
    let mut review = fixture("pvc-status-update-binder-bound");
    review["request"]["oldObject"]["status"]["phase"] = json!("Lost");
    annotate(&mut review, ANNOTATION, lost, &["object", "oldObject"]);
    let mutation = mutate(&request(&review), at(120), None).unwrap().unwrap();
    assert_eq!(mutation.outcome.appended.as_deref(), Some("Bound"));
    assert_eq!(mutation.outcome.timing.timings.len(), 4);
}

#[test]
fn a_manual_trigger_while_pending_is_not_taken_as_the_bound_time() {
    // Created at +0; a user annotates webhook-trigger at +4 while the claim is Pending.
    let trigger = at(4).timestamp().to_string();
    let mut manual = fixture("pvc-update-binder-static-bind");
    annotate(
        &mut manual,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    annotate(&mut manual, TRIGGER_ANNOTATION, &trigger, &["object"]);
    let on_pending = mutate(&request(&manual), at(4), None).unwrap().unwrap();
    assert_eq!(
        on_pending.patch, None,
        "a trigger on a Pending claim records nothing"
    );

    // The PV controller binds at +10 through /status; the stored trigger says +4.
    let mut status = fixture("pvc-status-update-binder-bound");
    annotate(
        &mut status,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    annotate(
        &mut status,
        TRIGGER_ANNOTATION,
        &trigger,
        &["object", "oldObject"],
    );
    let bound = mutate(&request(&status), at(10), None).unwrap().unwrap();
    assert_eq!(
        bound.outcome.timing.first_time_in(BOUND),
        Some(at(10)),
        "Bound is dated by the status write, not the earlier trigger"
    );

    // A later main-resource write carrying the same old trigger moves nothing back.
    let mut later = fixture("pvc-status-update-binder-bound");
    later["request"]["subResource"] = Value::Null;
    later["request"]["oldObject"]["status"] = later["request"]["object"]["status"].clone();
    annotate(
        &mut later,
        ANNOTATION,
        &bound.outcome.value,
        &["object", "oldObject"],
    );
    annotate(
        &mut later,
        TRIGGER_ANNOTATION,
        &trigger,
        &["object", "oldObject"],
    );
    let again = mutate(&request(&later), at(12), None).unwrap().unwrap();
    assert_eq!(again.patch, None);
}

#[test]
fn a_forged_status_phase_on_create_and_update_is_ignored() {
    // CREATE: the API server resets status; the claim starts Pending whatever was sent.
    let mut create = fixture("pvc-create");
    create["request"]["object"]["status"] = json!({"phase": "Bound"});
    let created = mutate(&request(&create), at(1), None).unwrap().unwrap();
    assert_eq!(created.outcome.value, PENDING_AT_CREATION);

    // UPDATE of the main resource: the stored phase (oldObject) is what counts.
    let mut update = fixture("pvc-update-binder-static-bind");
    annotate(
        &mut update,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    update["request"]["object"]["status"] = json!({"phase": "Bound"});
    let updated = mutate(&request(&update), at(2), None).unwrap().unwrap();
    assert_eq!(updated.patch, None);
    assert_eq!(updated.outcome.timing.current_phase, "Pending");

    // A phase that is no claim phase is not recorded at all.
    let mut status = fixture("pvc-status-update-binder-bound");
    annotate(
        &mut status,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    status["request"]["object"]["status"]["phase"] = json!("Gone; drop table");
    assert_eq!(mutate(&request(&status), at(3), None).unwrap(), None);
}

#[test]
fn delete_is_let_through_without_a_patch() {
    let mut review = fixture("pvc-create");
    review["request"]["operation"] = json!("DELETE");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    review["request"]["object"] = Value::Null;
    assert_eq!(mutate(&request(&review), at(1), None).unwrap(), None);
    let response = Webhook::new(Arc::new(SystemClock)).answer(&request(&review));
    assert!(response.allowed());
    assert_eq!(response.patch, None);
}

#[test]
fn a_request_for_another_kind_is_allowed_with_a_warning() {
    let mut review = fixture("pvc-create");
    review["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    let response = Webhook::new(Arc::new(FixedClock(at(1)))).answer(&request(&review));
    assert!(response.allowed());
    assert_eq!(response.patch, None);
    let warnings = response.warnings;
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not a PersistentVolumeClaim")),
        "{warnings:?}"
    );
}

#[test]
fn a_corrupt_annotation_is_repaired_with_a_warning_and_the_claim_allowed() {
    let mut review = fixture("pvc-update-binder-static-bind");
    annotate(&mut review, ANNOTATION, "{broken", &["object", "oldObject"]);
    let response = Webhook::new(Arc::new(FixedClock(at(5)))).answer(&request(&review));
    assert!(response.allowed());
    let patch: Value = serde_json::from_slice(response.patch.as_ref().unwrap()).unwrap();
    assert_eq!(
        patch,
        json!([{"op": "replace", "path": "/metadata/annotations/pvc-timing",
                "value": r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#}])
    );
    let warnings = response.warnings;
    assert!(
        warnings.iter().any(|w| w.contains("repaired (restarted)")),
        "{warnings:?}"
    );
}

#[test]
fn the_answer_carries_a_json_patch_the_api_server_can_apply() {
    let review = fixture("pvc-create");
    let body = serde_json::to_vec(&review).unwrap();
    let req = decode(&body).unwrap();
    let response = Webhook::new(Arc::new(FixedClock(at(1)))).answer(&req);
    assert!(response.allowed());
    let answer: Value = serde_json::from_slice(&encode(&req, &response).unwrap()).unwrap();
    assert_eq!(
        answer["response"]["uid"],
        "11ecb804-b28c-4398-b7d9-4efce09cf77e"
    );
    let patch: Patch = serde_json::from_slice(response.patch.as_ref().unwrap()).unwrap();
    let mut object = review["request"]["object"].clone();
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(
        object["metadata"]["annotations"]["pvc-timing"],
        json!(PENDING_AT_CREATION)
    );
}

/// The trigger-update request that follows a `/status` change the API server discarded.
fn trigger_update(trigger_at: DateTime<Utc>) -> Value {
    let mut review = fixture("pvc-status-update-binder-bound");
    review["request"]["subResource"] = Value::Null;
    review["request"]["oldObject"]["status"] = review["request"]["object"]["status"].clone();
    annotate(
        &mut review,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    let trigger = trigger_at.timestamp().to_string();
    annotate(&mut review, TRIGGER_ANNOTATION, &trigger, &["object"]);
    review
}

fn recorded(response: &Answer) -> Value {
    let patch: Value = serde_json::from_slice(response.patch.as_ref().expect("a patch")).unwrap();
    patch[0]["value"].clone()
}

#[test]
fn a_replica_dates_a_late_bound_entry_at_its_own_status_sighting() {
    let mut status = fixture("pvc-status-update-binder-bound");
    annotate(
        &mut status,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    let uid = "3ee1b52b-b30d-480d-9245-483d22d9ba28";

    let at_status = Webhook::new(Arc::new(FixedClock(at(2))));
    at_status.answer(&request(&status));
    assert_eq!(at_status.sightings().get(uid, "Bound"), Some(at(2)));

    // Same replica, later: the trigger (+5) is later than what it saw itself (+2).
    let replica = Webhook {
        clock: Arc::new(FixedClock(at(9))),
        sightings: at_status.sightings,
    };
    let response = replica.answer(&request(&trigger_update(at(5))));
    assert_eq!(
        recorded(&response),
        json!(
            r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:03Z"}]}"#
        )
    );
    assert!(replica.sightings().is_empty(), "stored now, so forgotten");

    // Another replica never saw the status update: the trigger dates it.
    let other = Webhook::new(Arc::new(FixedClock(at(9))));
    assert_eq!(
        recorded(&other.answer(&request(&trigger_update(at(5))))),
        json!(
            r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:06Z"}]}"#
        )
    );
}

#[test]
fn dry_runs_and_main_resource_changes_leave_no_sighting_behind() {
    let mut status = fixture("pvc-status-update-binder-bound");
    status["request"]["dryRun"] = json!(true);
    let webhook = Webhook::new(Arc::new(FixedClock(at(2))));
    webhook.answer(&request(&status));
    assert!(webhook.sightings().is_empty());
    webhook.answer(&request(&fixture("pvc-update-binder-static-bind")));
    assert!(webhook.sightings().is_empty());
}

#[test]
fn sightings_keep_the_earliest_time_per_phase_and_stay_bounded() {
    let sightings = Sightings::default();
    sightings.remember("u", "Bound", at(5));
    sightings.remember("u", "Bound", at(3));
    sightings.remember("u", "Bound", at(7));
    assert_eq!(sightings.get("u", "Bound"), Some(at(3)));
    sightings.remember("u", "Lost", at(9));
    assert_eq!(
        sightings.get("u", "Bound"),
        None,
        "a newer phase replaces it"
    );
    assert_eq!(sightings.get("u", "Lost"), Some(at(9)));
    sightings.forget("u", "Bound");
    assert_eq!(
        sightings.get("u", "Lost"),
        Some(at(9)),
        "only the named phase is forgotten"
    );
    for i in 0..MAX_SIGHTINGS + 1 {
        sightings.remember(&format!("claim-{i}"), "Bound", at(1));
    }
    assert!(sightings.len() <= MAX_SIGHTINGS);
}

#[test]
fn a_retried_status_update_is_dated_at_the_first_sighting() {
    let mut status = fixture("pvc-status-update-binder-bound");
    annotate(
        &mut status,
        ANNOTATION,
        PENDING_AT_CREATION,
        &["object", "oldObject"],
    );
    let req = request(&status);
    let first = mutate(&req, at(2), None).unwrap().unwrap();
    assert_eq!(first.outcome.appended.as_deref(), Some("Bound"));
    // The first attempt's change was discarded; the retry reaches the same replica.
    let retry = mutate(&req, at(4), Some(at(2))).unwrap().unwrap();
    assert!(
        retry
            .outcome
            .value
            .contains(r#"{"phase":"Bound","time":"2026-11-23T08:59:03Z"}"#),
        "dated at the first sighting: {}",
        retry.outcome.value
    );
}

#[test]
fn a_stored_phase_clears_the_sighting_on_any_later_request() {
    let uid = "3ee1b52b-b30d-480d-9245-483d22d9ba28";
    let webhook = Webhook::new(Arc::new(FixedClock(at(9))));
    webhook.sightings().remember(uid, "Bound", at(2));
    let bound = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:03Z"}]}"#;
    let mut status = fixture("pvc-status-update-binder-bound");
    annotate(&mut status, ANNOTATION, bound, &["object", "oldObject"]);
    webhook.answer(&request(&status));
    assert!(webhook.sightings().is_empty());
}

#[test]
fn a_trigger_added_to_a_claim_already_recorded_bound_moves_nothing_back() {
    let bound = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:11Z"}]}"#;
    let mut review = trigger_update(at(3));
    annotate(&mut review, ANNOTATION, bound, &["object", "oldObject"]);
    let mutation = mutate(&request(&review), at(20), None).unwrap().unwrap();
    assert_eq!(mutation.patch, None);
    assert_eq!(mutation.outcome.value, bound);
}
