//! Properties of the `pvc-timing` annotation: any text parses or is refused without a panic, a
//! history renders back to itself, and the webhook is idempotent: applying its patch and
//! admitting the result again (the API server's reinvocation, or a later identical write)
//! changes nothing, whatever the claim carried (corrupt, foreign or missing annotations, forged
//! triggers, odd phases, clock values).
//!
//! `PROPTEST_CASES` raises the budget (`scripts/fuzz` runs 10^6 per target); without it each
//! target runs a small one so the normal test run stays fast.

use ballast_runtime::admission::decode_value;
use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use pvc_timing::admission::mutate;
use pvc_timing::timing::{
    ANNOTATION, KNOWN_PHASES, Observation, PhaseTiming, PvcTiming, TRIGGER_ANNOTATION, fold,
};
use serde_json::{Value, json};

/// Cases per target when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    // A failing case is saved beside this file and tried first on every later run.
    config.failure_persistence = Some(Box::new(
        proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
    ));
    config
}

/// Requests captured from a Kubernetes 1.36 API server.
const FIXTURES: &[&str] = &[
    include_str!("data/pvc-create.json"),
    include_str!("data/pvc-status-update-binder-bound-dynamic.json"),
    include_str!("data/pvc-status-update-binder-bound.json"),
    include_str!("data/pvc-update-binder-dynamic-bind.json"),
    include_str!("data/pvc-update-binder-external-provisioner-annotation.json"),
    include_str!("data/pvc-update-binder-static-bind.json"),
];

/// The fixtures' claims were created around here.
fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 59, 1).unwrap()
}

fn at(secs: i64) -> DateTime<Utc> {
    base() + chrono::Duration::seconds(secs)
}

fn phase() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KNOWN_PHASES.to_vec()).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => "[A-Za-z]{1,12}",
    ]
}

/// A valid history: known or odd phases at non-decreasing times, some before creation.
fn history() -> impl Strategy<Value = PvcTiming> {
    prop::collection::vec((phase(), 0i64..100_000), 1..5).prop_map(|entries| {
        let mut t = -1_000;
        let timings: Vec<PhaseTiming> = entries
            .into_iter()
            .map(|(phase, step)| {
                t += step;
                PhaseTiming::at(if phase.is_empty() { "Pending" } else { &phase }, at(t))
            })
            .collect();
        PvcTiming {
            current_phase: timings.last().map(|t| t.phase.clone()).unwrap_or_default(),
            timings,
        }
    })
}

/// What a claim may carry in its `pvc-timing` annotation.
fn annotation() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        3 => history().prop_map(|h| Some(h.render())),
        // A real history, cut short or edited by hand.
        2 => (history(), any::<prop::sample::Index>())
            .prop_map(|(h, cut)| { let s = h.render(); Some(s[..cut.index(s.len())].to_owned()) }),
        1 => (history(), "[a-zA-Z0-9:\"{},\\[\\]-]{0,8}", any::<prop::sample::Index>()).prop_map(
            |(h, junk, at)| {
                let mut s = h.render();
                let at = at.index(s.len());
                s.replace_range(at..at, &junk);
                Some(s)
            }
        ),
        1 => any::<String>().prop_map(Some),
        1 => Just(Some(String::new())),
        1 => Just(Some(r#"{"currentPhase":"Bound","timings":[]}"#.to_owned())),
    ]
}

/// A `webhook-trigger` value: the controller's seconds, or whatever a user typed.
fn trigger() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        3 => (-2_000i64..200_000).prop_map(|s| Some((base().timestamp() + s).to_string())),
        1 => any::<i64>().prop_map(|s| Some(s.to_string())),
        1 => any::<String>().prop_map(Some),
    ]
}

fn status_phase() -> impl Strategy<Value = Option<String>> {
    prop_oneof![4 => phase().prop_map(Some), 1 => Just(None)]
}

#[derive(Debug, Clone)]
struct Claim {
    annotation: Option<String>,
    trigger: Option<String>,
    phase: Option<String>,
}

fn claim() -> impl Strategy<Value = Claim> {
    (annotation(), trigger(), status_phase()).prop_map(|(annotation, trigger, phase)| Claim {
        annotation,
        trigger,
        phase,
    })
}

/// Puts the claim's annotations and phase on `object`.
fn dress(object: &mut Value, claim: &Claim) {
    if !object.is_object() {
        return;
    }
    let meta = &mut object["metadata"];
    for (key, value) in [
        (ANNOTATION, &claim.annotation),
        (TRIGGER_ANNOTATION, &claim.trigger),
    ] {
        if let Some(value) = value {
            if meta.get("annotations").is_none_or(Value::is_null) {
                meta["annotations"] = json!({});
            }
            meta["annotations"][key] = json!(value);
        }
    }
    match &claim.phase {
        Some(p) => object["status"]["phase"] = json!(p),
        None => {
            if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
                status.remove("phase");
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    fixture: usize,
    object: Claim,
    old: Claim,
    keep_created: bool,
    now: i64,
    later: i64,
    seen: Option<i64>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..FIXTURES.len(),
        claim(),
        claim(),
        any::<bool>(),
        -100i64..200_000,
        0i64..100_000,
        prop::option::of(-2_000i64..200_000),
    )
        .prop_map(
            |(fixture, object, old, keep_created, now, later, seen)| Case {
                fixture,
                object,
                old,
                keep_created,
                now,
                later,
                seen,
            },
        )
}

fn review_of(case: &Case) -> Value {
    let mut review: Value = serde_json::from_str(FIXTURES[case.fixture]).unwrap();
    dress(&mut review["request"]["object"], &case.object);
    dress(&mut review["request"]["oldObject"], &case.old);
    if !case.keep_created
        && let Some(meta) = review["request"]["object"]["metadata"].as_object_mut()
    {
        meta.remove("creationTimestamp");
    }
    review
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_annotation_text_parses_or_is_refused_never_a_panic(text in any::<String>()) {
        if let Ok(timing) = PvcTiming::parse(&text) {
            prop_assert!(!timing.timings.is_empty());
            prop_assert_eq!(&timing.current_phase, &timing.timings.last().unwrap().phase);
        }
    }

    #[test]
    fn a_history_renders_back_to_itself(h in history()) {
        let text = h.render();
        prop_assert_eq!(PvcTiming::parse(&text), Ok(h));
    }

    #[test]
    fn the_fold_is_idempotent_and_always_yields_a_valid_history(
        phase in prop::sample::select(KNOWN_PHASES.to_vec()),
        annotation in annotation(),
        stored in annotation(),
        creating in any::<bool>(),
        created in prop::option::of(-1_000i64..1_000),
        sightings in prop::collection::vec(-2_000i64..200_000, 0..3),
        now in -100i64..200_000,
        later in 0i64..100_000,
    ) {
        let sightings: Vec<DateTime<Utc>> = sightings.into_iter().map(at).collect();
        let obs = Observation {
            phase,
            annotation: annotation.as_deref(),
            stored: stored.as_deref(),
            creating,
            created_at: created.map(at),
            earlier_sightings: &sightings,
            now: at(now),
        };
        let first = fold(&obs);
        prop_assert_eq!(PvcTiming::parse(&first.value), Ok(first.timing.clone()));
        prop_assert_eq!(&first.timing.current_phase, phase);
        prop_assert_eq!(first.changed, annotation.as_deref() != Some(first.value.as_str()));

        // The same request again, carrying the value just written, a little later.
        let again = fold(&Observation {
            annotation: Some(&first.value),
            now: at(now + later),
            ..obs.clone()
        });
        prop_assert!(!again.changed, "second fold changed {} into {}", first.value, again.value);
        prop_assert_eq!(again.value, first.value);
        prop_assert_eq!(again.repair, None);
    }

    #[test]
    fn the_webhook_is_idempotent_on_real_requests_with_any_annotations(case in case()) {
        let mut review = review_of(&case);
        let req = decode_value(review.clone()).unwrap();
        let Some(first) = mutate(&req, at(case.now), case.seen.map(at)).unwrap() else {
            // Not a claim phase: nothing recorded, nothing to repeat.
            return Ok(());
        };
        prop_assert!(PvcTiming::parse(&first.outcome.value).is_ok(), "wrote {}", first.outcome.value);
        prop_assert!(
            KNOWN_PHASES.contains(&first.outcome.timing.current_phase.as_str()),
            "recorded phase {:?}", first.outcome.timing.current_phase
        );
        if let Some(patch) = &first.patch {
            json_patch::patch(&mut review["request"]["object"], patch)
                .map_err(|e| TestCaseError::fail(format!("the patch does not apply: {e}")))?;
        }
        let stored = review["request"]["object"]["metadata"]["annotations"][ANNOTATION].clone();
        prop_assert_eq!(stored, json!(first.outcome.value));

        let req = decode_value(review.clone()).unwrap();
        let again = mutate(&req, at(case.now + case.later), case.seen.map(at))
            .unwrap()
            .expect("the same claim phase again");
        prop_assert!(
            again.patch.is_none(),
            "second admission changed {} into {}", first.outcome.value, again.outcome.value
        );
        prop_assert_eq!(again.outcome.value, first.outcome.value);
    }
}

const PENDING_AT_10: &str =
    r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:11Z"}]}"#;

fn update(phase: &str, stored: Option<&str>, sightings: &[DateTime<Utc>], now: i64) -> String {
    fold(&Observation {
        phase,
        annotation: None,
        stored,
        creating: false,
        created_at: Some(at(0)),
        earlier_sightings: sightings,
        now: at(now),
    })
    .value
}

/// Found by the fold property: a replica whose clock is behind the one that recorded Pending
/// wrote Bound before it, a history that no longer parses (and was then thrown away).
#[test]
fn a_replica_with_a_slow_clock_never_dates_an_entry_before_the_previous_one() {
    let value = update("Bound", Some(PENDING_AT_10), &[], 5);
    assert_eq!(
        value,
        r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:11Z"},{"phase":"Bound","time":"2026-11-23T08:59:11Z"}]}"#
    );
    assert!(PvcTiming::parse(&value).is_ok());
}

/// Found by the fold property: a sighting from before the claim existed was ignored when the
/// history started, then moved its first entry back on the next request.
#[test]
fn a_sighting_from_before_creation_never_moves_the_first_entry() {
    let early = [at(-1)];
    let first = update("Pending", None, &early, 0);
    let again = fold(&Observation {
        phase: "Pending",
        annotation: Some(&first),
        stored: None,
        creating: false,
        created_at: Some(at(0)),
        earlier_sightings: &early,
        now: at(3),
    });
    assert!(!again.changed, "{first} became {}", again.value);
}

/// Found by the webhook property: on reinvocation of a CREATE, a sighting moved the creation
/// record that the first invocation had written.
#[test]
fn a_reinvoked_create_keeps_its_own_creation_record() {
    let sightings = [at(0)];
    let create = |annotation: Option<&str>| {
        fold(&Observation {
            phase: "Pending",
            annotation,
            stored: None,
            creating: true,
            created_at: None,
            earlier_sightings: &sightings,
            now: at(1),
        })
    };
    let first = create(None);
    let again = create(Some(&first.value));
    assert!(!again.changed, "{} became {}", first.value, again.value);
}
