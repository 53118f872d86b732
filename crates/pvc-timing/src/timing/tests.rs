use super::*;
use chrono::TimeZone;

fn at(secs: i64) -> DateTime<Utc> {
    // 2026-11-23T08:59:01Z plus `secs`.
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 59, 1).unwrap() + chrono::Duration::seconds(secs)
}

fn obs<'a>(phase: &'a str, annotation: Option<&'a str>, now: i64) -> Observation<'a> {
    Observation {
        phase,
        annotation,
        stored: None,
        creating: false,
        created_at: Some(at(0)),
        earlier_sightings: &[],
        now: at(now),
    }
}

const PENDING_AT_0: &str =
    r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#;
const BOUND_AT_3: &str = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"}]}"#;

#[test]
fn renders_the_seed_shape_exactly() {
    let timing = PvcTiming {
        current_phase: "Bound".into(),
        timings: vec![
            PhaseTiming::at("Pending", at(0)),
            PhaseTiming::at("Bound", at(3)),
        ],
    };
    assert_eq!(timing.render(), BOUND_AT_3);
}

#[test]
fn formats_times_as_utc_rfc3339_whole_seconds() {
    let t = at(0) + chrono::Duration::milliseconds(987);
    assert_eq!(format_time(t), "2026-11-23T08:59:01Z");
    assert_eq!(
        parse_time("2026-11-23T16:59:01+08:00"),
        Some(at(0)),
        "seed-era values written in a local zone still read as the same instant"
    );
    assert_eq!(parse_time("yesterday"), None);
}

#[test]
fn empty_or_missing_phase_reads_as_pending() {
    assert_eq!(normalise_phase(None), "Pending");
    assert_eq!(normalise_phase(Some("")), "Pending");
    assert_eq!(normalise_phase(Some("Bound")), "Bound");
}

#[test]
fn a_new_claim_records_pending_at_its_creation_time() {
    let o = Observation {
        creating: true,
        ..obs("Pending", None, 1)
    };
    let out = fold(&o);
    assert_eq!(out.value, PENDING_AT_0);
    assert!(out.changed);
    assert_eq!(out.appended.as_deref(), Some("Pending"));
    assert_eq!(out.repair, None);
}

#[test]
fn a_new_claim_without_creation_timestamp_records_pending_now() {
    let o = Observation {
        creating: true,
        created_at: None,
        ..obs("Pending", None, 0)
    };
    assert_eq!(fold(&o).value, PENDING_AT_0);
}

#[test]
fn reinvocation_on_create_changes_nothing() {
    let o = Observation {
        creating: true,
        ..obs("Pending", Some(PENDING_AT_0), 2)
    };
    let out = fold(&o);
    assert!(!out.changed);
    assert_eq!(out.appended, None);
    assert_eq!(out.value, PENDING_AT_0);
}

#[test]
fn a_copied_history_on_a_new_claim_is_replaced_and_reported() {
    let copied = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2025-01-01T00:00:00Z"},{"phase":"Bound","time":"2025-01-01T00:00:09Z"}]}"#;
    let old_pending = r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2025-01-01T00:00:00Z"}]}"#;
    for value in [copied, old_pending, "garbage"] {
        let o = Observation {
            creating: true,
            ..obs("Pending", Some(value), 0)
        };
        let out = fold(&o);
        assert_eq!(out.value, PENDING_AT_0, "for {value}");
        assert!(
            matches!(out.repair, Some(Repair::ReplacedOnCreate { .. })),
            "for {value}"
        );
    }
}

#[test]
fn appends_only_when_the_phase_changes() {
    struct Case {
        name: &'static str,
        phase: &'static str,
        annotation: &'static str,
        want: &'static str,
        appended: Option<&'static str>,
    }
    let cases = [
        Case {
            name: "pending to bound appends bound",
            phase: "Bound",
            annotation: PENDING_AT_0,
            want: BOUND_AT_3,
            appended: Some("Bound"),
        },
        Case {
            name: "still pending keeps the value",
            phase: "Pending",
            annotation: PENDING_AT_0,
            want: PENDING_AT_0,
            appended: None,
        },
        Case {
            name: "still bound keeps the value",
            phase: "Bound",
            annotation: BOUND_AT_3,
            want: BOUND_AT_3,
            appended: None,
        },
        Case {
            name: "bound to lost appends lost",
            phase: "Lost",
            annotation: BOUND_AT_3,
            want: r#"{"currentPhase":"Lost","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"},{"phase":"Lost","time":"2026-11-23T08:59:04Z"}]}"#,
            appended: Some("Lost"),
        },
    ];
    for case in cases {
        let out = fold(&obs(case.phase, Some(case.annotation), 3));
        assert_eq!(out.value, case.want, "{}", case.name);
        assert_eq!(out.appended.as_deref(), case.appended, "{}", case.name);
        assert_eq!(out.changed, case.want != case.annotation, "{}", case.name);
        assert_eq!(out.repair, None, "{}", case.name);
    }
}

#[test]
fn folding_its_own_output_again_is_a_no_op() {
    let first = fold(&obs("Bound", Some(PENDING_AT_0), 3));
    let again = fold(&obs("Bound", Some(&first.value), 7));
    assert!(!again.changed);
    assert_eq!(again.value, first.value);
    assert_eq!(again.appended, None);
}

#[test]
fn keeps_seed_era_values_verbatim_when_the_phase_is_unchanged() {
    let seed = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T16:59:01+08:00"},{"phase":"Bound","time":"2026-11-23T16:59:04+08:00"}]}"#;
    let out = fold(&obs("Bound", Some(seed), 30));
    assert!(!out.changed);
    assert_eq!(out.value, seed);
}

#[test]
fn corrupt_or_foreign_values_restart_from_the_current_phase_and_say_why() {
    let cases = [
        ("not json", "{oops", "not a pvc-timing value"),
        (
            "foreign json",
            r#"{"owner":"someone-else"}"#,
            "not a pvc-timing value",
        ),
        (
            "extra field",
            r#"{"currentPhase":"Bound","timings":[{"phase":"Bound","time":"2026-11-23T08:59:01Z"}],"x":1}"#,
            "not a pvc-timing value",
        ),
        (
            "empty timings",
            r#"{"currentPhase":"Bound","timings":[]}"#,
            "timings is empty",
        ),
        (
            "current phase disagrees",
            r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#,
            "is not the last recorded phase",
        ),
        (
            "bad time",
            r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"soon"}]}"#,
            "is not RFC 3339",
        ),
        (
            "time goes backwards",
            r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:09Z"},{"phase":"Bound","time":"2026-11-23T08:59:01Z"}]}"#,
            "goes backwards",
        ),
        (
            "empty phase",
            r#"{"currentPhase":"","timings":[{"phase":"","time":"2026-11-23T08:59:01Z"}]}"#,
            "empty phase",
        ),
    ];
    for (name, value, why) in cases {
        let out = fold(&obs("Bound", Some(value), 5));
        assert_eq!(
            out.value,
            r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:06Z","observed":false}]}"#,
            "{name}"
        );
        assert!(out.changed, "{name}");
        match out.repair {
            Some(Repair::Restarted { reason }) => assert!(reason.contains(why), "{name}: {reason}"),
            other => panic!("{name}: expected a restart, got {other:?}"),
        }
    }
}

#[test]
fn a_corrupt_incoming_value_falls_back_to_the_stored_history() {
    let o = Observation {
        stored: Some(PENDING_AT_0),
        ..obs("Bound", Some("{oops"), 3)
    };
    let out = fold(&o);
    assert_eq!(out.value, BOUND_AT_3);
    assert!(matches!(
        out.repair,
        Some(Repair::RestoredFromStored { .. })
    ));
}

#[test]
fn an_update_that_drops_the_annotation_keeps_the_stored_history() {
    let o = Observation {
        stored: Some(PENDING_AT_0),
        ..obs("Pending", None, 3)
    };
    let out = fold(&o);
    assert_eq!(out.value, PENDING_AT_0);
    assert!(out.changed, "the dropped annotation must be put back");
    assert_eq!(out.appended, None);
    assert_eq!(
        out.repair.as_ref().map(Repair::label),
        Some("restored_from_stored")
    );
}

#[test]
fn a_claim_first_seen_bound_records_pending_since_creation_and_a_bound_not_observed() {
    let out = fold(&obs("Bound", None, 3));
    assert_eq!(
        out.value,
        r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z","observed":false}]}"#
    );
    assert_eq!(out.repair, None);
    assert_eq!(out.previous, None);
    assert_eq!(
        out.timing.first_time_in("Bound"),
        None,
        "a time not witnessed is not a measurement"
    );
    assert_eq!(out.timing.first_time_in("Pending"), Some(at(0)));
    // folding it again keeps it as it is
    let again = fold(&obs("Bound", Some(&out.value), 9));
    assert!(!again.changed);
    // a claim first seen still Pending was Pending since its creation
    let pending = fold(&obs("Pending", None, 3));
    assert_eq!(pending.value, PENDING_AT_0);
}

#[test]
fn bound_time_is_the_earliest_sighting_when_recorded_late() {
    // The status update's change was dropped; the controller saw Bound at +3 and its trigger
    // update reaches the webhook at +9.
    let o = Observation {
        earlier_sightings: &[at(3)],
        ..obs("Bound", Some(PENDING_AT_0), 9)
    };
    assert_eq!(fold(&o).value, BOUND_AT_3);
}

#[test]
fn a_later_bound_record_is_moved_back_to_an_earlier_sighting() {
    let late = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:10Z"}]}"#;
    let o = Observation {
        earlier_sightings: &[at(3)],
        ..obs("Bound", Some(late), 12)
    };
    let out = fold(&o);
    assert_eq!(out.value, BOUND_AT_3);
    assert!(out.changed);
    assert_eq!(out.appended, None);
}

#[test]
fn a_later_sighting_never_moves_the_bound_time() {
    let o = Observation {
        earlier_sightings: &[at(20)],
        ..obs("Bound", Some(BOUND_AT_3), 25)
    };
    let out = fold(&o);
    assert!(!out.changed);
    assert_eq!(out.value, BOUND_AT_3);
}

#[test]
fn a_sighting_before_the_previous_entry_is_ignored() {
    // A trigger left over from an earlier Bound spell must not reorder the history.
    let lost = r#"{"currentPhase":"Lost","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"},{"phase":"Lost","time":"2026-11-23T09:00:01Z"}]}"#;
    let o = Observation {
        earlier_sightings: &[at(3)],
        ..obs("Bound", Some(lost), 120)
    };
    let out = fold(&o);
    assert_eq!(
        out.timing.timings.last().map(|t| t.time.as_str()),
        Some("2026-11-23T09:01:01Z")
    );
}

#[test]
fn first_time_in_finds_the_first_entry_of_a_phase() {
    let timing = PvcTiming::parse(BOUND_AT_3).unwrap();
    assert_eq!(timing.first_time_in("Bound"), Some(at(3)));
    assert_eq!(timing.first_time_in("Lost"), None);
}

#[test]
fn a_stale_sighting_does_not_hide_a_valid_one() {
    // The trigger is from an earlier Bound spell; this replica saw the new Bound at +65.
    let lost = r#"{"currentPhase":"Lost","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"},{"phase":"Lost","time":"2026-11-23T09:00:01Z"}]}"#;
    let sightings = [at(3), at(65)];
    let o = Observation {
        earlier_sightings: &sightings,
        ..obs("Bound", Some(lost), 120)
    };
    let out = fold(&o);
    assert_eq!(
        out.timing.timings.last().map(|t| t.time.as_str()),
        Some("2026-11-23T09:00:06Z")
    );
}
