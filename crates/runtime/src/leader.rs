//! Leader election on a `coordination.k8s.io/v1` Lease, for controllers that must act once per
//! cluster. Same protocol as client-go's leaderelection: the holder renews `renewTime`; anyone
//! may take a lease whose `renewTime + leaseDurationSeconds` has passed; writes carry the
//! resourceVersion read, so two candidates never both win.

use std::time::Duration;

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

/// Decides from the Lease as read (pure).
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    if holder == identity {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::Acquire;
    }
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(0)
        .max(0);
    let renewed = spec
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .map(|t| t.0);
    let expired = match renewed {
        Some(at) => at
            .checked_add(jiff::SignedDuration::from_secs(i64::from(duration)))
            .map_or(true, |until| until < now),
        None => true,
    };
    if expired {
        Step::Acquire
    } else {
        Step::Follow { holder }
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
/// whether this process leads now; it turns false as soon as a renewal has failed for longer
/// than the lease duration (another replica may have taken over by then).
pub fn spawn(
    client: kube::Client,
    cfg: LeaseConfig,
    shutdown: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let mut last_renewal: Option<std::time::Instant> = None;
        loop {
            match try_lead(&api, &cfg).await {
                Ok(true) => last_renewal = Some(std::time::Instant::now()),
                Ok(false) => last_renewal = None,
                Err(err) => tracing::warn!(
                    lease = %format!("{}/{}", cfg.namespace, cfg.name),
                    error = %err,
                    "failed to renew or acquire the lease"
                ),
            }
            let leading = last_renewal.is_some_and(|at| at.elapsed() < cfg.lease_duration);
            tx.send_if_modified(|current| {
                if *current == leading {
                    return false;
                }
                if leading {
                    tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "became leader");
                } else {
                    tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "stopped leading");
                }
                *current = leading;
                true
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(cfg.renew_every) => {}
            }
        }
        let was_leading = *tx.borrow();
        if was_leading && let Err(err) = release(&api, &cfg).await {
            tracing::warn!(error = %err, "failed to release the lease; it expires by itself");
        }
        tx.send_replace(false);
    });
    (rx, handle)
}

/// One round: returns whether we hold the lease afterwards.
async fn try_lead(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let now = Timestamp::now();
    let step = decide(current.as_ref(), &cfg.identity, now);
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

    #[test]
    fn creates_a_missing_lease() {
        assert_eq!(decide(None, "a", Timestamp::now()), Step::Create);
    }

    #[test]
    fn renews_its_own_lease_even_when_expired() {
        let l = lease(Some("a"), 100, 15);
        assert_eq!(decide(Some(&l), "a", Timestamp::now()), Step::Renew);
    }

    #[test]
    fn follows_a_live_lease_held_by_another() {
        let l = lease(Some("b"), 3, 15);
        assert_eq!(
            decide(Some(&l), "a", Timestamp::now()),
            Step::Follow { holder: "b".into() }
        );
    }

    #[test]
    fn acquires_an_expired_or_released_lease() {
        let expired = lease(Some("b"), 16, 15);
        assert_eq!(decide(Some(&expired), "a", Timestamp::now()), Step::Acquire);
        let released = lease(None, 0, 1);
        assert_eq!(
            decide(Some(&released), "a", Timestamp::now()),
            Step::Acquire
        );
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
