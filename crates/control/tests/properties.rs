//! Properties of the control API's wire conversions: every state the guard can hold survives
//! model -> protobuf -> bytes -> protobuf -> model unchanged, any bytes a peer sends decode and
//! convert or are refused without a panic, and node health streams (snapshot, then diffs)
//! rebuild exactly the guard's view.
//!
//! `PROPTEST_CASES` raises the budget (`scripts/fuzz` runs 10^6 per target); without it each
//! target runs a small one so the normal test run stays fast.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_control::nodes::{apply, diff};
use ballast_control::{InterceptionState, Mode, NodeHealth, pb};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use prost::Message;

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

/// Any instant chrono can hold, including leap seconds (`nanos` from 1e9 up to 2e9 on a
/// second ending in :59).
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    prop_oneof![
        4 => (0i64..4_102_444_800, 0u32..1_000_000_000),
        2 => (min..=max, 0u32..1_000_000_000),
        1 => (0i64..4_102_444_800, 1_000_000_000u32..2_000_000_000)
            .prop_map(|(s, n)| (s - s.rem_euclid(60) + 59, n)),
    ]
    .prop_filter_map("not an instant chrono holds", |(s, n)| {
        DateTime::from_timestamp(s, n)
    })
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Auto), Just(Mode::Disabled), Just(Mode::Forced)]
}

fn state() -> impl Strategy<Value = InterceptionState> {
    (
        (
            mode(),
            any::<bool>(),
            any::<String>(),
            prop::option::of(instant()),
        ),
        (any::<u32>(), any::<u64>(), 0u32..1_000_000_000),
        prop::collection::vec(any::<String>(), 0..5),
        (
            any::<String>(),
            any::<String>(),
            prop::option::of(instant()),
        ),
        any::<bool>(),
    )
        .prop_map(
            |(
                (mode, protecting, reason, since),
                (threshold, secs, nanos),
                notready_nodes,
                (mode_changed_by, mode_reason, mode_changed_at),
                synced,
            )| InterceptionState {
                mode,
                protecting,
                reason,
                since,
                threshold,
                window: Duration::new(secs, nanos),
                notready_nodes: notready_nodes.clone(),
                protected_nodes: notready_nodes,
                mode_changed_by,
                mode_reason,
                mode_changed_at,
                synced,
            },
        )
}

fn node() -> impl Strategy<Value = NodeHealth> {
    (
        "[a-z0-9-]{1,6}",
        any::<bool>(),
        prop::option::of(instant()),
        prop_oneof![
            Just("KubeletReady".to_owned()),
            Just("NodeStatusUnknown".to_owned()),
            any::<String>()
        ],
        prop_oneof![Just(String::new()), "zone-[a-c]".prop_map(String::from)],
    )
        .prop_map(|(name, ready, since, reason, zone)| NodeHealth {
            name,
            ready,
            since,
            reason,
            zone,
        })
}

fn nodes() -> impl Strategy<Value = BTreeMap<String, NodeHealth>> {
    prop::collection::vec(node(), 0..8)
        .prop_map(|v| v.into_iter().map(|n| (n.name.clone(), n)).collect())
}

/// What a receiver makes of `t` after the wire: the same instant, a leap second read as the
/// last nanosecond of its second (protobuf Timestamps cannot carry one).
fn on_the_wire(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(|t| {
        use chrono::Timelike;
        if t.nanosecond() >= 1_000_000_000 {
            t.with_nanosecond(999_999_999).unwrap_or(t)
        } else {
            t
        }
    })
}

/// The longest window the wire carries (an i64 of seconds); longer ones are sent as unset.
const MAX_WIRE_SECONDS: u64 = i64::MAX as u64;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn interception_state_survives_the_wire(state in state()) {
        let bytes = pb::InterceptionStatus::from(&state).encode_to_vec();
        let wire = pb::InterceptionStatus::decode(bytes.as_slice()).unwrap();
        let back = InterceptionState::try_from(wire)
            .map_err(|e| TestCaseError::fail(format!("the receiver refused what we sent: {e}")))?;
        let expected = InterceptionState {
            since: on_the_wire(state.since),
            mode_changed_at: on_the_wire(state.mode_changed_at),
            window: if state.window.as_secs() <= MAX_WIRE_SECONDS {
                state.window
            } else {
                Duration::ZERO
            },
            ..state
        };
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn node_health_survives_the_wire(node in node()) {
        let bytes = pb::NodeHealth::from(&node).encode_to_vec();
        let back = NodeHealth::try_from(pb::NodeHealth::decode(bytes.as_slice()).unwrap())
            .map_err(|e| TestCaseError::fail(format!("the receiver refused what we sent: {e}")))?;
        prop_assert_eq!(back, NodeHealth { since: on_the_wire(node.since), ..node });
    }

    #[test]
    fn any_bytes_from_a_peer_decode_and_convert_or_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        if let Ok(wire) = pb::InterceptionStatus::decode(bytes.as_slice())
            && let Ok(state) = InterceptionState::try_from(wire.clone())
        {
            // What was accepted is sent on unchanged by the next hop.
            let again = pb::InterceptionStatus::from(&state);
            prop_assert_eq!(again.mode, wire.mode);
            prop_assert_eq!(again.since, wire.since);
            prop_assert_eq!(again.reason, wire.reason);
        }
        if let Ok(event) = pb::WatchNodeHealthResponse::decode(bytes.as_slice()) {
            let mut view = None;
            let _ = apply(&mut view, event);
        }
        let _ = pb::SetModeRequest::decode(bytes.as_slice()).map(|r| Mode::try_from(r.mode));
    }

    #[test]
    fn any_wire_message_converts_or_is_refused(
        mode in any::<i32>(),
        since in prop::option::of((any::<i64>(), any::<i32>())),
        window in prop::option::of((any::<i64>(), any::<i32>())),
    ) {
        let wire = pb::InterceptionStatus {
            mode,
            since: since.map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
            window: window.map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
            ..Default::default()
        };
        if let Ok(state) = InterceptionState::try_from(wire.clone()) {
            prop_assert_eq!(pb::InterceptionStatus::from(&state).since, wire.since);
        }
    }

    #[test]
    fn a_snapshot_then_diffs_rebuild_the_guards_view(
        first in nodes(),
        steps in prop::collection::vec(nodes(), 0..4),
    ) {
        let wire_view = |m: &BTreeMap<String, NodeHealth>| -> BTreeMap<String, NodeHealth> {
            m.iter()
                .map(|(k, n)| (k.clone(), NodeHealth { since: on_the_wire(n.since), ..n.clone() }))
                .collect()
        };
        let mut view = None;
        apply(&mut view, pb::WatchNodeHealthResponse {
            snapshot: true,
            nodes: first.values().map(pb::NodeHealth::from).collect(),
            removed: Vec::new(),
        }).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(view.as_ref(), Some(&wire_view(&first)));
        let mut prev = first;
        for next in steps {
            let change = diff(&prev, &next);
            prop_assert_eq!(change.is_empty(), prev == next);
            apply(&mut view, pb::WatchNodeHealthResponse {
                snapshot: false,
                nodes: change.changed.iter().map(pb::NodeHealth::from).collect(),
                removed: change.removed.clone(),
            }).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(view.as_ref(), Some(&wire_view(&next)));
            prev = next;
        }
    }
}

/// chrono can hold a leap second; the wire cannot. What the guard sends must still be accepted.
#[test]
fn a_leap_second_is_sent_as_the_last_nanosecond_of_its_second() {
    let leap = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).expect("a leap second");
    let wire = pb::NodeHealth::from(&NodeHealth {
        name: "node-1".into(),
        since: Some(leap),
        ..NodeHealth::default()
    });
    assert_eq!(
        wire.since,
        Some(prost_types::Timestamp {
            seconds: 1_483_228_799,
            nanos: 999_999_999
        })
    );
    let back = NodeHealth::try_from(wire).expect("accepted by the receiver");
    assert_eq!(
        back.since,
        DateTime::from_timestamp(1_483_228_799, 999_999_999)
    );
}
