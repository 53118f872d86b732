//! eviction-guard end to end on kube-sim, with real admission over TLS: five worker nodes with a
//! pod each; three fail at once; their pods are protected from the taint-based eviction (the
//! simulated controller, like Kubernetes', gives up after five refused attempts), from
//! `kubectl drain`-style evictions and from deletes, while a pod on a healthy node is deleted as
//! usual; an authorised operator disables protection over gRPC, the drain's eviction goes through
//! and the guard itself completes the taint evictions it refused (rate-limited), leaving pods that
//! tolerate the taint forever; a second replica starts in the stored mode and follows changes
//! made through the first; back in AUTO, the nodes recover and protection ends by itself;
//! `/metrics` tells the story. Two more scenarios release refused evictions when the storm ends
//! with one node still dead, and across a restart of the guard.
//!
//! Failing nodes needs the simulator, so these scenarios run on kube-sim only.

use std::time::{Duration, Instant};

use anyhow::Context;
use ballast_control::{ClientOptions, ControlClient, Mode};
use ballast_e2e::{SimConfig, TestEnv, wait_for};
use eviction_guard::webhook_config::validating_webhook_configuration;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Longest wait for any condition; each is expected within a few seconds.
const TIMEOUT: Duration = Duration::from_secs(20);
/// How long to watch for attempts that must not come: many times the controller's pause.
const QUIET: Duration = Duration::from_millis(1500);
/// Release rate in the scenarios: fast, yet slow enough to see two nodes released apart.
const RELEASE_NODES_PER_SECOND: f64 = 1.0;

/// The simulated cluster of every storm scenario: five nodes, kubelets, and the taint eviction
/// controller with a 1s default toleration and 100ms between its five attempts.
fn storm_cluster() -> SimConfig {
    SimConfig::default()
        .nodes(5)
        .kubelet(true)
        .taint_eviction(true)
        .node_grace(Duration::from_millis(300))
        .default_toleration_seconds(1)
        .eviction_retry(Duration::from_millis(100))
}

/// Waits until the taint eviction controller has tried `names` five times each — every try
/// refused at its first step, the DisruptionTarget status patch — and then stopped.
async fn wait_for_the_controller_to_give_up(
    guard: &eviction_guard::Guard,
    pods: &Api<Pod>,
    names: &[&str],
) {
    let mut uids = Vec::new();
    for name in names {
        let pod = pods.get(name).await.expect("pod exists");
        uids.push(pod.metadata.uid.expect("pod uid"));
    }
    wait_for("five refused attempts per pod", TIMEOUT, || async {
        uids.iter()
            .all(|uid| guard.refusal(uid).is_some_and(|r| r.count >= 5))
            .then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    for (name, uid) in names.iter().zip(&uids) {
        let refusal = guard.refusal(uid).expect("refusal on record");
        assert_eq!(
            refusal.count, 5,
            "{name}: the controller gives up after five attempts"
        );
        assert_eq!(
            refusal.step,
            eviction_guard::release::RefusedStep::StatusPatch
        );
        let pod = pods.get(name).await.expect("pod kept");
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{name} not deleted"
        );
    }
}

/// Names of the pods with an `EvictionReleased` event in the namespace.
async fn released_events(client: &kube::Client, ns: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut names: Vec<String> = events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("EvictionReleased"))
        .filter_map(|e| e.involved_object.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Waits until each of `names` is gone; returns when each went, in order of `names`.
async fn wait_until_gone(pods: &Api<Pod>, names: &[&str]) -> Vec<Instant> {
    let start = Instant::now();
    let mut gone: Vec<Option<Instant>> = vec![None; names.len()];
    while gone.iter().any(Option::is_none) {
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out after {TIMEOUT:?} waiting for {names:?} to be gone"
        );
        for (i, name) in names.iter().enumerate() {
            if gone[i].is_none() && matches!(pods.get_opt(name).await, Ok(None)) {
                gone[i] = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gone.into_iter().flatten().collect()
}

/// A pod bound to `node`. `tolerate_forever`: it tolerates the unreachable taint without a
/// time limit, so the taint eviction leaves it alone (it is the one a drain evicts).
fn pod(ns: &str, name: &str, node: &str, tolerate_forever: bool) -> Pod {
    let mut spec = json!({"nodeName": node, "containers": [{"name": "app", "image": "nginx"}]});
    if tolerate_forever {
        spec["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable",
            "operator": "Exists", "effect": "NoExecute"}]);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
        "spec": spec
    }))
    .expect("valid pod")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

struct Guard {
    http: reqwest::Client,
    admin: String,
    callbacks: String,
}

impl Guard {
    async fn status(&self) -> Value {
        let resp = self
            .http
            .get(format!("{}/callback/status", self.callbacks))
            .send()
            .await
            .expect("status reachable");
        resp.json::<Value>().await.expect("status JSON")["data"].clone()
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics text");
        ballast_runtime::metrics::sample(&text, name, labels).unwrap_or(0.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_protects_pods_on_failed_nodes_until_disabled_or_recovered() -> anyhow::Result<()> {
    let env = TestEnv::start(storm_cluster()).await;
    let Some(sim) = env.sim_or_skip("the eviction-guard storm scenario fails nodes") else {
        env.shutdown().await;
        return Ok(());
    };
    let client = env.client.clone();
    let ns = env.namespace.as_str();

    // the guard, in-process, serving its webhook over TLS with its own CA
    let dir = tempfile::tempdir()?;
    let cert = ballast_runtime::tls::generate(&["127.0.0.1", "localhost"])?;
    let (cert_path, key_path) = cert.write_to(dir.path())?;
    let mut config = eviction_guard::Config::loopback(client.clone());
    config.tls = Some((cert_path, key_path));
    config.namespace = ns.to_owned();
    config.release.nodes_per_second = RELEASE_NODES_PER_SECOND;
    let shutdown = CancellationToken::new();
    let running = eviction_guard::start(config.clone(), shutdown.clone()).await?;
    let guard = Guard {
        http: reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(cert.ca_pem.as_bytes())?)
            .build()?,
        admin: format!("http://{}", running.admin_addr),
        callbacks: format!("https://127.0.0.1:{}", running.webhook_addr.port()),
    };
    let webhook = validating_webhook_configuration(
        &format!("eviction-guard-{ns}"),
        WebhookClientConfig {
            url: Some(format!(
                "https://127.0.0.1:{}/validate",
                running.webhook_addr.port()
            )),
            ca_bundle: Some(ByteString(cert.ca_pem.clone().into_bytes())),
            service: None,
        },
        &["kube-system"],
    );
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &webhook)
        .await?;
    wait_for("the guard to be ready", TIMEOUT, || async {
        running.readiness.is_ready().then_some(())
    })
    .await;
    let status = guard.status().await;
    assert_eq!(status["intercepting"], false);
    assert_eq!(status["reason"], "all 5 worker nodes Ready");

    // a pod on each node, running
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // kube clients retry a 429 by themselves (15 times, ~5 minutes): what a drain should do,
    // but here we want to see the first answer
    let mut no_retry = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(sim.kubeconfig_path())?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    no_retry.default_retry = false;
    let drain: Api<Pod> = Api::namespaced(kube::Client::try_from(no_retry)?, ns);
    for i in 1..=5 {
        let p = pod(ns, &format!("web-{i}"), &format!("node-{i}"), i == 1);
        pods.create(&PostParams::default(), &p).await?;
    }
    // and one on a failing node that tolerates the taint forever: it stays throughout
    pods.create(&PostParams::default(), &pod(ns, "patient", "node-2", true))
        .await?;
    wait_for("every pod Running", TIMEOUT, || async {
        let list = pods.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .then_some(())
    })
    .await;
    let statuses_refused_before = guard
        .metric("eviction_intercepted_total", &[("operation", "status")])
        .await;

    // three nodes fail at once
    let heartbeats_stopped = Instant::now();
    for n in ["node-1", "node-2", "node-3"] {
        sim.fail_node(n);
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let all_notready = wait_for("three nodes NotReady in the API", TIMEOUT, || async {
        let list = nodes.list(&Default::default()).await.ok()?;
        let notready = list
            .items
            .iter()
            .filter(|n| !eviction_guard::storm::NodeState::from_node(n).ready)
            .count();
        (notready == 3).then(Instant::now)
    })
    .await;
    let status = wait_for("the guard to intercept", TIMEOUT, || async {
        let s = guard.status().await;
        (s["intercepting"] == true).then_some(s)
    })
    .await;
    let reaction = all_notready.elapsed();
    eprintln!(
        "storm detected {reaction:?} after the third node was NotReady in the API \
         ({:?} after heartbeats stopped; the simulated grace is 300ms)",
        heartbeats_stopped.elapsed()
    );
    assert!(
        reaction < Duration::from_secs(1),
        "intercepting within a second, took {reaction:?}"
    );
    assert_eq!(
        status["notReadyNodes"],
        json!(["node-1", "node-2", "node-3"])
    );
    assert_eq!(status["reason"], "3 of 5 worker nodes NotReady within 5m");

    // the simulated taint-based eviction of web-2 and web-3 is refused at its first step, the
    // DisruptionTarget status update, five times each; then the controller gives up
    wait_for_the_controller_to_give_up(&running.guard, &pods, &["web-2", "web-3"]).await;
    assert!(
        guard
            .metric("eviction_intercepted_total", &[("operation", "status")])
            .await
            >= statuses_refused_before + 10.0
    );
    for i in 1..=3 {
        let p = pods
            .get_opt(&format!("web-{i}"))
            .await?
            .context("pod kept")?;
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "web-{i} not deleted"
        );
        let disrupted = p
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "DisruptionTarget" && c.status == "True");
        assert!(!disrupted, "web-{i} not marked DisruptionTarget");
    }

    // a drain's eviction: 429, retryable, with a retry hint, the reason and how to lift protection
    let refused = drain.evict("web-1", &EvictParams::default()).await;
    if let Err(kube::Error::Api(status)) = &refused {
        assert_eq!(
            status.details.as_ref().map(|d| d.retry_after_seconds),
            Some(10),
            "details.retryAfterSeconds, which the API server turns into Retry-After: {status:?}"
        );
    }
    let (code, message) = api_error(refused);
    assert_eq!(code, 429, "{message}");
    assert!(
        message.contains(
            "admission webhook \"deletions.eviction-guard.ballast.dev\" denied the request"
        ),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "eviction-guard refused eviction of pod {ns}/web-1: node node-1 is NotReady"
        )),
        "{message}"
    );
    assert!(
        message.contains("ballast.control.v1.ControlService/SetMode"),
        "{message}"
    );
    // a user's delete: 403
    let (code, message) = api_error(pods.delete("web-2", &DeleteParams::default()).await);
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("refused deletion of pod"), "{message}");
    // a pod on a healthy node is deleted as usual
    pods.delete("web-4", &DeleteParams::default()).await?;
    wait_for("web-4 gone", TIMEOUT, || async {
        pods.get_opt("web-4").await.ok()?.is_none().then_some(())
    })
    .await;

    // the operator disables protection over gRPC; a stranger may not
    let control = format!("http://{}", running.grpc_addr);
    sim.add_token("stranger-token", "stranger", &[]);
    let stranger = ControlClient::start(
        ClientOptions::new(&control)
            .token("stranger-token")
            .watch(false),
        &shutdown,
    )?;
    let refused = stranger
        .set_mode(Mode::Disabled, "let me")
        .await
        .expect_err("an unauthorised SetMode is refused");
    let status = refused.status().context("a gRPC status")?;
    assert_eq!(
        format!("{:?}", status.code()),
        "PermissionDenied",
        "{status:?}"
    );
    assert!(status.message().starts_with("forbidden"), "{status:?}");
    // nor through the seed's callback: no token 401, a token without the grant 403
    for (token, code) in [(None, 401), (Some("stranger-token"), 403)] {
        let mut req = guard
            .http
            .post(format!("{}/callback/disable-interception", guard.callbacks));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status().as_u16(), code);
        let body: Value = resp.json().await?;
        assert_eq!(body["status"], "error", "{body}");
    }
    assert_eq!(guard.status().await["mode"], "auto");
    sim.add_token("oncall-token", "oncall", &["ops"]);
    sim.allow("ops", "update", "control.ballast.dev", "interception");
    let oncall = ControlClient::start(
        ClientOptions::new(&control)
            .token("oncall-token")
            .watch(false),
        &shutdown,
    )?;
    let state = oncall.set_mode(Mode::Disabled, "drain rack 4").await?;
    assert_eq!(state.mode, Mode::Disabled);
    assert!(!state.protecting);
    assert_eq!(state.mode_changed_by, "oncall");
    let stored = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("eviction-guard-mode")
        .await?
        .data
        .context("mode ConfigMap has data")?;
    assert_eq!(stored["mode"], "disabled");
    assert_eq!(stored["changedBy"], "oncall");
    assert_eq!(stored["reason"], "drain rack 4");
    // a second replica (or a restart) starts in the stored mode
    let replica = eviction_guard::start(config, shutdown.clone()).await?;
    wait_for("the second replica to be ready", TIMEOUT, || async {
        replica.readiness.is_ready().then_some(())
    })
    .await;
    assert_eq!(replica.guard.mode().mode, Mode::Disabled);
    assert_eq!(replica.guard.mode().changed_by, "oncall");
    assert!(!replica.guard.snapshot().protection.protecting);

    drain.evict("web-1", &EvictParams::default()).await?;
    // the controller gave up on web-2 and web-3: the guard completes their eviction, one node
    // at a time at the release rate
    let gone = wait_until_gone(&pods, &["web-1", "web-2", "web-3"]).await;
    let apart = if gone[1] > gone[2] {
        gone[1] - gone[2]
    } else {
        gone[2] - gone[1]
    };
    assert!(
        apart >= Duration::from_millis(800),
        "the second node's pods wait for the rate limit ({RELEASE_NODES_PER_SECOND} node/s): {apart:?}"
    );
    wait_for("the release Events of web-2 and web-3", TIMEOUT, || async {
        (released_events(&client, ns).await == ["web-2", "web-3"]).then_some(())
    })
    .await;
    assert!(
        pods.get_opt("patient").await?.is_some(),
        "a pod tolerating the taint forever stays"
    );
    assert!(guard.metric("eviction_guard_released_total", &[]).await >= 2.0);

    // back to AUTO: the storm is still on; the nodes recover and protection ends by itself
    let state = oncall.set_mode(Mode::Auto, "drain done").await?;
    assert!(state.protecting, "{}", state.reason);
    wait_for(
        "the other replica to follow the mode change",
        TIMEOUT,
        || async {
            let snap = replica.guard.snapshot();
            (replica.guard.mode().mode == Mode::Auto && snap.protection.protecting).then_some(())
        },
    )
    .await;
    for n in ["node-1", "node-2", "node-3"] {
        sim.restore_node(n);
    }
    let status = wait_for("protection to end", TIMEOUT, || async {
        let s = guard.status().await;
        (s["intercepting"] == false).then_some(s)
    })
    .await;
    // it ends as soon as fewer than three remain NotReady
    let left = status["notReadyNodes"].as_array().map_or(0, Vec::len);
    assert!(left < 3, "{status}");
    let status = wait_for("every node Ready again", TIMEOUT, || async {
        let s = guard.status().await;
        (s["notReadyNodes"] == json!([])).then_some(s)
    })
    .await;
    assert_eq!(status["intercepting"], false);
    assert_eq!(status["reason"], "all 5 worker nodes Ready");

    // what /metrics says
    assert_eq!(guard.metric("node_notready_count", &[]).await, 0.0);
    assert_eq!(guard.metric("eviction_protection_active", &[]).await, 0.0);
    assert_eq!(
        guard
            .metric("eviction_intercepted_total", &[("operation", "eviction")])
            .await,
        1.0
    );
    assert_eq!(
        guard
            .metric("eviction_allowed_total", &[("operation", "eviction")])
            .await,
        1.0
    );
    assert_eq!(
        guard
            .metric("eviction_intercepted_total", &[("operation", "delete")])
            .await,
        1.0,
        "the user's delete of web-2"
    );
    assert!(
        guard
            .metric("eviction_allowed_total", &[("operation", "delete")])
            .await
            >= 3.0,
        "web-4 on a healthy node, then web-2 and web-3 released by the guard once disabled"
    );
    assert!(
        guard
            .metric(
                "admission_duration_seconds_count",
                &[("webhook", "eviction-guard"), ("operation", "DELETE")]
            )
            .await
            >= 2.0
    );

    shutdown.cancel();
    running.wait().await?;
    replica.wait().await?;
    env.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tls_serves_the_control_api_with_the_webhook_certificate() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
    let env = TestEnv::start(SimConfig::default().nodes(3)).await;
    let dir = tempfile::tempdir()?;
    let cert = ballast_runtime::tls::generate(&["127.0.0.1", "localhost"])?;
    let (cert_path, key_path) = cert.write_to(dir.path())?;
    let mut config = eviction_guard::Config::loopback(env.client.clone());
    config.tls = Some((cert_path, key_path));
    config.namespace = env.namespace.clone();
    config.grpc_tls = true;
    let shutdown = CancellationToken::new();
    let running = eviction_guard::start(config, shutdown.clone()).await?;
    let port = running.grpc_addr.port();

    // A client trusting the webhook's CA reads the status over TLS...
    let trusted = ControlClient::start(
        ClientOptions::new(format!("https://localhost:{port}"))
            .ca_pem(cert.ca_pem.clone())
            .watch(false),
        &shutdown,
    )?;
    let status = wait_for("the status over TLS", TIMEOUT, || async {
        trusted.get_status().await.ok().filter(|s| s.synced)
    })
    .await;
    assert_eq!(status.mode, Mode::Auto);
    assert!(!status.protecting);

    // ...and a plaintext client, as with `grpcurl -plaintext`, gets nothing.
    let plain = ControlClient::start(
        ClientOptions::new(format!("http://127.0.0.1:{port}")).watch(false),
        &shutdown,
    )?;
    assert!(plain.get_status().await.is_err());
    shutdown.cancel();
    env.shutdown().await;
    Ok(())
}

/// The guard's Node watch fails (here: its RBAC lacks nodes). It keeps serving from its cache and
/// says so in the status and metrics; once access returns, the watch recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_node_watch_shows_in_status_and_metrics_until_it_recovers() -> anyhow::Result<()>
{
    let env = TestEnv::start(SimConfig::default().nodes(3)).await;
    let Some(sim) = env.sim_or_skip("withholding the guard's access to nodes needs the simulator")
    else {
        env.shutdown().await;
        return Ok(());
    };
    let user = format!("system:serviceaccount:{}:eviction-guard", env.namespace);
    let client = sim.client_as(&user, &["system:serviceaccounts"]).await;
    sim.allow(&user, "*", "", "configmaps");
    let mut config = eviction_guard::Config::loopback(client);
    config.namespace = env.namespace.clone();
    let shutdown = CancellationToken::new();
    let running = eviction_guard::start(config, shutdown.clone()).await?;
    let guard = Guard {
        http: reqwest::Client::new(),
        admin: format!("http://{}", running.admin_addr),
        callbacks: format!("http://{}", running.webhook_addr),
    };

    let status = wait_for("the node watch error in the status", TIMEOUT, || async {
        let s = guard.status().await;
        (s["nodeWatch"]["errors"].as_u64().unwrap_or(0) >= 1).then_some(s)
    })
    .await;
    assert_eq!(status["nodeWatch"]["healthy"], false, "{status}");
    let error = status["nodeWatch"]["lastError"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("nodes is forbidden"), "{error}");
    assert!(status["nodeWatch"]["lastErrorAt"].is_string(), "{status}");
    assert_eq!(status["synced"], false);
    assert!(
        guard
            .metric("eviction_guard_node_watch_errors_total", &[])
            .await
            >= 1.0
    );

    sim.allow(&user, "list", "", "nodes");
    sim.allow(&user, "watch", "", "nodes");
    // the watch retries with backoff (under a minute even after many failures)
    let status = wait_for(
        "the node watch to recover",
        Duration::from_secs(60),
        || async {
            let s = guard.status().await;
            // healthy comes with the watch's first event, synced once its initial list is in
            (s["nodeWatch"]["healthy"] == true && s["synced"] == true).then_some(s)
        },
    )
    .await;
    assert_eq!(status["synced"], true, "{status}");
    assert_eq!(status["workerNodes"], 3, "{status}");
    assert!(
        status["nodeWatch"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("nodes is forbidden")),
        "the last error stays on record: {status}"
    );
    assert_eq!(
        guard.metric("eviction_guard_node_watch_healthy", &[]).await,
        1.0
    );
    shutdown.cancel();
    env.shutdown().await;
    Ok(())
}

/// A guard of the storm scenarios: in-process, webhook over TLS, registered in the cluster.
struct StormGuard {
    running: eviction_guard::Running,
    shutdown: CancellationToken,
    cert: ballast_runtime::tls::GeneratedCert,
    _dir: tempfile::TempDir,
}

fn webhook_configuration(ns: &str, port: u16, ca_pem: &str) -> ValidatingWebhookConfiguration {
    validating_webhook_configuration(
        &format!("eviction-guard-{ns}"),
        WebhookClientConfig {
            url: Some(format!("https://127.0.0.1:{port}/validate")),
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            service: None,
        },
        &["kube-system"],
    )
}

impl StormGuard {
    /// Starts a guard for namespace `ns`; `cert` reuses a serving certificate (a restart).
    async fn start(
        client: &kube::Client,
        ns: &str,
        cert: Option<ballast_runtime::tls::GeneratedCert>,
    ) -> anyhow::Result<StormGuard> {
        let dir = tempfile::tempdir()?;
        let cert = match cert {
            Some(c) => c,
            None => ballast_runtime::tls::generate(&["127.0.0.1", "localhost"])?,
        };
        let (cert_path, key_path) = cert.write_to(dir.path())?;
        let mut config = eviction_guard::Config::loopback(client.clone());
        config.tls = Some((cert_path, key_path));
        config.namespace = ns.to_owned();
        config.release.nodes_per_second = RELEASE_NODES_PER_SECOND;
        let shutdown = CancellationToken::new();
        let running = eviction_guard::start(config, shutdown.clone()).await?;
        let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let wanted = webhook_configuration(ns, running.webhook_addr.port(), &cert.ca_pem);
        let name = format!("eviction-guard-{ns}");
        match webhooks.get_opt(&name).await? {
            // a restart: point the API server at the new port
            Some(_) => {
                webhooks
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&wanted))
                    .await?;
            }
            None => {
                webhooks.create(&PostParams::default(), &wanted).await?;
            }
        }
        wait_for("the guard to be ready", TIMEOUT, || async {
            running.readiness.is_ready().then_some(())
        })
        .await;
        Ok(StormGuard {
            running,
            shutdown,
            cert,
            _dir: dir,
        })
    }

    async fn stop(self) -> anyhow::Result<ballast_runtime::tls::GeneratedCert> {
        self.shutdown.cancel();
        self.running.wait().await?;
        Ok(self.cert)
    }
}

/// A pod on each of the five nodes and one tolerating the taint forever on node-3; the nodes
/// `failing` (node-1, node-2, ...) fail and the controller gives up on their pods. Returns the
/// pod API.
async fn storm_with_refused_evictions(
    env: &TestEnv,
    sim: &ballast_e2e::KubeSim,
    guard: &StormGuard,
    failing: usize,
) -> Api<Pod> {
    let ns = env.namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    for i in 1..=5 {
        let p = pod(ns, &format!("web-{i}"), &format!("node-{i}"), false);
        pods.create(&PostParams::default(), &p)
            .await
            .expect("pod created");
    }
    pods.create(&PostParams::default(), &pod(ns, "patient", "node-3", true))
        .await
        .expect("pod created");
    wait_for("every pod Running", TIMEOUT, || async {
        let list = pods.list(&Default::default()).await.ok()?;
        list.items
            .iter()
            .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .then_some(())
    })
    .await;
    for i in 1..=failing {
        sim.fail_node(&format!("node-{i}"));
    }
    let names: Vec<String> = (1..=failing).map(|i| format!("web-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_for_the_controller_to_give_up(&guard.running.guard, &pods, &names).await;
    assert!(guard.running.guard.snapshot().protection.protecting);
    pods
}

/// The storm ends with node-3 still dead: protection lifts by itself, the guard completes the
/// refused eviction on node-3; the pods of the recovered nodes and the tolerating pod stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_ending_with_a_node_still_dead_releases_its_refused_evictions() -> anyhow::Result<()>
{
    let env = TestEnv::start(storm_cluster()).await;
    let Some(sim) = env.sim_or_skip("the eviction-guard storm scenario fails nodes") else {
        env.shutdown().await;
        return Ok(());
    };
    let ns = env.namespace.clone();
    let guard = StormGuard::start(&env.client, &ns, None).await?;
    let pods = storm_with_refused_evictions(&env, sim, &guard, 3).await;

    sim.restore_node("node-1");
    sim.restore_node("node-2");
    wait_for("protection to end", TIMEOUT, || async {
        let p = guard.running.guard.snapshot().protection.clone();
        (!p.protecting && p.notready.len() == 1).then_some(())
    })
    .await;
    wait_until_gone(&pods, &["web-3"]).await;
    // The Event follows the DELETE: it may land a moment after the pod is gone.
    wait_for("the release Event of web-3", TIMEOUT, || async {
        (released_events(&env.client, &ns).await == ["web-3"]).then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    for name in ["web-1", "web-2", "patient", "web-4", "web-5"] {
        assert!(
            pods.get_opt(name).await?.is_some(),
            "{name} stays: its node recovered, it tolerates the taint, or its node is healthy"
        );
    }
    guard.stop().await?;
    env.shutdown().await;
    Ok(())
}

/// The guard restarts in the middle of the storm, with no memory of its refusals: after
/// `SetMode DISABLED` it derives them from the cluster and completes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_evictions_are_released_after_a_guard_restart() -> anyhow::Result<()> {
    let env = TestEnv::start(storm_cluster()).await;
    let Some(sim) = env.sim_or_skip("the eviction-guard storm scenario fails nodes") else {
        env.shutdown().await;
        return Ok(());
    };
    let ns = env.namespace.clone();
    let guard = StormGuard::start(&env.client, &ns, None).await?;
    let pods = storm_with_refused_evictions(&env, sim, &guard, 4).await;

    let cert = guard.stop().await?;
    let guard = StormGuard::start(&env.client, &ns, Some(cert)).await?;
    assert_eq!(
        guard.running.guard.refusals(),
        0,
        "a new process remembers nothing"
    );
    wait_for("protection on in the new guard", TIMEOUT, || async {
        guard
            .running
            .guard
            .snapshot()
            .protection
            .protecting
            .then_some(())
    })
    .await;
    // node-1 recovers while three nodes keep protection on: its pod stays
    sim.restore_node("node-1");
    wait_for("node-1 Ready", TIMEOUT, || async {
        let snap = guard.running.guard.snapshot();
        snap.workers
            .get("node-1")
            .is_some_and(|n| n.ready)
            .then_some(())
    })
    .await;
    assert!(guard.running.guard.snapshot().protection.protecting);
    sim.add_token("oncall-token", "oncall", &["ops"]);
    sim.allow("ops", "update", "control.ballast.dev", "interception");
    let oncall = ControlClient::start(
        ClientOptions::new(format!("http://{}", guard.running.grpc_addr))
            .token("oncall-token")
            .watch(false),
        &guard.shutdown,
    )?;
    let state = oncall.set_mode(Mode::Disabled, "nodes are gone").await?;
    assert!(!state.protecting);
    wait_until_gone(&pods, &["web-2", "web-3", "web-4"]).await;
    assert_eq!(
        released_events(&env.client, &ns).await,
        ["web-2", "web-3", "web-4"]
    );
    tokio::time::sleep(QUIET).await;
    for name in ["web-1", "patient", "web-5"] {
        assert!(pods.get_opt(name).await?.is_some(), "{name} stays");
    }
    guard.stop().await?;
    env.shutdown().await;
    Ok(())
}
