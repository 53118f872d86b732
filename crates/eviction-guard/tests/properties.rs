//! Invariants of storm detection (DESIGN §5) over any set of worker nodes, transition times,
//! settings and previous state, checked against a brute-force reading of the rule; and the
//! worker selector parser on any text.
//!
//! `PROPTEST_CASES` raises the budget (`scripts/fuzz` runs 10^6 per target); without it each
//! target runs a small one so the normal test run stays fast.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use eviction_guard::storm::{Mode, NodeState, Protection, Selector, StormConfig, evaluate};
use proptest::prelude::*;

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

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
}

fn node(i: usize) -> impl Strategy<Value = NodeState> {
    (
        any::<bool>(),
        prop::option::of(0i64..2_000),
        prop::option::of(prop::sample::select(vec!["a", "b", "c"])),
        prop::bool::weighted(0.15),
    )
        .prop_map(move |(ready, ago, zone, out_of_service)| NodeState {
            name: format!("node-{i}"),
            ready,
            since: ago.map(|s| now() - chrono::Duration::seconds(s)),
            reason: if ready {
                "KubeletReady"
            } else {
                "NodeStatusUnknown"
            }
            .to_owned(),
            zone: zone.map(str::to_owned),
            out_of_service,
        })
}

fn workers() -> impl Strategy<Value = Vec<NodeState>> {
    (0usize..12).prop_flat_map(|n| (0..n).map(node).collect::<Vec<_>>())
}

fn storm_config() -> impl Strategy<Value = StormConfig> {
    (
        0usize..6,
        prop_oneof![Just(0u64), 1u64..1_500, Just(u64::MAX / 4)],
        prop::option::of(0.0f64..=1.0),
        any::<bool>(),
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::from_secs(u64::MAX / 4))
        ],
    )
        .prop_map(
            |(threshold, window, min_fraction, per_zone, settle)| StormConfig {
                threshold,
                window: Duration::from_secs(window),
                min_fraction,
                per_zone,
                settle,
            },
        )
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Auto), Just(Mode::Disabled), Just(Mode::Forced)]
}

/// The group a node is counted in.
fn group(cfg: &StormConfig, n: &NodeState) -> String {
    if cfg.per_zone {
        n.zone.clone().unwrap_or_default()
    } else {
        String::new()
    }
}

/// DESIGN §5 read literally, by brute force: some `threshold` NotReady nodes of the group became
/// NotReady within `window` of each other (unknown times count as now), and the fraction holds.
fn storm_starts(cfg: &StormConfig, workers: &[NodeState], g: &str) -> bool {
    let members: Vec<&NodeState> = workers.iter().filter(|n| group(cfg, n) == g).collect();
    let sinces: Vec<DateTime<Utc>> = members
        .iter()
        .filter(|n| !n.ready)
        .map(|n| n.since.unwrap_or(now()))
        .collect();
    let threshold = cfg.threshold.max(1);
    let window = chrono::Duration::from_std(cfg.window).unwrap_or(chrono::Duration::MAX);
    let clustered = sinces.iter().any(|start| {
        sinces
            .iter()
            .filter(|s| **s >= *start && **s - *start <= window)
            .count()
            >= threshold
    });
    clustered && fraction_holds(cfg, members.len(), sinces.len())
}

/// Enough NotReady nodes remain for a storm already on to stay on.
fn storm_holds(cfg: &StormConfig, workers: &[NodeState], g: &str) -> bool {
    let members: Vec<&NodeState> = workers.iter().filter(|n| group(cfg, n) == g).collect();
    let notready = members.iter().filter(|n| !n.ready).count();
    notready >= cfg.threshold.max(1) && fraction_holds(cfg, members.len(), notready)
}

fn fraction_holds(cfg: &StormConfig, workers: usize, notready: usize) -> bool {
    cfg.min_fraction
        .is_none_or(|f| notready as f64 >= f * workers as f64)
}

/// A previous evaluation: storms on in some groups (maybe in groups that no longer exist).
fn prev() -> impl Strategy<Value = Protection> {
    (
        mode(),
        any::<bool>(),
        prop::collection::btree_set(prop::sample::select(vec!["", "a", "b", "c", "gone"]), 0..3),
        0i64..5_000,
    )
        .prop_map(|(mode, protecting, storms, ago)| Protection {
            mode,
            protecting,
            storms: storms
                .into_iter()
                .map(|g| (g.to_owned(), now() - chrono::Duration::seconds(ago)))
                .collect(),
            since: Some(now() - chrono::Duration::seconds(ago)),
            ..Protection::default()
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn protection_follows_the_storm_rule(
        cfg in storm_config(),
        mode in mode(),
        workers in workers(),
        prev in prev(),
    ) {
        let out = evaluate(&cfg, mode, &workers, now(), &prev);
        let notready: BTreeSet<String> =
            workers.iter().filter(|n| !n.ready).map(|n| n.name.clone()).collect();
        let candidates: BTreeSet<String> = workers
            .iter()
            .filter(|n| !n.ready && !n.out_of_service)
            .map(|n| n.name.clone())
            .collect();
        prop_assert_eq!(&out.notready, &notready);
        prop_assert_eq!(out.workers, workers.len());
        prop_assert_eq!(out.mode, mode);
        prop_assert!(!out.reason.is_empty());
        // Pods on Ready or out-of-service nodes are never protected.
        prop_assert!(out.protected.is_subset(&candidates), "protected {:?}", out.protected);

        // A group is in storm iff it was and still holds, or a storm starts in it now; a storm
        // that no longer holds ends only once that has lasted the settle period (here either
        // none, or longer than any test).
        let groups: BTreeSet<String> = workers.iter().map(|n| group(&cfg, n)).collect();
        let expected_storms: BTreeSet<String> = groups
            .iter()
            .filter(|g| {
                let was = prev.storms.contains_key(*g);
                if storm_holds(&cfg, &workers, g) {
                    was || storm_starts(&cfg, &workers, g)
                } else {
                    was && !cfg.settle.is_zero()
                }
            })
            .cloned()
            .collect();
        prop_assert_eq!(out.storms.keys().cloned().collect::<BTreeSet<_>>(), expected_storms.clone());
        for (g, began) in &out.storms {
            // A storm keeps the time it began.
            if let Some(before) = prev.storms.get(g) {
                prop_assert_eq!(began, before);
            } else {
                prop_assert!(*began <= now());
            }
        }

        match mode {
            Mode::Disabled => {
                prop_assert!(!out.protecting);
                prop_assert!(out.protected.is_empty());
            }
            Mode::Forced => {
                prop_assert!(out.protecting);
                prop_assert_eq!(&out.protected, &candidates);
            }
            Mode::Auto => {
                prop_assert_eq!(out.protecting, !expected_storms.is_empty());
                let in_storm: BTreeSet<String> = workers
                    .iter()
                    .filter(|n| candidates.contains(&n.name))
                    .filter(|n| expected_storms.contains(&group(&cfg, n)))
                    .map(|n| n.name.clone())
                    .collect();
                prop_assert_eq!(&out.protected, &in_storm);
                // A single failed node is ordinary: never a storm with a threshold above one
                // (unless one is ending).
                if notready.len() < cfg.threshold.max(1) && prev.storms.is_empty() {
                    prop_assert!(!out.protecting);
                }
            }
        }
    }

    #[test]
    fn evaluating_again_with_the_same_nodes_changes_nothing(
        cfg in storm_config(),
        mode in mode(),
        workers in workers(),
        prev in prev(),
    ) {
        let once = evaluate(&cfg, mode, &workers, now(), &prev);
        let twice = evaluate(&cfg, mode, &workers, now(), &once);
        prop_assert_eq!(twice, once);
    }

    #[test]
    fn a_guard_restarted_mid_outage_reaches_the_same_protection(
        cfg in storm_config(),
        workers in workers(),
        later in 0i64..600,
    ) {
        // Seen from the start, then re-evaluated later with the same nodes, versus a fresh guard
        // evaluating only at the later time: the storm rule reads the nodes' own transition times.
        let first = evaluate(&cfg, Mode::Auto, &workers, now(), &Protection::default());
        let at = now() + chrono::Duration::seconds(later);
        let continued = evaluate(&cfg, Mode::Auto, &workers, at, &first);
        let fresh = evaluate(&cfg, Mode::Auto, &workers, at, &Protection::default());
        let unknown_times = workers.iter().any(|n| !n.ready && n.since.is_none());
        if !unknown_times {
            prop_assert_eq!(continued.protecting, fresh.protecting);
            prop_assert_eq!(continued.protected, fresh.protected);
            prop_assert_eq!(continued.storms, fresh.storms);
        }
    }

    #[test]
    fn any_selector_text_parses_or_is_refused_never_a_panic(text in any::<String>()) {
        if let Ok(selector) = text.parse::<Selector>() {
            let _ = selector.matches(&BTreeMap::new());
        }
    }

    #[test]
    fn worker_selectors_match_as_written(
        reqs in prop::collection::vec(
            (0u8..4, "[a-z]([a-z0-9./-]{0,8}[a-z0-9])?", "[a-z0-9]{0,4}"),
            0..4,
        ),
        labels in prop::collection::btree_map(
            prop_oneof!["[a-z]([a-z0-9./-]{0,8}[a-z0-9])?", "[a-z]{1,2}"],
            "[a-z0-9]{0,4}",
            0..5,
        ),
    ) {
        let text = reqs
            .iter()
            .map(|(op, k, v)| match op {
                0 => k.clone(),
                1 => format!("!{k}"),
                2 => format!("{k}={v}"),
                _ => format!("{k}!={v}"),
            })
            .collect::<Vec<_>>()
            .join(",");
        let selector: Selector = text
            .parse()
            .map_err(|e| TestCaseError::fail(format!("{text:?} refused: {e}")))?;
        let expected = reqs.iter().all(|(op, k, v)| match op {
            0 => labels.contains_key(k),
            1 => !labels.contains_key(k),
            2 => labels.get(k) == Some(v),
            _ => labels.get(k) != Some(v),
        });
        prop_assert_eq!(selector.matches(&labels), expected, "{:?} on {:?}", text, labels);
    }
}
