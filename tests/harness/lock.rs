//! A lock across the scenarios of one cluster, for the few that must change something only one
//! of them may hold at a time (the PodManager CRD: its group is fixed, its conversion webhook is
//! a scenario's own process). A Lease `ballast-e2e-lock-NAME` in `default`: whoever creates it
//! holds the lock and renews it; a holder that stopped renewing (killed mid-run) is stale after
//! [`STALE`] and its Lease is deleted by the next one waiting. Released by deleting it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the holder renews.
const RENEW: Duration = Duration::from_secs(3);
/// How long since the last renewal before a holder counts as gone.
const STALE: Duration = Duration::from_secs(30);
/// How long to wait for the lock before failing the scenario: every holder finishes well within.
const WAIT: Duration = Duration::from_secs(600);

/// A held lock; [`ClusterLock::release`] gives it up (so does dropping it, from a thread of its
/// own, for a scenario that panicked).
pub struct ClusterLock {
    client: Client,
    /// For the release of a scenario that panicked, from a client of its own.
    kubeconfig: PathBuf,
    name: String,
    uid: String,
    stop: CancellationToken,
    renewal: Option<JoinHandle<()>>,
    released: bool,
}

fn lease_name(name: &str) -> String {
    format!("ballast-e2e-lock-{name}")
}

/// `metav1.MicroTime` now, as JSON.
fn now() -> serde_json::Value {
    serde_json::to_value(MicroTime(jiff::Timestamp::now())).unwrap_or_default()
}

/// Waits for lock `name`, held by `holder` (the scenario's namespace), on the cluster of
/// `client` (`kubeconfig`).
pub async fn acquire(client: &Client, kubeconfig: &Path, name: &str, holder: &str) -> ClusterLock {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease_name = lease_name(name);
    let start = std::time::Instant::now();
    loop {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": lease_name, "namespace": "default"},
            "spec": {"holderIdentity": holder, "renewTime": now(),
                     "leaseDurationSeconds": STALE.as_secs()},
        }))
        .expect("a Lease");
        match leases.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                let uid = created.metadata.uid.unwrap_or_default();
                let stop = CancellationToken::new();
                let renewal = tokio::spawn(renew(leases.clone(), lease_name.clone(), stop.clone()));
                return ClusterLock {
                    client: client.clone(),
                    kubeconfig: kubeconfig.to_path_buf(),
                    name: lease_name,
                    uid,
                    stop,
                    renewal: Some(renewal),
                    released: false,
                };
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                remove_if_stale(&leases, &lease_name).await;
            }
            Err(e) => eprintln!("failed to take lock {lease_name}: {e}"),
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for lock {lease_name}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn renew(leases: Api<Lease>, name: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RENEW) => {}
        }
        let patch = json!({"spec": {"renewTime": now()}});
        if let Err(e) = leases
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            eprintln!("failed to renew lock {name}: {e}");
        }
    }
}

async fn remove_if_stale(leases: &Api<Lease>, name: &str) {
    let Ok(Some(current)) = leases.get_opt(name).await else {
        return;
    };
    let renewed = current
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let stale = renewed.is_none_or(|t| {
        jiff::Timestamp::now().duration_since(t)
            > jiff::SignedDuration::try_from(STALE).unwrap_or_default()
    });
    if stale {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: current.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if leases.delete(name, &dp).await.is_ok() {
            eprintln!("lock {name}: removed a holder that stopped renewing");
        }
    }
}

impl ClusterLock {
    /// Gives the lock up.
    pub async fn release(mut self) {
        self.released = true;
        self.stop.cancel();
        if let Some(renewal) = self.renewal.take() {
            let _ = renewal.await;
        }
        delete(&self.client, &self.name, &self.uid).await;
    }
}

/// Deletes the lock's Lease if it is still the one taken (`uid`).
async fn delete(client: &Client, name: &str, uid: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(e) = leases.delete(name, &dp).await {
        eprintln!("failed to release lock {name}: {e}");
    }
}

impl Drop for ClusterLock {
    /// A holder that panicked gives the lock up at once rather than after [`STALE`].
    fn drop(&mut self) {
        self.stop.cancel();
        if self.released {
            return;
        }
        let (kubeconfig, name, uid) =
            (self.kubeconfig.clone(), self.name.clone(), self.uid.clone());
        // The scenario's client belongs to its runtime, which may be unwinding: a client of its
        // own, on a runtime of its own; if even that fails, the Lease goes stale.
        let release = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let client = crate::client_from(&kubeconfig, None).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), delete(&client, &name, &uid))
                    .await;
            });
        });
        let _ = release.join();
    }
}
