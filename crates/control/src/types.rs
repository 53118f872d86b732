//! Validated conversions between the plain model types ([`crate::model`]) and the generated
//! protobuf messages.

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use crate::model::{ConvertError, InterceptionState, Mode, NodeHealth, NodeHealthSnapshot};
use crate::pb;

impl From<Mode> for pb::Mode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Auto => pb::Mode::Auto,
            Mode::Disabled => pb::Mode::Disabled,
            Mode::Forced => pb::Mode::Forced,
        }
    }
}

impl TryFrom<i32> for Mode {
    type Error = ConvertError;

    /// Decodes the wire value of a `Mode` field; `MODE_UNSPECIFIED` and unknown values are errors.
    fn try_from(value: i32) -> Result<Self, Self::Error> {
        match pb::Mode::try_from(value) {
            Ok(pb::Mode::Auto) => Ok(Mode::Auto),
            Ok(pb::Mode::Disabled) => Ok(Mode::Disabled),
            Ok(pb::Mode::Forced) => Ok(Mode::Forced),
            Ok(pb::Mode::Unspecified) => Err(ConvertError::UnspecifiedMode),
            Err(_) => Err(ConvertError::UnknownMode(value)),
        }
    }
}

/// The state a GetStatus, SetMode or WatchStatus response carries.
pub(crate) fn state_from(
    status: Option<pb::InterceptionStatus>,
) -> Result<InterceptionState, ConvertError> {
    InterceptionState::try_from(status.ok_or(ConvertError::MissingStatus)?)
}

pub(crate) fn timestamp_to_pb(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        // chrono holds a leap second as nanos 1e9..2e9, which a protobuf Timestamp cannot
        // carry (receivers refuse nanos past 999,999,999): send the second's last nanosecond.
        nanos: i32::try_from(t.timestamp_subsec_nanos().min(999_999_999)).unwrap_or(999_999_999),
    })
}

fn timestamp_from_pb(
    field: &'static str,
    t: Option<prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, ConvertError> {
    let Some(t) = t else { return Ok(None) };
    let nanos = u32::try_from(t.nanos).map_err(|_| ConvertError::InvalidTimestamp(field))?;
    if nanos >= 1_000_000_000 {
        return Err(ConvertError::InvalidTimestamp(field));
    }
    DateTime::from_timestamp(t.seconds, nanos)
        .map(Some)
        .ok_or(ConvertError::InvalidTimestamp(field))
}

fn duration_from_pb(
    field: &'static str,
    d: Option<prost_types::Duration>,
) -> Result<Duration, ConvertError> {
    let Some(d) = d else {
        return Ok(Duration::ZERO);
    };
    Duration::try_from(d).map_err(|_| ConvertError::InvalidDuration(field))
}

impl From<&InterceptionState> for pb::InterceptionStatus {
    fn from(s: &InterceptionState) -> Self {
        pb::InterceptionStatus {
            mode: pb::Mode::from(s.mode).into(),
            protecting: s.protecting,
            reason: s.reason.clone(),
            since: timestamp_to_pb(s.since),
            threshold: s.threshold,
            // Only durations beyond ~292 billion years fail; those are sent as unset.
            window: prost_types::Duration::try_from(s.window).ok(),
            notready_nodes: s.notready_nodes.clone(),
            protected_nodes: s.protected_nodes.clone(),
            mode_changed_by: s.mode_changed_by.clone(),
            mode_reason: s.mode_reason.clone(),
            mode_changed_at: timestamp_to_pb(s.mode_changed_at),
            synced: s.synced,
        }
    }
}

impl TryFrom<pb::InterceptionStatus> for InterceptionState {
    type Error = ConvertError;

    fn try_from(s: pb::InterceptionStatus) -> Result<Self, Self::Error> {
        Ok(InterceptionState {
            mode: Mode::try_from(s.mode)?,
            protecting: s.protecting,
            reason: s.reason,
            since: timestamp_from_pb("since", s.since)?,
            threshold: s.threshold,
            window: duration_from_pb("window", s.window)?,
            notready_nodes: s.notready_nodes,
            protected_nodes: s.protected_nodes,
            mode_changed_by: s.mode_changed_by,
            mode_reason: s.mode_reason,
            mode_changed_at: timestamp_from_pb("mode_changed_at", s.mode_changed_at)?,
            synced: s.synced,
        })
    }
}

impl From<&NodeHealth> for pb::NodeHealth {
    fn from(n: &NodeHealth) -> Self {
        pb::NodeHealth {
            name: n.name.clone(),
            ready: n.ready,
            since: timestamp_to_pb(n.since),
            reason: n.reason.clone(),
            zone: n.zone.clone(),
        }
    }
}

impl TryFrom<pb::NodeHealth> for NodeHealth {
    type Error = ConvertError;

    fn try_from(n: pb::NodeHealth) -> Result<Self, Self::Error> {
        Ok(NodeHealth {
            name: n.name,
            ready: n.ready,
            since: timestamp_from_pb("since", n.since)?,
            reason: n.reason,
            zone: n.zone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_state() -> InterceptionState {
        InterceptionState {
            mode: Mode::Forced,
            protecting: true,
            reason: "3 of 10 worker nodes NotReady within 5m".into(),
            since: DateTime::from_timestamp(1_700_000_000, 123_456_789),
            threshold: 3,
            window: Duration::from_secs(300),
            notready_nodes: vec!["node-1".into(), "node-2".into(), "node-7".into()],
            protected_nodes: vec!["node-1".into(), "node-2".into()],
            mode_changed_by: "system:serviceaccount:ops:oncall".into(),
            mode_reason: "rack 4 maintenance".into(),
            mode_changed_at: DateTime::from_timestamp(1_700_000_100, 0),
            synced: true,
        }
    }

    #[test]
    fn interception_state_survives_a_round_trip_through_the_wire_message() {
        let state = mk_state();
        let wire = pb::InterceptionStatus::from(&state);
        assert_eq!(wire.mode, pb::Mode::Forced as i32);
        assert_eq!(
            wire.window,
            Some(prost_types::Duration {
                seconds: 300,
                nanos: 0
            })
        );
        assert_eq!(InterceptionState::try_from(wire), Ok(state));
    }

    #[test]
    fn unspecified_mode_is_refused_with_the_accepted_values_in_the_message() {
        let err = Mode::try_from(pb::Mode::Unspecified as i32).unwrap_err();
        assert_eq!(err, ConvertError::UnspecifiedMode);
        assert_eq!(
            err.to_string(),
            "mode is required: one of MODE_AUTO, MODE_DISABLED, MODE_FORCED"
        );
        assert_eq!(Mode::try_from(42), Err(ConvertError::UnknownMode(42)));
    }

    #[test]
    fn status_with_unspecified_mode_is_not_accepted_as_a_state() {
        let wire = pb::InterceptionStatus::default();
        assert_eq!(
            InterceptionState::try_from(wire),
            Err(ConvertError::UnspecifiedMode)
        );
    }

    #[test]
    fn negative_window_and_bad_timestamps_are_refused() {
        let mut wire = pb::InterceptionStatus::from(&mk_state());
        wire.window = Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        });
        assert_eq!(
            InterceptionState::try_from(wire),
            Err(ConvertError::InvalidDuration("window"))
        );

        let mut wire = pb::InterceptionStatus::from(&mk_state());
        wire.since = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        });
        assert_eq!(
            InterceptionState::try_from(wire),
            Err(ConvertError::InvalidTimestamp("since"))
        );

        let node = pb::NodeHealth {
            name: "n".into(),
            since: Some(prost_types::Timestamp {
                seconds: i64::MAX,
                nanos: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            NodeHealth::try_from(node),
            Err(ConvertError::InvalidTimestamp("since"))
        );
    }

    #[test]
    fn mode_names_parse_with_or_without_prefix_in_any_case() {
        assert_eq!("forced".parse::<Mode>(), Ok(Mode::Forced));
        assert_eq!("MODE_DISABLED".parse::<Mode>(), Ok(Mode::Disabled));
        assert_eq!(" Auto ".parse::<Mode>(), Ok(Mode::Auto));
        assert_eq!(
            "off".parse::<Mode>().unwrap_err().to_string(),
            "unknown mode \"off\": expected auto, disabled or forced"
        );
        assert_eq!(Mode::Forced.to_string(), "forced");
    }

    #[test]
    fn node_health_survives_a_round_trip_through_the_wire_message() {
        let node = NodeHealth {
            name: "node-3".into(),
            ready: false,
            since: DateTime::from_timestamp(1_700_000_000, 0),
            reason: "NodeStatusUnknown".into(),
            zone: "eu-west-1b".into(),
        };
        let wire = pb::NodeHealth::from(&node);
        assert_eq!(NodeHealth::try_from(wire), Ok(node));
    }
}
