//! The phase-history fold: given what a PVC looks like now and what its `pvc-timing` annotation
//! says, decide the annotation's next value. Pure: no I/O, the clock is a parameter.
//!
//! The value keeps the seed's shape byte for byte (compact JSON, fields in this order):
//! `{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:04Z"}]}`
//!
//! One addition, only where it applies: a phase the webhook did not witness — a claim that was
//! bound while pvc-timing was down, first seen already Bound — is recorded as what is known: the
//! claim was Pending from its creation, and Bound at the latest when first seen, marked
//! `"observed":false` (`{"phase":"Bound","time":"…","observed":false}`). Its time is an upper
//! bound, not a measurement: it is never used as one.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The annotation holding the phase history (seed name, kept verbatim).
pub const ANNOTATION: &str = "pvc-timing";
/// The annotation the controller adds once a claim is Bound (seed name, kept verbatim).
pub const TRIGGER_ANNOTATION: &str = "webhook-trigger";
/// The phase the API server gives every claim at creation (status is empty at CREATE admission).
pub const PENDING: &str = "Pending";
/// The phase whose first time is the figure users come for.
pub const BOUND: &str = "Bound";
/// The claim lost its volume.
pub const LOST: &str = "Lost";
/// Every phase a claim can be in (core/v1 `PersistentVolumeClaimPhase`). Only these are
/// recorded and used as metric labels: anything else in `status.phase` is ignored.
pub const KNOWN_PHASES: &[&str] = &[PENDING, BOUND, LOST];

/// `phase` as one of [`KNOWN_PHASES`], or None.
pub fn known_phase(phase: &str) -> Option<&'static str> {
    KNOWN_PHASES.iter().copied().find(|p| *p == phase)
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseTiming {
    pub phase: String,
    /// RFC 3339; we write UTC seconds (`2026-11-23T08:59:01Z`) and keep older values verbatim.
    pub time: String,
    /// `Some(false)`: not witnessed, `time` is only when it was first seen (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<bool>,
}

impl PhaseTiming {
    /// An entry witnessed at `at`.
    pub fn at(phase: &str, at: DateTime<Utc>) -> Self {
        Self {
            phase: phase.to_owned(),
            time: format_time(at),
            observed: None,
        }
    }

    /// Whether the claim was seen entering this phase (not only found in it).
    pub fn witnessed(&self) -> bool {
        self.observed != Some(false)
    }
}

/// The whole annotation value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PvcTiming {
    pub current_phase: String,
    pub timings: Vec<PhaseTiming>,
}

impl PvcTiming {
    /// A history that starts now in `phase`.
    pub fn start(phase: &str, at: DateTime<Utc>) -> Self {
        Self {
            current_phase: phase.to_owned(),
            timings: vec![PhaseTiming::at(phase, at)],
        }
    }

    /// Parse and check an annotation value; the error says what is wrong in a few words.
    pub fn parse(value: &str) -> Result<Self, String> {
        let timing: Self =
            serde_json::from_str(value).map_err(|e| format!("not a pvc-timing value: {e}"))?;
        timing.check()?;
        Ok(timing)
    }

    /// The annotation text, in the seed's exact shape.
    pub fn render(&self) -> String {
        // Serialising two strings and a list of string pairs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// When the claim first entered `phase`, if the history says so and it was witnessed.
    pub fn first_time_in(&self, phase: &str) -> Option<DateTime<Utc>> {
        self.timings
            .iter()
            .find(|t| t.phase == phase)
            .filter(|t| t.witnessed())
            .and_then(|t| parse_time(&t.time))
    }

    fn check(&self) -> Result<(), String> {
        let Some(last) = self.timings.last() else {
            return Err("timings is empty".to_owned());
        };
        if last.phase != self.current_phase {
            return Err(format!(
                "currentPhase {:?} is not the last recorded phase {:?}",
                self.current_phase, last.phase
            ));
        }
        let mut previous: Option<DateTime<Utc>> = None;
        for entry in &self.timings {
            if entry.phase.is_empty() {
                return Err("an entry has an empty phase".to_owned());
            }
            let Some(at) = parse_time(&entry.time) else {
                return Err(format!("time {:?} is not RFC 3339", entry.time));
            };
            if previous.is_some_and(|p| at < p) {
                return Err(format!("time {:?} goes backwards", entry.time));
            }
            previous = Some(at);
        }
        Ok(())
    }
}

/// RFC 3339, UTC, whole seconds: what the seed writes and what `kubectl` users read.
pub fn format_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Any RFC 3339 time (older values may carry an offset), as UTC.
pub fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `status.phase` as recorded: the API server clears status on create, so empty means Pending.
pub fn normalise_phase(phase: Option<&str>) -> &str {
    match phase {
        None | Some("") => PENDING,
        Some(p) => p,
    }
}

/// Everything the fold looks at, as plain values.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    /// `status.phase` of the object being admitted (already normalised).
    pub phase: &'a str,
    /// The annotation on the object being admitted.
    pub annotation: Option<&'a str>,
    /// The annotation as stored (the old object on UPDATE), used when the incoming one is
    /// missing or unusable: a client that sends a stale or trimmed object must not erase history.
    pub stored: Option<&'a str>,
    /// CREATE: history starts here whatever the object carries.
    pub creating: bool,
    /// `metadata.creationTimestamp`, when known.
    pub created_at: Option<DateTime<Utc>>,
    /// Other sightings of the current phase (the controller's `webhook-trigger` seconds when
    /// the phase is Bound, this replica's own memory). Only those after the previous entry
    /// count: a leftover from an earlier spell in the same phase is ignored.
    pub earlier_sightings: &'a [DateTime<Utc>],
    pub now: DateTime<Utc>,
}

/// Why the incoming annotation was not used as it stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// It could not be used; history starts again from the current phase.
    Restarted { reason: String },
    /// It could not be used (or was missing); the stored value was used instead.
    RestoredFromStored { reason: String },
    /// A new claim arrived carrying a history of its own (a copied manifest); it was replaced.
    ReplacedOnCreate { reason: String },
}

impl Repair {
    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Repair::Restarted { .. } => "restarted",
            Repair::RestoredFromStored { .. } => "restored_from_stored",
            Repair::ReplacedOnCreate { .. } => "replaced_on_create",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Repair::Restarted { reason }
            | Repair::RestoredFromStored { reason }
            | Repair::ReplacedOnCreate { reason } => reason,
        }
    }
}

/// What the fold decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The history to store.
    pub timing: PvcTiming,
    /// Its rendered value.
    pub value: String,
    /// Whether `value` differs from the incoming annotation (i.e. whether to patch).
    pub changed: bool,
    /// The history this request started from (None when it started afresh).
    pub previous: Option<PvcTiming>,
    /// The phase appended by this call, if any.
    pub appended: Option<String>,
    pub repair: Option<Repair>,
}

/// Fold one observation into the history.
pub fn fold(obs: &Observation<'_>) -> Outcome {
    let (base, repair) = if obs.creating {
        base_on_create(obs)
    } else {
        base_on_update(obs)
    };

    let mut appended = None;
    let timing = match &base {
        None => {
            appended = Some(obs.phase.to_owned());
            if obs.creating {
                PvcTiming::start(obs.phase, obs.created_at.unwrap_or(obs.now))
            } else {
                found_in(obs)
            }
        }
        Some(previous) if previous.current_phase != obs.phase => {
            appended = Some(obs.phase.to_owned());
            let floor = previous.timings.last().and_then(|t| parse_time(&t.time));
            let mut next = previous.clone();
            next.current_phase = obs.phase.to_owned();
            next.timings.push(PhaseTiming::at(
                obs.phase,
                earliest(obs.now, obs.earlier_sightings, floor),
            ));
            next
        }
        // A claim being created has no earlier sightings: its history starts at creation, also
        // when the API server hands our own value back on reinvocation.
        Some(previous) if obs.creating => previous.clone(),
        Some(previous) => {
            lower_to_earlier_sighting(previous, obs.earlier_sightings, obs.created_at)
        }
    };

    let value = timing.render();
    let changed = obs.annotation != Some(value.as_str());
    Outcome {
        timing,
        value,
        changed,
        previous: base,
        appended,
        repair,
    }
}

/// The history of a claim first seen after its creation, without a usable one (created while
/// pvc-timing was down, or its history lost): Pending since creation is known (every claim
/// starts so); a later phase it is found in was not witnessed, and is recorded as such at the
/// earliest moment it was seen.
fn found_in(obs: &Observation<'_>) -> PvcTiming {
    let seen = earliest(obs.now, obs.earlier_sightings, obs.created_at);
    if obs.phase == PENDING {
        return PvcTiming::start(PENDING, obs.created_at.unwrap_or(seen));
    }
    let mut timings = Vec::new();
    if let Some(created) = obs.created_at {
        timings.push(PhaseTiming::at(PENDING, created));
    }
    timings.push(PhaseTiming {
        observed: Some(false),
        ..PhaseTiming::at(obs.phase, seen)
    });
    PvcTiming {
        current_phase: obs.phase.to_owned(),
        timings,
    }
}

fn base_on_create(obs: &Observation<'_>) -> (Option<PvcTiming>, Option<Repair>) {
    let Some(raw) = obs.annotation else {
        return (None, None);
    };
    // Reinvocation on CREATE hands us our own value back: keep it. Anything else (a manifest
    // copied from another claim) describes some other claim's life and is replaced.
    match PvcTiming::parse(raw) {
        Ok(timing) if is_own_creation_record(&timing, obs) => (Some(timing), None),
        Ok(_) => (
            None,
            Some(Repair::ReplacedOnCreate {
                reason: "a new claim carried a history recorded before it existed".to_owned(),
            }),
        ),
        Err(reason) => (None, Some(Repair::ReplacedOnCreate { reason })),
    }
}

fn is_own_creation_record(timing: &PvcTiming, obs: &Observation<'_>) -> bool {
    let [only] = timing.timings.as_slice() else {
        return false;
    };
    only.phase == obs.phase
        && match (parse_time(&only.time), obs.created_at) {
            (Some(at), Some(created)) => at >= created,
            (Some(_), None) => true,
            (None, _) => false,
        }
}

fn base_on_update(obs: &Observation<'_>) -> (Option<PvcTiming>, Option<Repair>) {
    let incoming_problem = match obs.annotation.map(PvcTiming::parse) {
        Some(Ok(timing)) => return (Some(timing), None),
        Some(Err(reason)) => Some(reason),
        None => None,
    };
    let stored = obs.stored.and_then(|raw| PvcTiming::parse(raw).ok());
    match (stored, incoming_problem) {
        (Some(stored), Some(reason)) => (Some(stored), Some(Repair::RestoredFromStored { reason })),
        (Some(stored), None) => (
            Some(stored),
            Some(Repair::RestoredFromStored {
                reason: "the update dropped the annotation".to_owned(),
            }),
        ),
        (None, Some(reason)) => (None, Some(Repair::Restarted { reason })),
        // A claim created before the webhook ran: nothing to repair, history starts now.
        (None, None) => (None, None),
    }
}

/// The earliest credible time for a phase first seen `now`: an earlier sighting wins, but
/// never one before the previous entry (the history stays in order), and never before it even
/// when `now` is (a replica whose clock is behind the one that wrote the previous entry).
fn earliest(
    now: DateTime<Utc>,
    sightings: &[DateTime<Utc>],
    floor: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let earliest = sightings
        .iter()
        .copied()
        .filter(|s| floor.is_none_or(|f| *s >= f))
        .fold(now, DateTime::min);
    floor.map_or(earliest, |f| earliest.max(f))
}

/// Same phase as recorded: only an earlier sighting of it may move its time back, never before
/// the previous entry, nor before the claim's creation for the first (as when it was written).
fn lower_to_earlier_sighting(
    previous: &PvcTiming,
    sightings: &[DateTime<Utc>],
    created_at: Option<DateTime<Utc>>,
) -> PvcTiming {
    let mut next = previous.clone();
    let n = next.timings.len();
    let floor = match n.checked_sub(2) {
        Some(i) => parse_time(&next.timings[i].time),
        None => created_at,
    };
    if let Some(last) = next.timings.last_mut()
        && let Some(recorded) = parse_time(&last.time)
    {
        let lowered = earliest(recorded, sightings, floor);
        if lowered < recorded {
            last.time = format_time(lowered);
        }
    }
    next
}

#[cfg(test)]
mod tests;
