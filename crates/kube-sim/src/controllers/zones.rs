//! How fast the node lifecycle controller taints NotReady nodes, per zone
//! (`topology.kubernetes.io/zone`), as Kubernetes' `pkg/controller/nodelifecycle` decides it:
//! one node per interval in a healthy zone (`--node-eviction-rate`, 0.1 node/s), none in a zone
//! in partial disruption (more than two and at least 55 % of its nodes NotReady,
//! `--unhealthy-zone-threshold`) unless the zone is large (then `--secondary-node-eviction-rate`),
//! and none at all when every zone has no Ready node left (the controller then also takes the
//! taints off). Pure.

use std::time::Duration;

/// `--unhealthy-zone-threshold`.
pub const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;
/// `--large-cluster-size-threshold`: zones up to this size stop tainting in partial disruption.
pub const LARGE_CLUSTER_SIZE: usize = 50;
/// `--node-eviction-rate` / `--secondary-node-eviction-rate` (0.1 vs 0.01 node/s).
pub const SECONDARY_RATE_FACTOR: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// `ComputeZoneState`.
pub fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    let total = ready + not_ready;
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / total as f64 >= UNHEALTHY_ZONE_THRESHOLD {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// The pause between two taints in a zone, `None` when the zone taints nothing now.
/// `interval` is the healthy rate's (10 s in Kubernetes, shorter in the simulator).
pub fn taint_interval(
    state: ZoneState,
    zone_size: usize,
    all_fully_disrupted: bool,
    interval: Duration,
) -> Option<Duration> {
    if all_fully_disrupted {
        return None;
    }
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => Some(interval),
        ZoneState::PartialDisruption if zone_size > LARGE_CLUSTER_SIZE => {
            Some(interval * SECONDARY_RATE_FACTOR)
        }
        ZoneState::PartialDisruption => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: Duration = Duration::from_secs(10);

    #[test]
    fn zone_states_follow_the_ready_and_not_ready_counts() {
        assert_eq!(zone_state(5, 0), ZoneState::Normal);
        assert_eq!(zone_state(0, 2), ZoneState::FullDisruption);
        assert_eq!(
            zone_state(1, 2),
            ZoneState::Normal,
            "two NotReady are never partial"
        );
        assert_eq!(
            zone_state(2, 3),
            ZoneState::PartialDisruption,
            "3 of 5 = 60 %"
        );
        assert_eq!(zone_state(3, 3), ZoneState::Normal, "3 of 6 = 50 %");
    }

    #[test]
    fn small_zones_in_partial_disruption_and_a_fully_disrupted_cluster_taint_nothing() {
        assert_eq!(taint_interval(ZoneState::Normal, 5, false, TEN), Some(TEN));
        assert_eq!(
            taint_interval(ZoneState::FullDisruption, 2, false, TEN),
            Some(TEN)
        );
        assert_eq!(
            taint_interval(ZoneState::PartialDisruption, 5, false, TEN),
            None
        );
        assert_eq!(
            taint_interval(ZoneState::PartialDisruption, 60, false, TEN),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            taint_interval(ZoneState::FullDisruption, 2, true, TEN),
            None
        );
    }
}
