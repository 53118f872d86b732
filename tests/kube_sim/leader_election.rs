//! Leader election with client-go's guarantees, on the API server: a leader whose renewals fail
//! stops leading within its renew deadline, before the lease could expire for anyone else, and a
//! follower waiting on it never leads at the same time.
//!
//! Renewals are blocked the way an outage of the API path looks to a leader: a fail-closed
//! validating webhook for Lease updates whose endpoint does not answer (nothing listens there),
//! so every renewal is refused with a webhook call error. Runs on a real cluster too.

use std::cell::Cell;
use std::time::{Duration, Instant};

use ballast_e2e::{SimConfig, TestEnv, wait_for};
use ballast_runtime::leader::{self, LeaseConfig};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::TIMEOUT;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_millis(200);

fn lease(ns: &str, identity: &str) -> LeaseConfig {
    let mut cfg = LeaseConfig::new(ns, "e2e-leader", identity);
    cfg.lease_duration = LEASE;
    cfg.renew_every = RENEW;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_renewals_fail_stops_before_its_lease_could_expire() {
    let env = TestEnv::start(SimConfig::default()).await;
    let ns = env.namespace.clone();
    let stop = CancellationToken::new();
    let (a, a_task) = leader::spawn(env.client.clone(), lease(&ns, "a"), stop.clone());
    wait_for("a to lead", Duration::from_secs(10), || {
        let leading = *a.borrow();
        async move { leading.then_some(()) }
    })
    .await;
    let (b, b_task) = leader::spawn(env.client.clone(), lease(&ns, "b"), stop.clone());

    // Block every Lease update in this namespace.
    let name = format!("block-leases-{ns}");
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{"name": "block-leases.e2e.ballast.dev",
            "clientConfig": {"url": "https://127.0.0.1:1/nothing-listens-here"},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "rules": [{"apiGroups": ["coordination.k8s.io"], "apiVersions": ["v1"],
                       "operations": ["UPDATE"], "resources": ["leases"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail", "timeoutSeconds": 1},
            env.webhook_probe("block-leases")]
    }))
    .unwrap();
    let webhooks = Api::<ValidatingWebhookConfiguration>::all(env.client.clone());
    // Renewals fail from when the API server has the configuration in effect (a real one a
    // moment after it is stored): after the last probe that found it not yet in effect was
    // sent (`not_yet`), by the time one finds it in effect (`blocked`).
    let not_yet = Cell::new(Instant::now());
    webhooks
        .create(&PostParams::default(), &config)
        .await
        .expect("blocking webhook registered");
    wait_for(
        "the API server to call the blocking webhook",
        TIMEOUT,
        || async {
            let sent = Instant::now();
            let in_effect = env.webhook_probe_in_effect("block-leases").await?;
            if !in_effect {
                not_yet.set(sent);
            }
            in_effect.then_some(())
        },
    )
    .await;
    let (not_yet, blocked) = (not_yet.get(), Instant::now());

    // The leader steps down within its renew deadline (plus one call timeout and a round),
    // before the lease duration: no one else may take over before then. Bounds from above are
    // checked on the time since `not_yet`, bounds from below on the time since `blocked`.
    let bound = lease(&ns, "a").renew_deadline() + RENEW;
    let (least, most) = loop {
        if !*a.borrow() {
            break (blocked.elapsed(), not_yet.elapsed());
        }
        assert!(
            !*b.borrow(),
            "b leads while a still believes it leads ({:?} after blocking)",
            blocked.elapsed()
        );
        assert!(
            not_yet.elapsed() < bound + Duration::from_secs(1),
            "a still leads {:?} after its renewals started failing",
            not_yet.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        least >= Duration::from_millis(500),
        "a stepped down after {least:?}: too soon to be the renew deadline"
    );
    assert!(
        most < LEASE,
        "a stepped down after {most:?}, when its lease could already have expired"
    );
    // b cannot write the lease either, so it must not lead.
    tokio::time::sleep(RENEW * 3).await;
    assert!(!*b.borrow(), "b leads without having written the lease");

    webhooks
        .delete(&name, &DeleteParams::default())
        .await
        .expect("blocking webhook removed");
    stop.cancel();
    let _ = a_task.await;
    let _ = b_task.await;
    env.shutdown().await;
}
