use super::*;
use crate::render;
use serde_json::json;

fn at(text: &str) -> Timestamp {
    text.parse().expect("RFC 3339")
}

fn claim(
    ns: &str,
    name: &str,
    class: Option<&str>,
    phase: &str,
    timing: Option<&str>,
) -> PersistentVolumeClaim {
    let mut annotations = serde_json::Map::new();
    if let Some(t) = timing {
        annotations.insert(TIMING_ANNOTATION.to_owned(), json!(t));
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "creationTimestamp": "2026-11-23T08:59:01Z",
                     "annotations": annotations},
        "spec": {"storageClassName": class},
        "status": {"phase": phase}
    }))
    .expect("a claim")
}

/// The seed's example: Pending at creation, Bound 3 seconds later.
const SEED: &str = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"}]}"#;
/// Bound while pvc-timing was down: first seen Bound an hour later.
const UNOBSERVED: &str = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T10:02:11Z","observed":false}]}"#;

fn history_with_bound_after(seconds: i64) -> String {
    let bound = at("2026-11-23T08:59:01Z")
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
        .expect("in range");
    format!(
        r#"{{"currentPhase":"Bound","timings":[{{"phase":"Pending","time":"2026-11-23T08:59:01Z"}},{{"phase":"Bound","time":"{bound}"}}]}}"#
    )
}

#[test]
fn a_bound_claims_timeline_gives_each_phase_its_start_and_length_and_the_time_to_bound() {
    let c = claim("demo", "data", Some("hostpath"), "Bound", Some(SEED));
    let t = ClaimTiming::of(&c, at("2026-11-23T09:03:04Z")).expect("a history");
    assert_eq!(t.bound, "observed");
    assert_eq!(t.seconds_to_bound, Some(3));
    assert_eq!(t.timeline.len(), 2);
    assert_eq!(
        t.timeline[0].entered.as_deref(),
        Some("2026-11-23T08:59:01Z")
    );
    assert_eq!(t.timeline[0].lasted_seconds, Some(3));
    assert!(!t.timeline[0].current);
    assert_eq!(t.timeline[1].after_creation_seconds, Some(3));
    assert_eq!(t.timeline[1].lasted_seconds, Some(240));
    assert!(t.timeline[1].current);

    let text = render::claim_timing(&t);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "persistentvolumeclaim demo/data (class hostpath) is Bound now; Bound 3s after creation"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [
            "PHASE", "ENTERED", "AFTER", "CREATION", "LASTED", "TIMELINE"
        ]
    );
    assert!(
        lines[2].starts_with("Pending   2026-11-23T08:59:01Z   0s"),
        "{text}"
    );
    assert!(lines[2].contains("   3s   "), "{text}");
    assert!(lines[3].contains("   4m0s so far   "), "{text}");
    // to scale: Pending is 3s of 243s (one cell), Bound the rest of the 30
    assert!(
        lines[2].ends_with(&format!("|█{}|", " ".repeat(29))),
        "{text}"
    );
    assert!(
        lines[3].ends_with(&format!("|{}|", "█".repeat(30))),
        "{text}"
    );
}

#[test]
fn a_phase_pvc_timing_did_not_witness_is_shown_as_not_observed_and_never_measured() {
    let c = claim("demo", "old", Some("nfs"), "Bound", Some(UNOBSERVED));
    let t = ClaimTiming::of(&c, at("2026-11-23T10:05:00Z")).expect("a history");
    assert_eq!((t.bound, t.seconds_to_bound), ("notObserved", None));
    let bound = &t.timeline[1];
    assert!(!bound.observed);
    assert_eq!(bound.entered, None);
    assert_eq!(bound.first_seen.as_deref(), Some("2026-11-23T10:02:11Z"));
    assert_eq!(
        (bound.after_creation_seconds, bound.lasted_seconds),
        (None, None)
    );
    // How long it was Pending is not known either: it ended unseen.
    assert_eq!(t.timeline[0].lasted_seconds, None);

    let text = render::claim_timing(&t);
    assert!(
        text.contains("time to Bound not observed: bound while pvc-timing was not watching"),
        "{text}"
    );
    let bound = text.lines().nth(3).expect("the Bound row");
    assert_eq!(
        bound
            .split("   ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect::<Vec<_>>(),
        [
            "Bound",
            "not observed (first seen 2026-11-23T10:02:11Z)",
            "-",
            "-"
        ],
        "{text}"
    );
    assert!(
        !text.contains("1h3m"),
        "the first-seen time is no duration: {text}"
    );
    let pending = text.lines().nth(2).expect("the Pending row");
    assert!(
        pending.ends_with("   0s               not observed"),
        "{text}"
    );
}

#[test]
fn a_pending_claim_shows_how_long_it_has_waited_so_far() {
    let pending = r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#;
    let c = claim("demo", "wait", None, "Pending", Some(pending));
    let t = ClaimTiming::of(&c, at("2026-11-23T09:01:01Z")).expect("a history");
    assert_eq!((t.bound, t.seconds_to_bound), ("notBound", None));
    let text = render::claim_timing(&t);
    assert!(
        text.starts_with("persistentvolumeclaim demo/wait (class <none>) is Pending now; not Bound yet, 2m0s since creation\n"),
        "{text}"
    );
    assert!(text.contains("2m0s so far"), "{text}");
}

#[test]
fn a_claim_without_a_readable_annotation_has_no_timeline() {
    let c = claim("demo", "x", None, "Bound", None);
    assert_eq!(
        ClaimTiming::of(&c, at("2026-11-23T09:00:00Z")),
        Err(Missing::Absent)
    );
    let c = claim("demo", "x", None, "Bound", Some("{not json"));
    assert!(matches!(
        ClaimTiming::of(&c, at("2026-11-23T09:00:00Z")),
        Err(Missing::Unreadable(_))
    ));
}

#[test]
fn percentiles_are_nearest_rank_over_the_measured_claims_of_each_class() {
    // hostpath: 1..=10 seconds; nfs: one claim of 2 minutes, one unobserved, one pending, one
    // without an annotation
    let mut claims: Vec<PersistentVolumeClaim> = (1..=10)
        .map(|s| {
            claim(
                "a",
                &format!("h{s:02}"),
                Some("hostpath"),
                "Bound",
                Some(&history_with_bound_after(s)),
            )
        })
        .collect();
    claims.push(claim(
        "b",
        "n1",
        Some("nfs"),
        "Bound",
        Some(&history_with_bound_after(120)),
    ));
    claims.push(claim("b", "n2", Some("nfs"), "Bound", Some(UNOBSERVED)));
    claims.push(claim(
        "b",
        "n3",
        Some("nfs"),
        "Pending",
        Some(r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#),
    ));
    claims.push(claim("b", "n4", Some("nfs"), "Bound", None));
    claims.push(claim("b", "plain", None, "Bound", Some(SEED)));
    let d = Distribution::of(&claims, None);
    assert!(d.has_timing());
    let names: Vec<Option<&str>> = d
        .classes
        .iter()
        .map(|c| c.storage_class.as_deref())
        .collect();
    assert_eq!(names, [Some("hostpath"), Some("nfs"), None]);

    let h = &d.classes[0];
    assert_eq!((h.claims, h.measured), (10, 10));
    assert_eq!(
        (h.p50_seconds, h.p90_seconds, h.p99_seconds, h.max_seconds),
        (Some(5), Some(9), Some(10), Some(10))
    );
    let counts: Vec<usize> = h.bars.iter().map(|b| b.count).collect();
    // ≤1s ≤2s ≤5s ≤10s, then nothing
    assert_eq!(&counts[..5], [1, 1, 3, 5, 0]);
    assert_eq!(counts.iter().sum::<usize>(), 10);

    let n = &d.classes[1];
    assert_eq!(
        (
            n.claims,
            n.measured,
            n.not_observed,
            n.pending,
            n.without_timing
        ),
        (4, 1, 1, 1, 1)
    );
    assert_eq!(
        n.max_seconds,
        Some(120),
        "the unobserved hour is not a measurement"
    );
    let json = serde_json::to_value(&d).expect("json");
    let n2 = json["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .find(|c| c["name"] == "n2")
        .expect("n2 listed");
    assert_eq!(n2["bound"], "notObserved");
    assert_eq!(n2["secondsToBound"], serde_json::Value::Null);
}

#[test]
fn the_distribution_draws_a_bar_per_bucket_scaled_to_the_fullest() {
    let claims: Vec<PersistentVolumeClaim> = [3, 4, 40, 50]
        .iter()
        .map(|s| {
            claim(
                "a",
                &format!("c{s}"),
                Some("fast"),
                "Bound",
                Some(&history_with_bound_after(*s)),
            )
        })
        .chain([claim("a", "p", Some("fast"), "Bound", Some(UNOBSERVED))])
        .collect();
    let text = render::distribution(&Distribution::of(&claims, Some("a")));
    let expected_table = "\
Time from creation to Bound, namespace a (from the pvc-timing annotations)
CLASS   CLAIMS   MEASURED   P50   P90   P99   MAX
fast    5        4          4s    50s   50s   50s
";
    assert!(text.starts_with(expected_table), "{text}");
    let full = "█".repeat(40);
    let lines: Vec<&str> = text.lines().skip(4).collect();
    assert_eq!(lines[0], "fast: 4 claims measured");
    assert_eq!(lines[1], format!("  ≤ 5s   {full} 2"));
    assert_eq!(lines[2], format!("  ≤ 10s  {} 0", " ".repeat(40)));
    assert_eq!(lines[3], format!("  ≤ 30s  {} 0", " ".repeat(40)));
    assert_eq!(lines[4], format!("  ≤ 1m   {full} 2"));
    assert_eq!(
        lines[5],
        "  also: 1 bound while pvc-timing was not watching (not observed, not counted)"
    );
    assert_eq!(lines.len(), 6, "{text}");
}

#[test]
fn percentile_of_nothing_is_none_and_of_one_value_that_value() {
    assert_eq!(percentile(&[], 0.5), None);
    assert_eq!(percentile(&[7], 0.99), Some(7));
    assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
}
