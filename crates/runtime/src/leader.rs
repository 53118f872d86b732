//! Leader election on a `coordination.k8s.io/v1` Lease, for controllers that must act once per
//! cluster, with client-go's leaderelection guarantees:
//! - the holder renews `renewTime` every `renew_every`; when it has not renewed for the *renew
//!   deadline* (2/3 of the lease duration, client-go's 10s of 15s) it stops leading, before any
//!   other replica may take over;
//! - a follower judges expiry by its own monotonic clock: the lease is expired when the record
//!   has not changed for `lease_duration` since this process last saw it change, never by
//!   comparing the holder's `renewTime` with the local wall clock (clocks of nodes differ);
//! - every API call has a timeout, so a hung connection cannot keep a stale leader leading;
//! - writes carry the resourceVersion read, so two candidates never both win.
//!
//! `leader_election_master_status{name="<namespace>/<lease>"}` (controller-runtime's name) is 1
//! while this replica leads.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where the Lease is and who we are.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica: the pod name (downward API) is the usual choice.
    pub identity: String,
    /// How long a lease is valid without renewal (client-go's default is 15s).
    pub lease_duration: Duration,
    /// How often the holder renews and others retry (client-go's default retry period is 2s).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// How long the holder may go without a successful renewal before it stops leading: 2/3 of
    /// the lease duration (client-go's 10s renew deadline of a 15s lease), so it has stopped well
    /// before a follower may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }

    /// Timeout of each API call: a renewal must not outlive the renew deadline.
    fn call_timeout(&self) -> Duration {
        (self.renew_deadline() / 2).max(Duration::from_millis(100))
    }

    /// Defaults as in client-go: 15s lease, 2s retry.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Acquire,
    /// Someone else holds a live lease.
    Follow { holder: String },
}

/// What identifies one version of the lease record: a change of any part is a renewal (or a
/// takeover) seen by a follower.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    holder: String,
    renew_time: Option<Timestamp>,
    transitions: i32,
    duration_secs: i32,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
            duration_secs: spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0),
        }
    }
}

/// The last record this process saw and when (by its own monotonic clock) it first saw it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub record: Record,
    pub at: Instant,
}

impl Observed {
    /// Notes the lease as read now: keeps the old observation time while the record is the
    /// same, so a holder that stopped renewing expires `lease_duration` after its last change.
    pub fn update(previous: Option<Observed>, lease: &Lease, now: Instant) -> Observed {
        let record = Record::of(lease);
        match previous {
            Some(prev) if prev.record == record => prev,
            _ => Observed { record, at: now },
        }
    }
}

/// Decides from the Lease as read and when its record last changed, by the local clock (pure).
/// `stepped_down`: this process led and stopped because its renewals failed; a record still
/// naming it is then not its to renew — a follower may have started counting it out, and
/// renewing (a slow API server applies writes whose answers come too late) would keep the
/// lease from anyone while nobody leads — so it waits for that record to expire like any other.
/// A process that never led renews a record with its name (its own restart).
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    stepped_down: bool,
    observed: Option<&Observed>,
    now: Instant,
) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let record = Record::of(lease);
    if record.holder == identity && !stepped_down {
        return Step::Renew;
    }
    if record.holder.is_empty() {
        return Step::Acquire;
    }
    let duration = Duration::from_secs(u64::try_from(record.duration_secs.max(0)).unwrap_or(0));
    let expired = match observed {
        Some(seen) if seen.record == record => now.saturating_duration_since(seen.at) > duration,
        // First sight of this record: it counts as renewed just now.
        _ => false,
    };
    if expired {
        Step::Acquire
    } else {
        Step::Follow {
            holder: record.holder,
        }
    }
}

fn held_spec(
    cfg: &LeaseConfig,
    previous: Option<&LeaseSpec>,
    now: Timestamp,
    acquiring: bool,
) -> LeaseSpec {
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(
            i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX),
        ),
        acquire_time: if acquiring {
            Some(MicroTime(now))
        } else {
            previous.and_then(|s| s.acquire_time.clone())
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if acquiring && previous.is_some() {
            transitions + 1
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// Runs the election until `shutdown`, then releases the Lease if held. The receiver says
/// whether this process leads now; it turns false once no renewal has succeeded for the renew
/// deadline, before another replica may take over.
pub fn spawn(
    client: kube::Client,
    cfg: LeaseConfig,
    shutdown: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let status = metrics::gauge!(
        "leader_election_master_status",
        "name" => format!("{}/{}", cfg.namespace, cfg.name)
    );
    status.set(0.0);
    let handle = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let mut last_renewal: Option<Instant> = None;
        let mut observed: Option<Observed> = None;
        let mut stepped_down = false;
        loop {
            // Bounded: a round that hangs counts as a failed renewal. A renewal counts from
            // when the round began, not when its answer came: a follower may have seen the
            // write as soon as the API server made it, and a slow answer must not stretch
            // the leadership past what the follower allows.
            let began = Instant::now();
            let round = tokio::time::timeout(
                cfg.call_timeout(),
                try_lead(&api, &cfg, stepped_down, &mut observed),
            );
            match round.await {
                Ok(Ok(true)) => {
                    last_renewal = Some(began);
                    stepped_down = false;
                }
                Ok(Ok(false)) => last_renewal = None,
                Ok(Err(err)) => tracing::warn!(
                    lease = %format!("{}/{}", cfg.namespace, cfg.name),
                    error = %err,
                    "failed to renew or acquire the lease"
                ),
                Err(_) => tracing::warn!(
                    lease = %format!("{}/{}", cfg.namespace, cfg.name),
                    timeout = ?cfg.call_timeout(),
                    "renewing or acquiring the lease timed out"
                ),
            }
            let leading = last_renewal.is_some_and(|at| at.elapsed() < cfg.renew_deadline());
            tx.send_if_modified(|current| {
                if *current == leading {
                    return false;
                }
                if leading {
                    tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "became leader");
                } else {
                    stepped_down = true;
                    tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "stopped leading");
                }
                *current = leading;
                status.set(f64::from(u8::from(leading)));
                true
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(cfg.renew_every) => {}
            }
        }
        let was_leading = *tx.borrow();
        if was_leading {
            match tokio::time::timeout(cfg.call_timeout(), release(&api, &cfg)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "failed to release the lease; it expires by itself");
                }
                Err(_) => tracing::warn!("releasing the lease timed out; it expires by itself"),
            }
        }
        tx.send_replace(false);
        status.set(0.0);
    });
    (rx, handle)
}

/// One round: returns whether we hold the lease afterwards.
async fn try_lead(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    stepped_down: bool,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let local = Instant::now();
    let step = decide(
        current.as_ref(),
        &cfg.identity,
        stepped_down,
        observed.as_ref(),
        local,
    );
    *observed = current
        .as_ref()
        .map(|lease| Observed::update(observed.take(), lease, local));
    let now = Timestamp::now();
    let result = match (&step, current) {
        (Step::Create, _) | (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held_spec(cfg, None, now, true)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        (Step::Follow { .. }, _) => return Ok(false),
        (Step::Renew | Step::Acquire, Some(mut lease)) => {
            // The read resourceVersion stays in metadata: a concurrent writer makes this a 409.
            lease.spec = Some(held_spec(
                cfg,
                lease.spec.as_ref(),
                now,
                step == Step::Acquire,
            ));
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        // Someone else wrote first (409) or created it first (409 AlreadyExists): not us.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

async fn release(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        return Ok(());
    };
    let holds = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        == Some(cfg.identity.as_str());
    if !holds {
        return Ok(());
    }
    if let Some(spec) = lease.spec.as_mut() {
        // As client-go does on release: no holder, and a 1s duration so others need not wait.
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
    }
    api.replace(&cfg.name, &PostParams::default(), &lease)
        .await?;
    tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "released the lease");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> Lease {
        let now = Timestamp::now();
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(
                    now - jiff::SignedDuration::from_secs(renewed_secs_ago),
                )),
                ..LeaseSpec::default()
            }),
        }
    }

    fn seen(l: &Lease, secs_ago: u64, now: Instant) -> Observed {
        Observed::update(None, l, now - Duration::from_secs(secs_ago))
    }

    #[test]
    fn creates_a_missing_lease() {
        assert_eq!(decide(None, "a", false, None, Instant::now()), Step::Create);
    }

    #[test]
    fn renews_its_own_lease_even_when_expired() {
        let l = lease(Some("a"), 100, 15);
        assert_eq!(
            decide(Some(&l), "a", false, None, Instant::now()),
            Step::Renew
        );
    }

    #[test]
    fn follows_a_live_lease_held_by_another() {
        let now = Instant::now();
        let l = lease(Some("b"), 3, 15);
        assert_eq!(
            decide(Some(&l), "a", false, Some(&seen(&l, 3, now)), now),
            Step::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn acquires_a_lease_unchanged_for_its_duration_by_the_local_clock_or_released() {
        let now = Instant::now();
        let stale = lease(Some("b"), 0, 15);
        assert_eq!(
            decide(Some(&stale), "a", false, Some(&seen(&stale, 16, now)), now),
            Step::Acquire
        );
        let released = lease(None, 0, 1);
        assert_eq!(
            decide(Some(&released), "a", false, None, now),
            Step::Acquire
        );
    }

    #[test]
    fn a_holder_clock_20s_behind_does_not_make_a_renewed_lease_look_expired() {
        // The holder's wall clock is 20s behind ours: its renewTime looks 20s old although it
        // renewed just now. Judged by our own observation, the lease is live.
        let now = Instant::now();
        let renewed_by_slow_clock = lease(Some("b"), 20, 15);
        let first_sight = decide(Some(&renewed_by_slow_clock), "a", false, None, now);
        assert_eq!(first_sight, Step::Follow { holder: "b".into() });
        let observed = seen(&renewed_by_slow_clock, 14, now);
        assert_eq!(
            decide(
                Some(&renewed_by_slow_clock),
                "a",
                false,
                Some(&observed),
                now
            ),
            Step::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn a_holder_clock_20s_ahead_does_not_keep_a_dead_lease_alive() {
        // renewTime in our future (holder clock ahead) but unchanged for longer than the
        // duration: the holder is gone.
        let now = Instant::now();
        let dead = lease(Some("b"), -20, 15);
        let observed = seen(&dead, 16, now);
        assert_eq!(
            decide(Some(&dead), "a", false, Some(&observed), now),
            Step::Acquire
        );
    }

    #[test]
    fn an_observation_keeps_its_time_until_the_record_changes() {
        let now = Instant::now();
        let l = lease(Some("b"), 0, 15);
        let first = seen(&l, 10, now);
        let again = Observed::update(Some(first.clone()), &l, now);
        assert_eq!(again.at, first.at, "same record, same observation time");
        let mut renewed = l.clone();
        renewed.spec.as_mut().unwrap().renew_time = Some(MicroTime(Timestamp::now()));
        let changed = Observed::update(Some(first), &renewed, now);
        assert_eq!(changed.at, now);
    }

    #[test]
    fn a_replica_that_stepped_down_waits_for_its_own_record_to_expire() {
        let now = Instant::now();
        let ours = lease(Some("a"), 0, 15);
        // still live by our own observation: we follow our old record, not renew it
        assert_eq!(
            decide(Some(&ours), "a", true, Some(&seen(&ours, 5, now)), now),
            Step::Follow { holder: "a".into() }
        );
        // unchanged for its duration: taken over, like anyone's
        assert_eq!(
            decide(Some(&ours), "a", true, Some(&seen(&ours, 16, now)), now),
            Step::Acquire
        );
        // a process that never led renews a record naming it at once (its own restart)
        assert_eq!(decide(Some(&ours), "a", false, None, now), Step::Renew);
    }

    #[test]
    fn the_renew_deadline_ends_before_the_lease_can_expire() {
        let cfg = LeaseConfig::new("ns", "l", "a");
        assert_eq!(cfg.renew_deadline(), Duration::from_secs(10));
        assert!(cfg.call_timeout() < cfg.renew_deadline());
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let cfg = LeaseConfig::new("ns", "l", "a");
        let previous = LeaseSpec {
            lease_transitions: Some(4),
            ..LeaseSpec::default()
        };
        let now = Timestamp::now();
        assert_eq!(
            held_spec(&cfg, Some(&previous), now, true).lease_transitions,
            Some(5)
        );
        assert_eq!(
            held_spec(&cfg, Some(&previous), now, false).lease_transitions,
            Some(4)
        );
        let spec = held_spec(&cfg, None, now, true);
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }
}
