//! `kubectl pvc timing`: what the `pvc-timing` annotations say, for one claim (its phase
//! history as a timeline) or for many (time from creation to `Bound` per storage class).
//!
//! Pure: the claims and the clock come in, the figures go out; `fetch` reads the claims and
//! `render` draws the tables and bars.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::phases::TIMING_ANNOTATION;

/// The phase whose first time is the figure people ask for.
const BOUND: &str = "Bound";
/// Every claim starts in it, at its creation.
const PENDING: &str = "Pending";
/// Upper bounds (seconds) of the terminal histogram's bars: the pvc-timing histogram's own
/// buckets from one second up, so the bars read like `pvc_time_to_bound_seconds_bucket`.
pub const BUCKETS: &[i64] = &[1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];
/// Percentiles shown per storage class.
const QUANTILES: [(&str, f64); 3] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Annotation {
    timings: Vec<AnnotationEntry>,
}

#[derive(Deserialize)]
struct AnnotationEntry {
    phase: String,
    time: String,
    #[serde(default)]
    observed: Option<bool>,
}

/// One entry of the history: a phase, and when the claim entered it if pvc-timing saw it do so.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    phase: String,
    time: Timestamp,
    /// `false`: pvc-timing found the claim already in this phase; `time` is only when it was
    /// first seen, never a measurement.
    observed: bool,
}

/// Reads the annotation; the error says in a few words why it is not usable.
fn parse(raw: &str) -> Result<Vec<Entry>, String> {
    let parsed: Annotation =
        serde_json::from_str(raw).map_err(|e| format!("not a pvc-timing value: {e}"))?;
    if parsed.timings.is_empty() {
        return Err("its history is empty".to_owned());
    }
    parsed
        .timings
        .into_iter()
        .map(|t| {
            let time = t
                .time
                .parse::<Timestamp>()
                .map_err(|_| format!("time {:?} is not RFC 3339", t.time))?;
            Ok(Entry {
                phase: t.phase,
                time,
                observed: t.observed != Some(false),
            })
        })
        .collect()
}

/// Seconds from creation (the first `Pending`) to the first `Bound`, when both were witnessed.
fn time_to_bound(entries: &[Entry]) -> Bound {
    let first = |phase: &str| entries.iter().find(|e| e.phase == phase);
    match (first(PENDING), first(BOUND)) {
        (_, None) => Bound::NotYet,
        (Some(p), Some(b)) if p.observed && b.observed => {
            Bound::Measured((b.time.as_second() - p.time.as_second()).max(0))
        }
        _ => Bound::NotObserved,
    }
}

/// What the history says of the claim's binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Measured(i64),
    /// Bound while pvc-timing was not watching: how long it took is not known.
    NotObserved,
    NotYet,
}

impl Bound {
    fn state(self) -> &'static str {
        match self {
            Bound::Measured(_) => "observed",
            Bound::NotObserved => "notObserved",
            Bound::NotYet => "notBound",
        }
    }
}

/// One row of a claim's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineRow {
    pub phase: String,
    /// When the claim entered the phase (RFC 3339); absent when not observed.
    pub entered: Option<String>,
    /// For a phase not observed: when pvc-timing first saw the claim in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    pub observed: bool,
    /// Seconds from the claim's creation to entering the phase.
    pub after_creation_seconds: Option<i64>,
    /// Seconds spent in the phase: until the next phase, or until now for the current one.
    pub lasted_seconds: Option<i64>,
    /// The phase the claim is in now (its `lasted` is "so far").
    pub current: bool,
}

/// `kubectl pvc timing NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimTiming {
    pub namespace: String,
    pub name: String,
    pub storage_class: Option<String>,
    /// The claim's phase now, from its status.
    pub phase: String,
    pub timeline: Vec<TimelineRow>,
    /// `observed`, `notObserved` (bound while pvc-timing was not watching) or `notBound`.
    pub bound: &'static str,
    pub seconds_to_bound: Option<i64>,
    /// Seconds since creation, for drawing the timeline to scale.
    pub age_seconds: i64,
}

/// Why a claim has no usable history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// No `pvc-timing` annotation at all.
    Absent,
    /// An annotation that does not parse; the text says why.
    Unreadable(String),
}

fn key(claim: &PersistentVolumeClaim) -> (String, String) {
    (
        claim.metadata.namespace.clone().unwrap_or_default(),
        claim.metadata.name.clone().unwrap_or_default(),
    )
}

fn class_of(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .filter(|c| !c.is_empty())
}

fn phase_of(claim: &PersistentVolumeClaim) -> String {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| PENDING.to_owned())
}

fn history(claim: &PersistentVolumeClaim) -> Result<Vec<Entry>, Missing> {
    let raw = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TIMING_ANNOTATION))
        .ok_or(Missing::Absent)?;
    parse(raw).map_err(Missing::Unreadable)
}

impl ClaimTiming {
    /// The timeline of one claim at `now`.
    pub fn of(claim: &PersistentVolumeClaim, now: Timestamp) -> Result<ClaimTiming, Missing> {
        let entries = history(claim)?;
        let (namespace, name) = key(claim);
        // pvc-timing dates the first Pending at the claim's creation; the object's own
        // timestamp serves for a history that does not start so.
        let created = entries
            .first()
            .filter(|e| e.phase == PENDING && e.observed)
            .map(|e| e.time)
            .or_else(|| claim.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(now);
        let mut timeline = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let next = entries.get(i + 1);
            let current = next.is_none();
            let lasted = match next {
                _ if !e.observed => None,
                Some(n) if n.observed => Some(n.time.as_second() - e.time.as_second()),
                Some(_) => None,
                None => Some(now.as_second() - e.time.as_second()),
            };
            timeline.push(TimelineRow {
                phase: e.phase.clone(),
                entered: e.observed.then(|| e.time.to_string()),
                first_seen: (!e.observed).then(|| e.time.to_string()),
                observed: e.observed,
                after_creation_seconds: e
                    .observed
                    .then(|| (e.time.as_second() - created.as_second()).max(0)),
                lasted_seconds: lasted.map(|s| s.max(0)),
                current,
            });
        }
        let bound = time_to_bound(&entries);
        Ok(ClaimTiming {
            namespace,
            name,
            storage_class: class_of(claim),
            phase: phase_of(claim),
            timeline,
            bound: bound.state(),
            seconds_to_bound: match bound {
                Bound::Measured(s) => Some(s),
                _ => None,
            },
            age_seconds: (now.as_second() - created.as_second()).max(0),
        })
    }
}

/// One claim in a distribution, for scripts (`-o json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimFigure {
    pub namespace: String,
    pub name: String,
    pub storage_class: Option<String>,
    pub phase: String,
    /// `observed`, `notObserved`, `notBound`, or `noTiming` (no usable annotation).
    pub bound: &'static str,
    pub seconds_to_bound: Option<i64>,
}

/// Claims of one bar: those whose time to `Bound` is above the previous bound and at most
/// `le_seconds` (no `le_seconds`: above the last bound).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bar {
    pub le_seconds: Option<i64>,
    pub count: usize,
}

/// Time to `Bound` of one storage class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassFigures {
    /// The claims' `storageClassName`; absent for claims that name none.
    pub storage_class: Option<String>,
    pub claims: usize,
    /// Claims whose binding pvc-timing witnessed: the figures below are theirs.
    pub measured: usize,
    pub pending: usize,
    /// Bound while pvc-timing was not watching: never counted as a measurement.
    pub not_observed: usize,
    /// No usable `pvc-timing` annotation.
    pub without_timing: usize,
    /// Nearest-rank percentiles and the maximum, in seconds.
    pub p50_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
    pub p99_seconds: Option<i64>,
    pub max_seconds: Option<i64>,
    pub bars: Vec<Bar>,
}

/// `kubectl pvc timing` over a namespace or the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Distribution {
    /// The namespace read, absent for all namespaces.
    pub namespace: Option<String>,
    pub classes: Vec<ClassFigures>,
    pub claims: Vec<ClaimFigure>,
}

/// The `q` nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn bars(sorted: &[i64]) -> Vec<Bar> {
    let mut bars: Vec<Bar> = BUCKETS
        .iter()
        .map(|le| Bar {
            le_seconds: Some(*le),
            count: 0,
        })
        .chain(std::iter::once(Bar {
            le_seconds: None,
            count: 0,
        }))
        .collect();
    for v in sorted {
        let i = BUCKETS
            .iter()
            .position(|le| v <= le)
            .unwrap_or(BUCKETS.len());
        bars[i].count += 1;
    }
    bars
}

impl Distribution {
    /// Figures per storage class (sorted by name, claims without a class last) of `claims`.
    pub fn of(claims: &[PersistentVolumeClaim], namespace: Option<&str>) -> Distribution {
        let mut figures: Vec<ClaimFigure> = claims
            .iter()
            .map(|c| {
                let (ns, name) = key(c);
                let bound = history(c).ok().map(|h| time_to_bound(&h));
                ClaimFigure {
                    namespace: ns,
                    name,
                    storage_class: class_of(c),
                    phase: phase_of(c),
                    bound: bound.map_or("noTiming", Bound::state),
                    seconds_to_bound: match bound {
                        Some(Bound::Measured(s)) => Some(s),
                        _ => None,
                    },
                }
            })
            .collect();
        figures.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut names: Vec<Option<String>> =
            figures.iter().map(|f| f.storage_class.clone()).collect();
        // Named classes first, alphabetically; claims without a class last.
        names.sort_by(|a, b| (a.is_none(), a).cmp(&(b.is_none(), b)));
        names.dedup();
        let classes = names
            .into_iter()
            .map(|class| {
                let of_class: Vec<&ClaimFigure> = figures
                    .iter()
                    .filter(|f| f.storage_class == class)
                    .collect();
                let count = |state: &str| of_class.iter().filter(|f| f.bound == state).count();
                let mut values: Vec<i64> =
                    of_class.iter().filter_map(|f| f.seconds_to_bound).collect();
                values.sort_unstable();
                let [p50, p90, p99] = QUANTILES.map(|(_, q)| percentile(&values, q));
                ClassFigures {
                    storage_class: class,
                    claims: of_class.len(),
                    measured: values.len(),
                    pending: count("notBound"),
                    not_observed: count("notObserved"),
                    without_timing: count("noTiming"),
                    p50_seconds: p50,
                    p90_seconds: p90,
                    p99_seconds: p99,
                    max_seconds: values.last().copied(),
                    bars: bars(&values),
                }
            })
            .collect();
        Distribution {
            namespace: namespace.map(str::to_owned),
            classes,
            claims: figures,
        }
    }

    /// Whether any claim carries a usable `pvc-timing` annotation.
    pub fn has_timing(&self) -> bool {
        self.claims.iter().any(|c| c.bound != "noTiming")
    }
}

#[cfg(test)]
mod tests;
