//! The service scaffold (`ballast_runtime::Service`) on the API server: leader-only work and its
//! Lease on shutdown. Runs on a real cluster too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_e2e::{SimConfig, TestEnv, wait_for};
use ballast_runtime::leader::LeaseConfig;
use ballast_runtime::{Error, Service};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio_util::sync::CancellationToken;

/// How long the reconcile in flight at SIGTERM takes to finish.
const IN_FLIGHT: Duration = Duration::from_secs(2);

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// SIGTERM arrives while a reconcile is in flight. The work is told to stop and finishes its
/// reconcile; all that time the Lease stays held (renewed), so no other replica starts
/// reconciling the same objects. Only once the work has stopped is the Lease released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_shutdown_mid_reconcile_the_lease_is_released_only_after_the_work_stopped() {
    let env = TestEnv::start(SimConfig::default()).await;
    let name = "shape-release-order";
    let mut lease = LeaseConfig::new(&env.namespace, name, "replica-a");
    lease.lease_duration = Duration::from_secs(3);
    lease.renew_every = Duration::from_millis(200);
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.namespace);

    let shutdown = CancellationToken::new();
    let mut svc: Service<Error> = Service::new("shape-test", "0", &shutdown);
    let reconciling = CancellationToken::new();
    // The Lease holder the work saw while finishing its reconcile after the stop signal.
    let seen_while_finishing: Arc<Mutex<Option<Option<String>>>> = Arc::default();
    let (started, seen, api) = (
        reconciling.clone(),
        seen_while_finishing.clone(),
        leases.clone(),
    );
    let leading = svc.run_while_leading("reconciler", &env.client, Some(lease), move |stop| {
        let (started, seen, api) = (started.clone(), seen.clone(), api.clone());
        async move {
            started.cancel();
            stop.cancelled().await;
            tokio::time::sleep(IN_FLIGHT).await;
            let now = api.get(name).await.ok().and_then(|l| holder(&l));
            *seen.lock().unwrap() = Some(now);
        }
    });
    let tasks = svc.into_tasks();
    wait_for(
        "the replica to lead and reconcile",
        Duration::from_secs(10),
        || {
            let on = reconciling.is_cancelled() && *leading.borrow();
            async move { on.then_some(()) }
        },
    )
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), tasks.wait())
        .await
        .expect("the service stops")
        .expect("without an error");

    assert_eq!(
        seen_while_finishing.lock().unwrap().clone(),
        Some(Some("replica-a".to_owned())),
        "the Lease was still held while the in-flight reconcile finished"
    );
    let released = leases.get(name).await.expect("the Lease");
    assert_eq!(holder(&released), None, "released once the work stopped");
    assert_eq!(
        released.spec.and_then(|s| s.lease_duration_seconds),
        Some(1),
        "released as client-go does, so a successor need not wait"
    );
    env.shutdown().await;
}
