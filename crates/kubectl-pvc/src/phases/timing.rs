//! How long Provision and Bind took, from the `pvc-timing` annotation.

use super::*;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimingAnnotation {
    timings: Vec<TimingEntry>,
}

#[derive(Deserialize)]
struct TimingEntry {
    phase: String,
    time: String,
    /// `false` for a phase pvc-timing found the claim in without seeing it enter (its time is
    /// only when it was first seen): not a measurement.
    #[serde(default)]
    observed: Option<bool>,
}

/// Durations from the `pvc-timing` annotation; none when it is absent or unreadable.
#[derive(Default)]
pub(super) struct Timing {
    pub(super) provision: Option<Took>,
    pub(super) bind: Option<Took>,
}

impl Timing {
    pub(super) fn of(claim: &PersistentVolumeClaim, set: &ObjectSet) -> Timing {
        let Some(raw) = annotation(&claim.metadata, TIMING_ANNOTATION) else {
            return Timing::default();
        };
        let Ok(parsed) = serde_json::from_str::<TimingAnnotation>(raw) else {
            return Timing::default();
        };
        let first = |phase: &str| {
            parsed
                .timings
                .iter()
                .find(|t| t.phase == phase)
                .filter(|t| t.observed != Some(false))
                .and_then(|t| t.time.parse::<Timestamp>().ok())
        };
        let (Some(created), bound) = (first("Pending"), first("Bound")) else {
            return Timing::default();
        };
        let bound_unobserved = parsed
            .timings
            .iter()
            .any(|t| t.phase == "Bound" && t.observed == Some(false));
        if bound_unobserved {
            // bound while pvc-timing was away: how long it took is not known
            return Timing::default();
        }
        let span = |from: Timestamp, to: Timestamp, finished: bool| {
            Some(Took {
                seconds: to.as_second().saturating_sub(from.as_second()).max(0),
                finished,
            })
        };
        // A volume made after the claim was provisioned for it; an older one was not.
        let provisioned = match &set.volume {
            Some(Lookup::Found(pv)) => pv.metadata.creation_timestamp.as_ref().map(|t| t.0),
            _ => None,
        }
        .filter(|t| *t >= created);
        let provision = match (provisioned, bound) {
            (Some(at), _) => span(created, at, true),
            (None, None) if set.volume.is_none() => span(created, set.now, false),
            _ => None,
        };
        let bind_from = provisioned.unwrap_or(created);
        let bind = match bound {
            Some(at) => span(bind_from, at, true),
            // Binding waits on provisioning; count it only once there is a volume.
            None if matches!(set.volume, Some(Lookup::Found(_))) => span(bind_from, set.now, false),
            None => None,
        };
        Timing { provision, bind }
    }
}
