//! The mutating webhook: PVC CREATE and UPDATE (main resource and `status`) in, a JSON patch of
//! the `pvc-timing` annotation out. It never refuses a claim: any error is answered "allowed,
//! unchanged" with a warning, so a broken webhook cannot block storage.
//!
//! [`mutate`] is the pure decision over the decoded request; [`Webhook`] adds the clock, logs
//! and metrics.

use std::borrow::Cow;
use std::sync::Arc;

use ballast_runtime::admission::{Answer, Handler, Operation, Request, null_as_default};
use chrono::{DateTime, Utc};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use serde::Deserialize;
use serde_json::Value;

use crate::metrics as m;
use crate::timing::{self, ANNOTATION, BOUND, Observation, Outcome, TRIGGER_ANNOTATION};

/// The route label and the name used in logs.
pub const WEBHOOK_NAME: &str = "pvc-timing";
/// The path the webhook configuration points at (seed: `/mutate`).
pub const PATH: &str = "/mutate";

/// The time source, injected so tests pin it.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock stopped at one instant (tests, demos).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// What the webhook reads of a claim in a review (`object`, `oldObject`); every other field is
/// skipped unread.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ClaimView<'a> {
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub metadata: ClaimMetaView<'a>,
    #[serde(borrow, default, deserialize_with = "null_as_default")]
    pub status: ClaimStatusView<'a>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMetaView<'a> {
    #[serde(borrow, default)]
    pub uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub creation_timestamp: Option<Cow<'a, str>>,
    /// None when the claim has no annotations at all.
    #[serde(borrow, default, deserialize_with = "annotations")]
    pub annotations: Option<Annotations<'a>>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ClaimStatusView<'a> {
    #[serde(borrow, default)]
    pub phase: Option<Cow<'a, str>>,
}

/// The two annotations the webhook reads; the others are skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Annotations<'a> {
    pub timing: Option<Cow<'a, str>>,
    pub trigger: Option<Cow<'a, str>>,
}

/// Reads `metadata.annotations`, keeping only [`ANNOTATION`] and [`TRIGGER_ANNOTATION`].
fn annotations<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Annotations<'de>>, D::Error> {
    struct Pick;
    impl<'de> serde::de::Visitor<'de> for Pick {
        type Value = Option<Annotations<'de>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Annotations::default();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                let slot = match key.as_ref() {
                    ANNOTATION => &mut out.timing,
                    TRIGGER_ANNOTATION => &mut out.trigger,
                    _ => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        continue;
                    }
                };
                *slot = Some(map.next_value::<Cow<'de, str>>()?);
            }
            Ok(Some(out))
        }
    }
    d.deserialize_any(Pick)
}

impl ClaimView<'_> {
    fn annotation(&self) -> Option<&str> {
        self.metadata.annotations.as_ref()?.timing.as_deref()
    }

    fn trigger(&self) -> Option<&str> {
        self.metadata.annotations.as_ref()?.trigger.as_deref()
    }

    /// `creationTimestamp`, to the second as the API server stores it.
    fn created_at(&self) -> Option<DateTime<Utc>> {
        let t = DateTime::parse_from_rfc3339(self.metadata.creation_timestamp.as_deref()?).ok()?;
        DateTime::<Utc>::from_timestamp(t.timestamp(), 0)
    }
}

/// A review request as the webhook decodes it.
pub type ClaimRequest<'a> = Request<'a, ClaimView<'a>>;

/// Why a request was let through untouched.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutateError {
    #[error("failed to record PVC timing: the request is for {0}, not a PersistentVolumeClaim")]
    NotAClaim(String),
    #[error("failed to record PVC timing: the {0} request carries no object")]
    MissingObject(&'static str),
}

impl MutateError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            MutateError::NotAClaim(_) => "not_a_claim",
            MutateError::MissingObject(_) => "missing_object",
        }
    }
}

/// What the webhook decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// None when the annotation already says it all (reinvocation, no phase change).
    pub patch: Option<Patch>,
    pub outcome: Outcome,
}

/// Decides the patch for a PVC admission request. `Ok(None)`: nothing to do (DELETE, CONNECT,
/// or a phase that is not a claim phase).
///
/// The phase recorded is the one the API server stores, never one a client merely sent: on
/// CREATE it is Pending (the server resets status), on a main-resource UPDATE the stored
/// object's (the server keeps the old status), and only a `/status` request can change it. A
/// phase change is dated by the request that carries it (the PV controller's `/status` write);
/// a `webhook-trigger` only dates a Bound entry when it is added by this very request to a
/// claim already stored Bound (the controller's trigger, where a `/status` change was
/// discarded), never a trigger a user wrote while the claim was in another phase.
///
/// Nothing is counted here: the webhook sees requests, not outcomes (a later webhook or the
/// API server may still refuse them); the controller counts what was stored.
///
/// `seen` is this replica's own earlier sighting of the object's current phase (see
/// [`Sightings`]).
pub fn mutate(
    req: &ClaimRequest<'_>,
    now: DateTime<Utc>,
    seen: Option<DateTime<Utc>>,
) -> Result<Option<Mutation>, MutateError> {
    if !req.kind.group.is_empty() || req.kind.kind != "PersistentVolumeClaim" {
        return Err(MutateError::NotAClaim(format!(
            "{}/{}",
            req.kind.group, req.kind.kind
        )));
    }
    let creating = match req.operation {
        Operation::Create => true,
        Operation::Update => false,
        Operation::Delete | Operation::Connect => return Ok(None),
    };
    let operation = ballast_runtime::admission::operation_name(&req.operation);
    let object = req
        .object
        .as_ref()
        .ok_or(MutateError::MissingObject(operation))?;
    let on_status = req.sub_resource() == "status";
    let old = req.old_object.as_ref().filter(|_| !creating);

    let stored_phase = match (creating, old) {
        (true, _) => timing::PENDING,
        (false, Some(old)) => timing::normalise_phase(phase_of(old)),
        (false, None) => return Err(MutateError::MissingObject(operation)),
    };
    let phase = if on_status {
        timing::normalise_phase(phase_of(object))
    } else {
        stored_phase
    };
    let Some(phase) = timing::known_phase(phase) else {
        return Ok(None);
    };
    let created_at = object.created_at();
    let incoming = object
        .annotation()
        .and_then(|v| timing::PvcTiming::parse(v).ok());
    // Only to date a Bound entry still missing (a /status change the server discarded); a
    // trigger never moves a recorded time.
    let bound_missing = incoming.is_none_or(|t| t.current_phase != BOUND);
    let trigger = (phase == BOUND && !on_status && stored_phase == BOUND && bound_missing)
        .then(|| object.trigger())
        .flatten()
        .filter(|t| old.and_then(ClaimView::trigger) != Some(*t))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0));
    let earlier_sightings: Vec<DateTime<Utc>> = trigger.into_iter().chain(seen).collect();

    let outcome = timing::fold(&Observation {
        phase,
        annotation: object.annotation(),
        stored: old.and_then(ClaimView::annotation),
        creating,
        created_at,
        earlier_sightings: &earlier_sightings,
        now,
    });

    let patch = outcome
        .changed
        .then(|| annotation_patch(object, &outcome.value));
    Ok(Some(Mutation { patch, outcome }))
}

fn phase_of<'a>(object: &'a ClaimView<'_>) -> Option<&'a str> {
    object.status.phase.as_deref()
}

/// Sets `metadata.annotations[pvc-timing]`, creating the map when the object has none (a JSON
/// patch `add` into a missing parent fails).
fn annotation_patch(object: &ClaimView<'_>, value: &str) -> Patch {
    let op = match &object.metadata.annotations {
        None => PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "annotations"]),
            value: serde_json::json!({ ANNOTATION: value }),
        }),
        Some(map) => {
            let path = PointerBuf::from_tokens(["metadata", "annotations", ANNOTATION]);
            let value = Value::String(value.to_owned());
            if map.timing.is_some() {
                PatchOperation::Replace(ReplaceOperation { path, value })
            } else {
                PatchOperation::Add(AddOperation { path, value })
            }
        }
    };
    Patch(vec![op])
}

/// How many claims' unconfirmed sightings a replica keeps; past this the memory is dropped
/// (the controller's trigger still dates late entries).
const MAX_SIGHTINGS: usize = 10_000;

/// The latest phase change this replica recorded on a `/status` request, per claim uid, until a
/// later request shows it stored. Where the API server discards metadata changes made on
/// `/status`, the entry is written again by a later main-resource update; this memory lets it
/// carry the time the change was first seen, and dates a retried `/status` request at its first
/// attempt. Per replica: another replica falls back to the controller's `webhook-trigger`.
#[derive(Debug, Default)]
pub struct Sightings {
    seen: std::sync::Mutex<std::collections::HashMap<String, (String, DateTime<Utc>)>>,
}

impl Sightings {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, DateTime<Utc>)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When this replica saw claim `uid` enter `phase`, if that is its latest unconfirmed sighting.
    pub fn get(&self, uid: &str, phase: &str) -> Option<DateTime<Utc>> {
        self.lock()
            .get(uid)
            .filter(|(p, _)| p == phase)
            .map(|(_, at)| *at)
    }

    /// Remembers a sighting: the earliest for the same phase; a new phase replaces the old one.
    pub fn remember(&self, uid: &str, phase: &str, at: DateTime<Utc>) {
        let mut seen = self.lock();
        if seen.len() >= MAX_SIGHTINGS && !seen.contains_key(uid) {
            seen.clear();
        }
        match seen.get_mut(uid) {
            Some((p, t)) if p == phase => *t = (*t).min(at),
            _ => {
                seen.insert(uid.to_owned(), (phase.to_owned(), at));
            }
        }
    }

    /// Drops the sighting of `phase`, now part of the stored history.
    pub fn forget(&self, uid: &str, phase: &str) {
        let mut seen = self.lock();
        if seen.get(uid).is_some_and(|(p, _)| p == phase) {
            seen.remove(uid);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The admission handler: [`mutate`] plus logs and metrics; never denies.
pub struct Webhook {
    clock: Arc<dyn Clock>,
    sightings: Sightings,
}

impl Webhook {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            sightings: Sightings::default(),
        }
    }

    /// This replica's unconfirmed sightings (for tests and diagnostics).
    pub fn sightings(&self) -> &Sightings {
        &self.sightings
    }

    /// The uid and normalised phase of the admitted object, when it has a uid.
    fn claim_phase<'r>(req: &'r ClaimRequest<'_>) -> Option<(&'r str, &'r str)> {
        let object = req.object.as_ref()?;
        let uid = object.metadata.uid.as_deref()?;
        Some((uid, timing::normalise_phase(phase_of(object))))
    }

    fn note_sighting(&self, req: &ClaimRequest<'_>, mutation: &Mutation) {
        if req.is_dry_run() {
            return;
        }
        let Some((uid, phase)) = Self::claim_phase(req) else {
            return;
        };
        let on_status = req.sub_resource() == "status";
        let appended = mutation.outcome.appended.as_deref() == Some(phase);
        let stored = mutation
            .outcome
            .previous
            .as_ref()
            .is_some_and(|p| p.current_phase == phase);
        if appended && on_status {
            if let Some(at) = mutation
                .outcome
                .timing
                .timings
                .last()
                .and_then(|t| timing::parse_time(&t.time))
            {
                self.sightings.remember(uid, phase, at);
            }
        } else if appended || stored {
            // Written through the main resource, or seen stored: no longer needed.
            self.sightings.forget(uid, phase);
        }
    }

    /// Answers one request (synchronous: nothing here waits on I/O).
    pub fn answer(&self, req: &ClaimRequest<'_>) -> Answer {
        let response = Answer::allow();
        let claim = Claim(req);
        let seen = Self::claim_phase(req).and_then(|(uid, phase)| self.sightings.get(uid, phase));
        let mutation = match mutate(req, self.clock.now(), seen) {
            Ok(Some(mutation)) => mutation,
            Ok(None) => return response,
            Err(err) => {
                tracing::warn!(%claim, error = %err, "let a request through unchanged");
                metrics::counter!(m::WEBHOOK_ERRORS, "reason" => err.metric_label()).increment(1);
                return response.with_warnings([err.to_string()]);
            }
        };
        self.note_sighting(req, &mutation);
        let mut warnings = Vec::new();
        if let Some(repair) = &mutation.outcome.repair {
            tracing::warn!(
                %claim,
                repair = repair.label(),
                reason = repair.reason(),
                "repaired the pvc-timing annotation"
            );
            if !req.is_dry_run() {
                metrics::counter!(m::ANNOTATION_REPAIRS, "kind" => repair.label()).increment(1);
            }
            warnings.push(format!(
                "pvc-timing annotation repaired ({}): {}",
                repair.label(),
                repair.reason()
            ));
        }
        if let Some(phase) = &mutation.outcome.appended {
            tracing::info!(
                %claim,
                phase,
                subresource = req.sub_resource(),
                dry_run = req.is_dry_run(),
                "recording a new phase"
            );
        }
        let Some(patch) = mutation.patch else {
            return response.with_warnings(warnings);
        };
        tracing::debug!(
            %claim,
            annotation = mutation.outcome.value,
            "patching pvc-timing"
        );
        match response.clone().with_patch(&patch) {
            Ok(patched) => patched.with_warnings(warnings),
            Err(err) => {
                tracing::warn!(%claim, error = %err, "failed to encode the patch; letting the request through unchanged");
                metrics::counter!(m::WEBHOOK_ERRORS, "reason" => "encode_patch").increment(1);
                response.with_warnings([format!("failed to record PVC timing: {err}")])
            }
        }
    }
}

/// `namespace/name` of the claim under review, for logs; formatted only when a line is written.
struct Claim<'r, 'a>(&'r ClaimRequest<'a>);

impl std::fmt::Display for Claim<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0.namespace(), self.0.name)
    }
}

impl Handler for Webhook {
    type Object<'a> = ClaimView<'a>;

    async fn review<'r, 'a: 'r>(&'r self, req: &'r ClaimRequest<'a>) -> Answer {
        self.answer(req)
    }
}

#[cfg(test)]
mod tests;
