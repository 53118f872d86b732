//! eviction-guard end to end, with real admission over TLS: five worker nodes with a pod each;
//! three fail at once; their pods are protected from the taint-based eviction (the taint
//! eviction controller gives up after five refused attempts), from `kubectl drain`-style
//! evictions and from deletes, while a pod on a healthy node is deleted as usual; an authorised
//! operator disables protection over gRPC, the drain's eviction goes through and the guard itself
//! completes the taint evictions it refused (rate-limited), leaving pods that tolerate the taint
//! forever; a second replica starts in the stored mode and follows changes made through the
//! first; back in AUTO, the nodes recover and protection ends by itself; `/metrics` tells the
//! story. Two more scenarios release refused evictions when the storm ends with one node still
//! dead, and across a restart of the guard.
//!
//! Runs on kube-sim and on a real control plane, where the real node lifecycle controller taints
//! the failed nodes and the real taint eviction controller is the one refused. A pod whose
//! deletion was allowed on a failed node is gone at once on kube-sim but stays Terminating on a
//! real cluster until a kubelet confirms it, so the scenarios check that its deletion was
//! requested. Each guard counts only the scenario's nodes and its webhooks review only the
//! scenario's namespace.

use std::time::{Duration, Instant};

use anyhow::Context;
use ballast_control::{ClientOptions, ControlClient, Mode};
use ballast_e2e::{SimConfig, TestEnv, WebhookHost, wait_for};
use eviction_guard::webhook_config::validating_webhook_configuration;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Longest wait for any condition: a few seconds on kube-sim; on a real control plane a node
/// grace, the tolerations and the node controller's rate limit come on top.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long to watch for attempts that must not come: many times the controller's pause.
const QUIET: Duration = Duration::from_millis(1500);
/// Release rate in the scenarios: fast, yet slow enough to see two nodes released apart.
const RELEASE_NODES_PER_SECOND: f64 = 1.0;
/// NotReady worker nodes that start protection, as shipped.
const DEFAULT_THRESHOLD: usize = 3;
/// How long a storm takes to end once under the threshold: well over the second it takes the
/// scenario's kubelets to report back (they heartbeat every second), far under the shipped
/// minute.
const STORM_SETTLE: Duration = Duration::from_secs(3);
/// The settle period of the partition-heal scenarios: longer than the spread of their nodes'
/// returns (3s), the guard restart in the middle of them and the time a return takes to be
/// seen (a heartbeat, the node controller's look), as the shipped minute is for a real
/// partition. With 10s, on a real control plane shared with five other scenarios on 2 cores,
/// the scenario once took 65s instead of 47s and a pod of a returning node was deleted: most
/// likely the period ran out before the restarted guard saw node 2 Ready.
const HEAL_SETTLE: Duration = Duration::from_secs(20);

/// The simulated cluster of every storm scenario: five nodes, kubelets, and the taint eviction
/// controller with a 1s default toleration and 100ms between its five attempts (on a real
/// control plane: its own controllers and default toleration).
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

/// The `EvictionReleased` Events of the namespace (none when they cannot be listed).
async fn release_events(client: &kube::Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("EvictionReleased"))
        .collect()
}

/// Names of the pods with an `EvictionReleased` event in the namespace.
async fn released_events(client: &kube::Client, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = release_events(client, ns)
        .await
        .into_iter()
        .filter_map(|e| e.involved_object.name)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Waits until the deletion of each of `names` was requested (`deletionTimestamp` set, or gone:
/// kube-sim deletes at once, a real pod on a dead node stays Terminating until its kubelet
/// confirms); returns when each was seen so, in order of `names`.
async fn wait_until_deleted(pods: &Api<Pod>, names: &[&str]) -> Vec<Instant> {
    let start = Instant::now();
    let mut deleted: Vec<Option<Instant>> = vec![None; names.len()];
    while deleted.iter().any(Option::is_none) {
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out after {TIMEOUT:?} waiting for the deletion of {names:?}"
        );
        for (i, name) in names.iter().enumerate() {
            if deleted[i].is_some() {
                continue;
            }
            let requested = match pods.get_opt(name).await {
                Ok(None) => true,
                Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
                Err(_) => false,
            };
            if requested {
                deleted[i] = Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    deleted.into_iter().flatten().collect()
}

/// Asserts that each of `names` is there and nobody asked to delete it.
async fn assert_kept(pods: &Api<Pod>, names: &[&str], why: &str) {
    for name in names {
        let pod = pods
            .get_opt(name)
            .await
            .expect("pods readable")
            .unwrap_or_else(|| panic!("{name} is gone, but stays: {why}"));
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{name} is being deleted, but stays: {why}"
        );
    }
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

/// Creates a pod `web-i` on each node `i` (tolerating the taint forever when `i` is in
/// `tolerating`) and `patient` (tolerating it forever) on node `patient_on`, and waits until
/// every one is Running.
async fn pods_on_every_node(env: &TestEnv, patient_on: usize, tolerating: &[usize]) -> Api<Pod> {
    let ns = env.namespace.as_str();
    let pods: Api<Pod> = env.api();
    for i in 1..=env.nodes().len() {
        let p = pod(
            ns,
            &format!("web-{i}"),
            &env.node(i),
            tolerating.contains(&i),
        );
        pods.create(&PostParams::default(), &p)
            .await
            .expect("pod created");
    }
    pods.create(
        &PostParams::default(),
        &pod(ns, "patient", &env.node(patient_on), true),
    )
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
    pods
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A guard's HTTP endpoints, as an operator reaches them.
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

/// The scenario's guard configuration: in-process, webhook over TLS where the API server reaches
/// it, counting only the scenario's nodes as workers.
fn guard_config(
    env: &TestEnv,
    host: &WebhookHost,
    tls: (std::path::PathBuf, std::path::PathBuf),
) -> eviction_guard::Config {
    let mut config = eviction_guard::Config::loopback(env.client.clone());
    config.webhook_addr = host.bind_addr(0);
    config.tls = Some(tls);
    config.namespace = env.namespace.clone();
    config.worker_selector = env.node_selector().parse().expect("a node selector");
    config.storm.settle = STORM_SETTLE;
    config.release.nodes_per_second = RELEASE_NODES_PER_SECOND;
    // a standby takes the release over within seconds of a leader that died
    config.release.lease_duration = Duration::from_secs(4);
    config.release.renew_every = Duration::from_millis(500);
    config
}

/// The guard's webhook configuration as shipped, calling `host:port`, reviewing only the
/// scenario's namespace.
fn webhook_configuration(
    env: &TestEnv,
    host: &WebhookHost,
    port: u16,
    ca_pem: &str,
) -> ValidatingWebhookConfiguration {
    env.scoped(validating_webhook_configuration(
        &format!("eviction-guard-{}", env.namespace),
        WebhookClientConfig {
            url: Some(host.url(port, "/validate")),
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            service: None,
        },
        &["kube-system"],
    ))
}

/// A guard of the storm scenarios: in-process, webhook over TLS, registered in the cluster.
struct StormGuard {
    running: eviction_guard::Running,
    shutdown: CancellationToken,
    config: eviction_guard::Config,
    host: WebhookHost,
    cert: ballast_runtime::tls::GeneratedCert,
    _dir: tempfile::TempDir,
}

impl StormGuard {
    /// Starts a guard for the scenario, serving at `host`, protecting from `threshold` NotReady
    /// nodes on; `cert` reuses a serving certificate (a restart).
    async fn start(
        env: &TestEnv,
        host: &WebhookHost,
        threshold: usize,
        cert: Option<ballast_runtime::tls::GeneratedCert>,
    ) -> anyhow::Result<StormGuard> {
        Self::start_settling(env, host, threshold, cert, STORM_SETTLE).await
    }

    /// [`StormGuard::start`] with a storm settle period of `settle`.
    async fn start_settling(
        env: &TestEnv,
        host: &WebhookHost,
        threshold: usize,
        cert: Option<ballast_runtime::tls::GeneratedCert>,
        settle: Duration,
    ) -> anyhow::Result<StormGuard> {
        Self::start_with(env, host, cert, |config| {
            config.storm.threshold = threshold;
            config.storm.settle = settle;
        })
        .await
    }

    /// [`StormGuard::start`] with the scenario's settings changed by `adjust`.
    async fn start_with(
        env: &TestEnv,
        host: &WebhookHost,
        cert: Option<ballast_runtime::tls::GeneratedCert>,
        adjust: impl FnOnce(&mut eviction_guard::Config),
    ) -> anyhow::Result<StormGuard> {
        ballast_runtime::tls::install_crypto_provider();
        let dir = tempfile::tempdir()?;
        let cert = match cert {
            Some(c) => c,
            None => ballast_runtime::tls::generate(&host.cert_names())?,
        };
        let mut config = guard_config(env, host, cert.write_to(dir.path())?);
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let running = eviction_guard::start(config.clone(), shutdown.clone()).await?;
        let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(env.client.clone());
        let wanted = webhook_configuration(env, host, running.webhook_addr.port(), &cert.ca_pem);
        let name = format!("eviction-guard-{}", env.namespace);
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
            config,
            host: host.clone(),
            cert,
            _dir: dir,
        })
    }

    /// Its callbacks and metrics over HTTP, trusting its CA.
    fn endpoints(&self) -> anyhow::Result<Guard> {
        Ok(Guard {
            http: reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(self.cert.ca_pem.as_bytes())?)
                .build()?,
            admin: format!("http://{}", self.running.admin_addr),
            callbacks: self.host.url(self.running.webhook_addr.port(), ""),
        })
    }

    /// Stops it and starts it again with the same certificate and settings (a new process:
    /// nothing remembered but what it saved in the cluster).
    async fn restart(self, env: &TestEnv) -> anyhow::Result<StormGuard> {
        let (host, config) = (self.host.clone(), self.config.clone());
        let cert = self.stop().await?;
        let dir = tempfile::tempdir()?;
        let mut config = eviction_guard::Config {
            tls: Some(cert.write_to(dir.path())?),
            ..config
        };
        config.webhook_addr = host.bind_addr(0);
        let shutdown = CancellationToken::new();
        let running = eviction_guard::start(config.clone(), shutdown.clone()).await?;
        let wanted = webhook_configuration(env, &host, running.webhook_addr.port(), &cert.ca_pem);
        Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
            .patch(
                &format!("eviction-guard-{}", env.namespace),
                &PatchParams::default(),
                &Patch::Merge(&wanted),
            )
            .await?;
        wait_for("the restarted guard to be ready", TIMEOUT, || async {
            running.readiness.is_ready().then_some(())
        })
        .await;
        Ok(StormGuard {
            running,
            shutdown,
            config,
            host,
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

/// The scenario's nodes that are NotReady in the API.
async fn notready_nodes(env: &TestEnv) -> Option<usize> {
    let nodes: Api<Node> = Api::all(env.client.clone());
    let list = nodes
        .list(&ListParams::default().labels(&env.node_selector()))
        .await
        .ok()?;
    Some(
        list.items
            .iter()
            .filter(|n| !eviction_guard::storm::NodeState::from_node(n).ready)
            .count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_protects_pods_on_failed_nodes_until_disabled_or_recovered() -> anyhow::Result<()> {
    let env = TestEnv::start(storm_cluster()).await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard storm scenario") else {
        env.shutdown().await;
        return Ok(());
    };
    let client = env.client.clone();
    let ns = env.namespace.as_str();

    // the guard, in-process, serving its webhook over TLS with its own CA
    let storm_guard = StormGuard::start(&env, &host, DEFAULT_THRESHOLD, None).await?;
    let running = &storm_guard.running;
    let shutdown = storm_guard.shutdown.clone();
    let guard = storm_guard.endpoints()?;
    let status = guard.status().await;
    assert_eq!(status["intercepting"], false);
    assert_eq!(status["reason"], "all 5 worker nodes Ready");

    // a pod on each node, running (web-1 tolerates the taint forever: a drain evicts it), and
    // one on a failing node that tolerates the taint forever: it stays throughout. The harness's clients do not retry a 429 by themselves (kube's
    // default client would, 15 times over ~5 minutes: what a drain should do, but here we want
    // to see the first answer), so `pods` serves as the drain too.
    let pods = pods_on_every_node(&env, 2, &[1]).await;
    let statuses_refused_before = guard
        .metric("eviction_intercepted_total", &[("operation", "status")])
        .await;

    // three nodes fail at once, one in each zone
    let heartbeats_stopped = Instant::now();
    for i in 1..=3 {
        env.fail_node(&env.node(i));
    }
    let all_notready = wait_for("three nodes NotReady in the API", TIMEOUT, || async {
        (notready_nodes(&env).await? == 3).then(Instant::now)
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
         ({:?} after heartbeats stopped; the node grace here is {:?})",
        heartbeats_stopped.elapsed(),
        env.node_grace()
    );
    assert!(
        reaction < Duration::from_secs(1),
        "intercepting within a second, took {reaction:?}"
    );
    assert_eq!(
        status["notReadyNodes"],
        json!([env.node(1), env.node(2), env.node(3)])
    );
    assert_eq!(status["reason"], "3 of 5 worker nodes NotReady within 5m");

    // the taint-based eviction of web-2 and web-3 is refused at its first step, the
    // DisruptionTarget status update, five times each; then the controller gives up
    wait_for_the_controller_to_give_up(&running.guard, &pods, &["web-2", "web-3"]).await;
    eprintln!(
        "the taint eviction controller gave up {:?} after heartbeats stopped",
        heartbeats_stopped.elapsed()
    );
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
    let refused = pods.evict("web-1", &EvictParams::default()).await;
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
            "eviction-guard refused eviction of pod {ns}/web-1: node {} is NotReady",
            env.node(1)
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
    // a pod on a healthy node is deleted as usual (its kubelet confirms it)
    pods.delete("web-4", &DeleteParams::default()).await?;
    wait_for("web-4 gone", TIMEOUT, || async {
        pods.get_opt("web-4").await.ok()?.is_none().then_some(())
    })
    .await;
    // Only the user's delete of web-2 was refused. Counted now: once the nodes recover, their
    // kubelets finish the deletions they find, and a kubelet that reports before the guard has
    // seen its node Ready is refused too.
    assert_eq!(
        guard
            .metric("eviction_intercepted_total", &[("operation", "delete")])
            .await,
        1.0,
        "the user's delete of web-2"
    );

    // the operator disables protection over gRPC; a stranger may not
    let control = format!("http://{}", running.grpc_addr);
    let (_, stranger_token) = env.service_account_token("stranger", &[]).await;
    let stranger = ControlClient::start(
        ClientOptions::new(&control)
            .token(stranger_token.clone())
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
    for (token, code) in [(None, 401), (Some(stranger_token.as_str()), 403)] {
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
    let (oncall_user, oncall_token) = env.service_account_token("oncall", &[]).await;
    env.allow(
        &oncall_user,
        "update",
        "control.ballast.dev",
        "interception",
    )
    .await;
    let oncall = ControlClient::start(
        ClientOptions::new(&control)
            .token(oncall_token)
            .watch(false),
        &shutdown,
    )?;
    let state = oncall.set_mode(Mode::Disabled, "drain rack 4").await?;
    assert_eq!(state.mode, Mode::Disabled);
    assert!(!state.protecting);
    assert_eq!(state.mode_changed_by, oncall_user);
    let stored = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get("eviction-guard-mode")
        .await?
        .data
        .context("mode ConfigMap has data")?;
    assert_eq!(stored["mode"], "disabled");
    assert_eq!(stored["changedBy"], oncall_user);
    assert_eq!(stored["reason"], "drain rack 4");
    // a second replica (or a restart) starts in the stored mode
    let replica = eviction_guard::start(storm_guard.config.clone(), shutdown.clone()).await?;
    wait_for("the second replica to be ready", TIMEOUT, || async {
        replica.readiness.is_ready().then_some(())
    })
    .await;
    assert_eq!(replica.guard.mode().mode, Mode::Disabled);
    assert_eq!(replica.guard.mode().changed_by, oncall_user);
    assert!(!replica.guard.snapshot().protection.protecting);

    pods.evict("web-1", &EvictParams::default()).await?;
    // the controller gave up on web-2 and web-3: the guard completes their eviction, one node
    // at a time at the release rate
    let deleted = wait_until_deleted(&pods, &["web-1", "web-2", "web-3"]).await;
    let apart = if deleted[1] > deleted[2] {
        deleted[1] - deleted[2]
    } else {
        deleted[2] - deleted[1]
    };
    assert!(
        apart >= Duration::from_millis(800),
        "the second node's pods wait for the rate limit ({RELEASE_NODES_PER_SECOND} node/s): {apart:?}"
    );
    wait_for("the release Events of web-2 and web-3", TIMEOUT, || async {
        (released_events(&client, ns).await.len() >= 2).then_some(())
    })
    .await;
    assert_eq!(released_events(&client, ns).await, ["web-2", "web-3"]);
    assert_kept(&pods, &["patient"], "it tolerates the taint forever").await;
    assert!(guard.metric("eviction_guard_released_total", &[]).await >= 2.0);

    // back to AUTO: the storm is still on; the nodes recover and protection ends by itself
    let state = oncall.set_mode(Mode::Auto, "drain done").await?;
    assert!(state.protecting, "{}", state.reason);
    assert_eq!(
        state.protected_nodes,
        [env.node(1), env.node(2), env.node(3)],
        "the protected nodes, as the status callback lists them"
    );
    // setting the mode it already has changes nothing, and is not counted as a change
    let auto_changes = guard
        .metric("eviction_guard_mode_changes_total", &[("mode", "auto")])
        .await;
    let again = oncall.set_mode(Mode::Auto, "still auto").await?;
    assert_eq!(again.mode, Mode::Auto);
    assert_eq!(
        guard
            .metric("eviction_guard_mode_changes_total", &[("mode", "auto")])
            .await,
        auto_changes
    );
    wait_for(
        "the other replica to follow the mode change",
        TIMEOUT,
        || async {
            let snap = replica.guard.snapshot();
            (replica.guard.mode().mode == Mode::Auto && snap.protection.protecting).then_some(())
        },
    )
    .await;
    for i in 1..=3 {
        env.restore_node(&env.node(i));
    }
    let status = wait_for("protection to end", TIMEOUT, || async {
        let s = guard.status().await;
        (s["intercepting"] == false).then_some(s)
    })
    .await;
    // it ends once fewer than three have stayed NotReady for the settle period
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

    storm_guard.stop().await?;
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
    config.worker_selector = env.node_selector().parse().expect("a node selector");
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
    assert_eq!(status.reason, "all 3 worker nodes Ready");

    // ...and a plaintext client, as with `grpcurl -plaintext`, gets nothing.
    let plain = ControlClient::start(
        ClientOptions::new(format!("http://127.0.0.1:{port}")).watch(false),
        &shutdown,
    )?;
    assert!(plain.get_status().await.is_err());
    shutdown.cancel();
    running.wait().await?;
    env.shutdown().await;
    Ok(())
}

/// The guard's Node watch fails (here: its RBAC lacks nodes). It keeps serving from its cache and
/// says so in the status and metrics; once access returns, the watch recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_node_watch_shows_in_status_and_metrics_until_it_recovers() -> anyhow::Result<()>
{
    let env = TestEnv::start(SimConfig::default().nodes(3)).await;
    let user = format!("system:serviceaccount:{}:eviction-guard", env.namespace);
    let client = env.client_as(&user, &["system:serviceaccounts"]).await;
    env.allow(&user, "*", "", "configmaps").await;
    let mut config = eviction_guard::Config::loopback(client);
    config.namespace = env.namespace.clone();
    config.worker_selector = env.node_selector().parse().expect("a node selector");
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

    env.allow(&user, "list", "", "nodes").await;
    env.allow(&user, "watch", "", "nodes").await;
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
    running.wait().await?;
    env.shutdown().await;
    Ok(())
}

/// A pod on each of the five nodes and one tolerating the taint forever on node 3; the nodes
/// `failing` fail and the controller gives up on their pods. Returns the pod API.
async fn storm_with_refused_evictions(
    env: &TestEnv,
    guard: &StormGuard,
    failing: &[usize],
) -> Api<Pod> {
    let pods = pods_on_every_node(env, 3, &[]).await;
    let started = Instant::now();
    for &i in failing {
        env.fail_node(&env.node(i));
    }
    let names: Vec<String> = failing.iter().map(|i| format!("web-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    wait_for_the_controller_to_give_up(&guard.running.guard, &pods, &names).await;
    eprintln!(
        "the taint eviction controller gave up on {names:?} {:?} after the nodes failed",
        started.elapsed()
    );
    assert!(guard.running.guard.snapshot().protection.protecting);
    pods
}

/// The storm ends with node 3 still dead: protection lifts by itself once the two other nodes'
/// return has held for the settle period, and the guard completes the refused eviction on node 3;
/// the pods of the recovered nodes (their kubelets report a moment apart) and the tolerating pod
/// stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_ending_with_a_node_still_dead_releases_its_refused_evictions() -> anyhow::Result<()>
{
    let env = TestEnv::start(storm_cluster()).await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard storm scenario") else {
        env.shutdown().await;
        return Ok(());
    };
    let ns = env.namespace.clone();
    let guard = StormGuard::start(&env, &host, DEFAULT_THRESHOLD, None).await?;
    // one failed node per zone
    let pods = storm_with_refused_evictions(&env, &guard, &[1, 2, 3]).await;

    let restored = Instant::now();
    env.restore_node(&env.node(1));
    env.restore_node(&env.node(2));
    wait_for("protection to end", TIMEOUT, || async {
        let p = guard.running.guard.snapshot().protection.clone();
        (!p.protecting && p.notready.len() == 1).then_some(())
    })
    .await;
    eprintln!(
        "protection ended {:?} after two nodes were restored",
        restored.elapsed()
    );
    wait_until_deleted(&pods, &["web-3"]).await;
    // The Event follows the DELETE: it may land a moment after.
    wait_for("the release Event of web-3", TIMEOUT, || async {
        released_events(&env.client, &ns)
            .await
            .contains(&"web-3".to_owned())
            .then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_kept(
        &pods,
        &["web-1", "web-2", "patient", "web-4", "web-5"],
        "its node recovered, it tolerates the taint, or its node is healthy",
    )
    .await;
    assert_eq!(released_events(&env.client, &ns).await, ["web-3"]);
    guard.stop().await?;
    env.shutdown().await;
    Ok(())
}

/// The guard restarts in the middle of the storm, with no memory of its refusals: after
/// `SetMode DISABLED` it derives them from the cluster and completes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_evictions_are_released_after_a_guard_restart() -> anyhow::Result<()> {
    let env = TestEnv::start(storm_cluster()).await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard storm scenario") else {
        env.shutdown().await;
        return Ok(());
    };
    let ns = env.namespace.clone();
    // A threshold of two: node 1 can recover while protection stays on, with one failed node
    // per zone (a real node lifecycle controller taints the second failed node of a zone only
    // after its rate limit's interval, 10s by default).
    let guard = StormGuard::start(&env, &host, 2, None).await?;
    let pods = storm_with_refused_evictions(&env, &guard, &[1, 2, 3]).await;

    let cert = guard.stop().await?;
    // As if the old leader had died between web-2's release Event and its DELETE: the Event is
    // there under its fixed name; the new leader deletes the pod and writes no second one.
    let web2 = pods.get("web-2").await?;
    let web2_uid = web2.metadata.uid.clone().unwrap_or_default();
    let predecessor: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": eviction_guard::release::release_event_name("web-2", &web2_uid)},
        "eventTime": jiff::Timestamp::now(),
        "action": "DeletePod", "reason": "EvictionReleased", "type": "Normal",
        "note": "written by the predecessor",
        "reportingController": "eviction-guard", "reportingInstance": "predecessor",
        "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": "web-2",
                      "uid": web2_uid},
    }))?;
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &predecessor)
        .await?;
    let guard = StormGuard::start(&env, &host, 2, Some(cert)).await?;
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
    // node 1 recovers while two nodes keep protection on: its pod stays
    let node1 = env.node(1);
    env.restore_node(&node1);
    wait_for("node 1 Ready", TIMEOUT, || async {
        let snap = guard.running.guard.snapshot();
        snap.workers
            .get(&node1)
            .is_some_and(|n| n.ready)
            .then_some(())
    })
    .await;
    assert!(guard.running.guard.snapshot().protection.protecting);
    let (oncall_user, oncall_token) = env.service_account_token("oncall", &[]).await;
    env.allow(
        &oncall_user,
        "update",
        "control.ballast.dev",
        "interception",
    )
    .await;
    let oncall = ControlClient::start(
        ClientOptions::new(format!("http://{}", guard.running.grpc_addr))
            .token(oncall_token)
            .watch(false),
        &guard.shutdown,
    )?;
    let disabled = Instant::now();
    let state = oncall.set_mode(Mode::Disabled, "nodes are gone").await?;
    assert!(!state.protecting);
    wait_until_deleted(&pods, &["web-2", "web-3"]).await;
    eprintln!(
        "refused evictions released {:?} after SetMode DISABLED",
        disabled.elapsed()
    );
    wait_for("the release Events", TIMEOUT, || async {
        (released_events(&env.client, &ns).await.len() >= 2).then_some(())
    })
    .await;
    assert_eq!(released_events(&env.client, &ns).await, ["web-2", "web-3"]);
    tokio::time::sleep(QUIET).await;
    let web2_events: Vec<Event> = release_events(&env.client, &ns)
        .await
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("web-2"))
        .collect();
    assert_eq!(web2_events.len(), 1, "{web2_events:?}");
    assert_eq!(
        web2_events[0].reporting_instance.as_deref(),
        Some("predecessor"),
        "the predecessor's Event stands"
    );
    assert_kept(
        &pods,
        &["web-1", "patient", "web-4", "web-5"],
        "its node recovered, it tolerates the taint, or its node is healthy",
    )
    .await;
    guard.stop().await?;
    env.shutdown().await;
    Ok(())
}

/// The nodes of `nodes` returned one by one, `apart` from each other, as a healing partition's
/// kubelets do.
async fn heal(env: &TestEnv, nodes: &[usize], apart: Duration) {
    for (k, &i) in nodes.iter().enumerate() {
        if k > 0 {
            tokio::time::sleep(apart).await;
        }
        env.restore_node(&env.node(i));
    }
}

/// Waits until the scenario's guard has ended protection and then for `QUIET` more.
async fn wait_for_protection_to_end(guard: &StormGuard) {
    wait_for("protection to end", TIMEOUT, || async {
        (!guard.running.guard.snapshot().protection.protecting).then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
}

/// A partition heals over seconds: three of five nodes fail, the taint eviction controller
/// gives up on their pods, then the nodes come back 1.5s apart. The first return does not end
/// the storm (the nodes still down stay protected), the guard is restarted in the middle of the
/// healing, and nothing is deleted: every node of the storm came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_healing_over_seconds_deletes_no_pod_even_across_a_guard_restart()
-> anyhow::Result<()> {
    let env = TestEnv::start(storm_cluster()).await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard storm scenario") else {
        env.shutdown().await;
        return Ok(());
    };
    let ns = env.namespace.clone();
    let guard =
        StormGuard::start_settling(&env, &host, DEFAULT_THRESHOLD, None, HEAL_SETTLE).await?;
    let pods = storm_with_refused_evictions(&env, &guard, &[1, 2, 3]).await;

    let healing = Instant::now();
    env.restore_node(&env.node(1));
    // the first return does not end the storm: the two nodes still down stay protected
    wait_for("node 1 seen Ready by the guard", TIMEOUT, || async {
        let snap = guard.running.guard.snapshot();
        snap.workers
            .get(&env.node(1))
            .is_some_and(|n| n.ready)
            .then_some(())
    })
    .await;
    let p = guard.running.guard.snapshot().protection.clone();
    assert!(p.protecting, "{}", p.reason);
    assert!(p.reason.starts_with("storm ending: 2 of 5"), "{}", p.reason);
    // A restarted guard sees two NotReady nodes, no storm; what it must still release, and
    // when, it reads from what the previous leader saved.
    let guard = guard.restart(&env).await?;
    heal(&env, &[2, 3], Duration::from_millis(1500)).await;
    let healed = healing.elapsed();
    wait_for_protection_to_end(&guard).await;
    // a release would come once the settle period is over, at one node a second: wait for it
    // and for the time of three
    let settled = HEAL_SETTLE.saturating_sub(healing.elapsed()) + Duration::from_secs(3);
    tokio::time::sleep(settled).await;
    let why = format!(
        "every node of the storm came back, the last {healed:?} after the first (settle period {HEAL_SETTLE:?})"
    );
    assert_kept(
        &pods,
        &["web-1", "web-2", "web-3", "web-4", "web-5", "patient"],
        &why,
    )
    .await;
    assert!(released_events(&env.client, &ns).await.is_empty());
    guard.stop().await?;
    env.shutdown().await;
    Ok(())
}

/// The same partition, but node 3 stays dead: once the storm is over (the settle period after
/// the count fell under three), only node 3's refused eviction is completed — by a guard
/// restarted while the storm was ending, which carries on from what the previous one saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_still_dead_after_the_settle_period_is_released_across_a_guard_restart()
-> anyhow::Result<()> {
    let env = TestEnv::start(storm_cluster()).await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard storm scenario") else {
        env.shutdown().await;
        return Ok(());
    };
    let ns = env.namespace.clone();
    let guard =
        StormGuard::start_settling(&env, &host, DEFAULT_THRESHOLD, None, HEAL_SETTLE).await?;
    let pods = storm_with_refused_evictions(&env, &guard, &[1, 2, 3]).await;

    let healing = Instant::now();
    heal(&env, &[1, 2], Duration::from_millis(1500)).await;
    wait_for("the storm ending", TIMEOUT, || async {
        let p = guard.running.guard.snapshot().protection.clone();
        (p.protecting && p.notready.len() == 1).then_some(())
    })
    .await;
    let guard = guard.restart(&env).await?;
    let deleted = wait_until_deleted(&pods, &["web-3"]).await;
    let after = deleted[0].duration_since(healing);
    eprintln!("web-3 released {after:?} after the healing began");
    // The settle period runs from node 1's Ready transition, a time in whole seconds.
    assert!(
        after >= HEAL_SETTLE - Duration::from_secs(1),
        "released {after:?} after the first return, before the settle period ({HEAL_SETTLE:?})"
    );
    wait_for("the release Event of web-3", TIMEOUT, || async {
        released_events(&env.client, &ns)
            .await
            .contains(&"web-3".to_owned())
            .then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_kept(
        &pods,
        &["web-1", "web-2", "patient", "web-4", "web-5"],
        "its node came back, it tolerates the taint, or its node is healthy",
    )
    .await;
    assert_eq!(released_events(&env.client, &ns).await, ["web-3"]);
    guard.stop().await?;
    env.shutdown().await;
    Ok(())
}

/// How long the API server is down in the restart fault.
const API_SERVER_OUTAGE: Duration = Duration::from_secs(10);
/// The node watch must be back this soon after the API server.
const WATCH_BACK_WITHIN: Duration = Duration::from_secs(20);

/// What the API server sends when the node controller deletes `pod` on `node`: the captured
/// taint-eviction DELETE, renamed.
fn taint_eviction_delete(ns: &str, pod: &str, node: &str) -> Value {
    let mut review: Value = serde_json::from_str(include_str!(
        "../crates/eviction-guard/tests/data/pod-delete-node-controller-taint-eviction.json"
    ))
    .expect("the captured review");
    let request = &mut review["request"];
    request["name"] = json!(pod);
    request["namespace"] = json!(ns);
    request["oldObject"]["metadata"]["name"] = json!(pod);
    request["oldObject"]["metadata"]["namespace"] = json!(ns);
    request["oldObject"]["spec"]["nodeName"] = json!(node);
    review
}

/// Fault: the API server killed (SIGKILL) during a storm and back after 10s. Meanwhile the guard
/// refuses from its last known state (a review posted to it as the API server would); once the
/// API server is back its node watch resumes within seconds; protection holds throughout, and
/// when the storm ends with node 3 still dead its refused eviction is released once — not
/// twice, not by the watch's relist.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_server_restart_during_a_storm_keeps_protection_and_releases_once()
-> anyhow::Result<()> {
    use kube_sim::control_plane::Component;
    let Some(mut env) = TestEnv::start_private(storm_cluster()).await else {
        return Ok(());
    };
    let ns = env.namespace.clone();
    let host = WebhookHost::loopback();
    let guard = StormGuard::start(&env, &host, DEFAULT_THRESHOLD, None).await?;
    let pods = storm_with_refused_evictions(&env, &guard, &[1, 2, 3]).await;
    let g = guard.running.guard.clone();
    let errors_before = g.node_watch().errors;

    let cp = env.control_plane().expect("a control plane of its own");
    cp.kill(Component::ApiServer);
    let down = Instant::now();
    // No API server, no admission calls: the review the API server would send, posted to the
    // guard directly, is refused from what it last saw.
    let review = taint_eviction_delete(&ns, "web-2", &env.node(2));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(
            guard.cert.ca_pem.as_bytes(),
        )?)
        .build()?;
    let url = host.url(guard.running.webhook_addr.port(), "/validate");
    let answer: Value = wait_for("an answer from the guard", TIMEOUT, || async {
        http.post(&url)
            .json(&review)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    })
    .await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(answer["response"]["status"]["code"], 403, "{answer}");
    assert!(g.snapshot().protection.protecting);
    tokio::time::sleep(API_SERVER_OUTAGE.saturating_sub(down.elapsed())).await;
    let cp = env.control_plane().expect("a control plane of its own");
    cp.start_component(Component::ApiServer).await?;
    let back = Instant::now();
    let watch = wait_for("the node watch back", TIMEOUT, || async {
        let w = g.node_watch();
        (w.healthy && w.errors > errors_before).then_some(w)
    })
    .await;
    let took = back.elapsed();
    eprintln!(
        "API server down {:?}; node watch healthy {took:?} after it was back ({} watch errors meanwhile)",
        back.duration_since(down),
        watch.errors - errors_before
    );
    assert!(
        took < WATCH_BACK_WITHIN,
        "the node watch took {took:?} to come back"
    );
    assert!(g.snapshot().protection.protecting, "protection held");
    assert_kept(
        &pods,
        &["web-1", "web-2", "web-3"],
        "protected throughout the outage",
    )
    .await;

    // the storm ends with node 3 still dead: its eviction is released, once
    env.restore_node(&env.node(1));
    env.restore_node(&env.node(2));
    wait_until_deleted(&pods, &["web-3"]).await;
    wait_for("the release Event of web-3", TIMEOUT, || async {
        released_events(&env.client, &ns)
            .await
            .contains(&"web-3".to_owned())
            .then_some(())
    })
    .await;
    tokio::time::sleep(QUIET * 2).await;
    assert_eq!(released_events(&env.client, &ns).await, ["web-3"]);
    let released = release_events(&env.client, &ns).await;
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0].count.unwrap_or(1), 1, "released once");
    let endpoints = guard.endpoints()?;
    assert_eq!(
        endpoints.metric("eviction_guard_released_total", &[]).await,
        1.0
    );
    guard.stop().await?;
    env.shutdown().await;
    Ok(())
}

/// Fault: the release leader killed (no drain, its Lease not released) in the middle of a
/// node's pods. The standby takes over once the Lease expires and completes the rest: every
/// refused eviction is released, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_leader_killed_mid_node_is_taken_over_and_releases_each_pod_once()
-> anyhow::Result<()> {
    const CROWD: usize = 12;
    let env = TestEnv::start(storm_cluster()).await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard storm scenario") else {
        env.shutdown().await;
        return Ok(());
    };
    let ns = env.namespace.clone();
    let first = StormGuard::start(&env, &host, DEFAULT_THRESHOLD, None).await?;
    // a second replica: same namespace, Lease and webhook certificate, its own identity
    let mut config = first.config.clone();
    config.release.identity = "guard-b".into();
    let shutdown_b = CancellationToken::new();
    let second = eviction_guard::start(config, shutdown_b.clone()).await?;
    wait_for("the second replica to be ready", TIMEOUT, || async {
        second.readiness.is_ready().then_some(())
    })
    .await;

    // a crowd of pods on node 3, one pod on each other node
    let pods = pods_on_every_node(&env, 4, &[]).await;
    let crowd: Vec<String> = (1..=CROWD).map(|i| format!("crowd-{i}")).collect();
    for name in &crowd {
        pods.create(&PostParams::default(), &pod(&ns, name, &env.node(3), false))
            .await?;
    }
    wait_for("the crowd Running", TIMEOUT, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        (list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count()
            == CROWD + 6)
            .then_some(())
    })
    .await;
    for i in [1, 2, 3] {
        env.fail_node(&env.node(i));
    }
    let mut victims: Vec<&str> = vec!["web-1", "web-2", "web-3"];
    victims.extend(crowd.iter().map(String::as_str));
    // every replica reviews: whichever the API server called recorded the refusals
    wait_for(
        "the controller to give up on every victim",
        TIMEOUT,
        || async {
            let mut all = true;
            for name in &victims {
                let uid = pods.get(name).await.ok()?.metadata.uid?;
                let counted = [&first.running.guard, &second.guard]
                    .iter()
                    .filter_map(|g| g.refusal(&uid))
                    .map(|r| r.count)
                    .sum::<u32>();
                all &= counted >= 5;
            }
            all.then_some(())
        },
    )
    .await;

    // the leader releases; it is killed once it has released the first of node 3's crowd
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = env.api();
    let (oncall_user, oncall_token) = env.service_account_token("oncall", &[]).await;
    env.allow(
        &oncall_user,
        "update",
        "control.ballast.dev",
        "interception",
    )
    .await;
    let oncall = ControlClient::start(
        ClientOptions::new(format!("http://{}", first.running.grpc_addr))
            .token(oncall_token)
            .watch(false),
        &first.shutdown,
    )?;
    oncall.set_mode(Mode::Disabled, "release them").await?;
    wait_for("one of the crowd released", TIMEOUT, || async {
        released_events(&env.client, &ns)
            .await
            .iter()
            .any(|n| n.starts_with("crowd-"))
            .then_some(())
    })
    .await;
    let holder = leases
        .get("eviction-guard-release")
        .await?
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    let killed_at = Instant::now();
    let survivor = if holder == "guard-b" {
        second.abort();
        eprintln!("killed the leader guard-b");
        first.running
    } else {
        let StormGuard { running, .. } = first;
        running.abort();
        eprintln!("killed the leader {holder}");
        second
    };
    let before = released_events(&env.client, &ns).await.len();
    eprintln!("{before} of {} released before the kill", victims.len());
    wait_until_deleted(&pods, &victims).await;
    eprintln!(
        "the standby released the rest {:?} after the kill",
        killed_at.elapsed()
    );
    tokio::time::sleep(QUIET).await;
    // each once: one EvictionReleased Event per pod, none repeated
    let released = release_events(&env.client, &ns).await;
    let mut names: Vec<String> = released
        .iter()
        .filter_map(|e| e.involved_object.name.clone())
        .collect();
    names.sort();
    let mut want: Vec<String> = victims.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "one release Event per victim, none twice");
    assert!(
        released.iter().all(|e| e.count.unwrap_or(1) == 1),
        "{released:?}"
    );
    assert_kept(&pods, &["web-4", "web-5", "patient"], "on healthy nodes").await;
    survivor.abort();
    env.shutdown().await;
    Ok(())
}

/// The resourceVersion of a list of the scenario's nodes now: a watch from there sees every
/// later change.
async fn nodes_version(env: &TestEnv) -> String {
    Api::<Node>::all(env.client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .expect("nodes listed")
        .metadata
        .resource_version
        .expect("a list resourceVersion")
}

/// Fault: the guard's node watch expires (`410 Expired` on resuming: etcd compacted behind a
/// restarted API server) while it cannot see the cluster, and three nodes fail meanwhile. Back,
/// it lists the nodes again and protects them: a drain's eviction there is refused. The storm
/// it missed the start of is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_that_failed_while_the_guards_watch_expired_are_protected_once_it_lists_again()
-> anyhow::Result<()> {
    use ballast_e2e::harness::proxy::{FaultProxy, assert_resume_expired};
    let Some(mut env) = TestEnv::start_isolated(storm_cluster()).await else {
        return Ok(());
    };
    let Some(host) = env.webhook_host_or_skip("the eviction-guard storm scenario") else {
        env.shutdown().await;
        return Ok(());
    };
    let Some((proxy, client)) = FaultProxy::in_front_of(&env, "the guard's watch expiry").await
    else {
        env.shutdown().await;
        return Ok(());
    };
    let guard = StormGuard::start_with(&env, &host, None, |config| {
        config.kube = eviction_guard::KubeAccess::Client(client);
    })
    .await?;
    let g = guard.running.guard.clone();
    // the failing nodes' pods tolerate the taint: nothing but a drain would evict them
    let pods = pods_on_every_node(&env, 4, &[1, 2, 3]).await;
    let seen = nodes_version(&env).await;
    let errors_before = g.node_watch().errors;

    proxy.cut();
    for i in [1, 2, 3] {
        env.fail_node(&env.node(i));
    }
    wait_for("three nodes NotReady", TIMEOUT, || async {
        (notready_nodes(&env).await? == 3).then_some(())
    })
    .await;
    env.expire_watches().await;
    assert_resume_expired(&Api::<Node>::all(env.client.clone()), &seen).await;
    assert!(
        !g.snapshot().protection.protecting,
        "blind, the guard has not seen the storm yet"
    );
    let restored = Instant::now();
    proxy.restore();
    wait_for("protection", TIMEOUT, || async {
        g.snapshot().protection.protecting.then_some(())
    })
    .await;
    eprintln!(
        "protecting {:?} after the guard could see the cluster again ({} node watch errors)",
        restored.elapsed(),
        g.node_watch().errors - errors_before
    );
    assert!(g.node_watch().healthy);
    let (code, message) = api_error(pods.evict("web-2", &EvictParams::default()).await);
    assert_eq!(code, 429, "{message}");
    assert_kept(
        &pods,
        &["web-1", "web-2", "web-3", "web-4", "web-5", "patient"],
        "a storm",
    )
    .await;
    guard.stop().await?;
    drop(proxy);
    env.shutdown().await;
    Ok(())
}

/// Samples whether each of two replicas leads the release, every few milliseconds, until
/// stopped: (time since start, first leads, second leads).
struct LeadershipSamples {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Vec<(Duration, bool, bool)>>,
}

impl LeadershipSamples {
    fn start(first: &eviction_guard::Running, second: &eviction_guard::Running) -> Self {
        let a = first.leading.clone().expect("release on");
        let b = second.leading.clone().expect("release on");
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut samples = Vec::new();
            while !until.is_cancelled() {
                samples.push((start.elapsed(), *a.borrow(), *b.borrow()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        });
        LeadershipSamples { stop, task }
    }

    async fn finish(self) -> Vec<(Duration, bool, bool)> {
        self.stop.cancel();
        self.task.await.expect("the sampler ends")
    }
}

/// Fault: the API server answers one guard replica slowly (every byte back held 1s, then 2s),
/// the other at once. Its webhook still answers within its deadline from what it knows (a
/// drain's eviction during the storm it saw late is refused in well under a second), it stays
/// ready, it keeps leading the release while a renewal fits its call timeout (1s slow), and once
/// it does not (2s slow) it stops leading before the other replica takes over: at no sampled
/// moment do both lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_api_server_keeps_the_guards_deadlines_and_the_leader_steps_down_before_a_takeover()
-> anyhow::Result<()> {
    use ballast_e2e::harness::proxy::FaultProxy;
    // renew deadline 6s, each call bounded by 3s: a renewal (a read and a write) fits at 1s
    // per answer, not at 2s
    const LEASE: Duration = Duration::from_secs(9);
    let env = TestEnv::start(storm_cluster()).await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard storm scenario") else {
        env.shutdown().await;
        return Ok(());
    };
    let Some((proxy, client)) = FaultProxy::in_front_of(&env, "the slow API server").await else {
        env.shutdown().await;
        return Ok(());
    };
    // the slow replica serves the webhook and leads first
    let slow = StormGuard::start_with(&env, &host, None, |config| {
        config.kube = eviction_guard::KubeAccess::Client(client);
        config.release.lease_duration = LEASE;
        config.release.identity = "slow".into();
    })
    .await?;
    let slow_leads = slow.running.leading.clone().expect("release on");
    wait_for("the slow replica to lead", TIMEOUT, || async {
        slow_leads.borrow().then_some(())
    })
    .await;
    let mut config = slow.config.clone();
    config.kube = eviction_guard::KubeAccess::Client(env.client.clone());
    config.release.identity = "prompt".into();
    let shutdown_prompt = CancellationToken::new();
    let prompt = eviction_guard::start(config, shutdown_prompt.clone()).await?;
    wait_for("the prompt replica to be ready", TIMEOUT, || async {
        prompt.readiness.is_ready().then_some(())
    })
    .await;
    let pods = pods_on_every_node(&env, 4, &[1, 2, 3]).await;

    // 1s slow: a renewal still fits; the leader keeps leading through a whole renew deadline
    proxy.delay(Duration::from_secs(1));
    let samples = LeadershipSamples::start(&slow.running, &prompt);
    tokio::time::sleep(LEASE * 2 / 3 + Duration::from_secs(1)).await;
    let calm = samples.finish().await;
    assert!(
        calm.iter().all(|&(_, a, b)| a && !b),
        "the slow replica kept leading: {:?}",
        calm.iter().find(|&&(_, a, b)| !a || b)
    );

    // 2s slow: a storm, seen late, still protects; answers come from the guard's own state
    proxy.delay(Duration::from_secs(2));
    let samples = LeadershipSamples::start(&slow.running, &prompt);
    for i in [1, 2, 3] {
        env.fail_node(&env.node(i));
    }
    let g = slow.running.guard.clone();
    let readiness = slow.running.readiness.clone();
    wait_for("the slow replica to protect", TIMEOUT, || async {
        assert!(readiness.is_ready(), "the slow replica stays ready");
        g.snapshot().protection.protecting.then_some(())
    })
    .await;
    // a deletion carries its pod: answered from the guard's own state at once
    let asked = Instant::now();
    let (code, message) = api_error(pods.delete("web-3", &DeleteParams::default()).await);
    let deletion = asked.elapsed();
    assert_eq!(code, 403, "{message}");
    // an eviction names its pod only: one read through the slow API server, bounded
    let asked = Instant::now();
    let (code, message) = api_error(pods.evict("web-2", &EvictParams::default()).await);
    let eviction = asked.elapsed();
    assert_eq!(code, 429, "{message}");
    eprintln!(
        "with the guard's API server 2s slow: a deletion refused in {deletion:?}, a drain's \
         eviction in {eviction:?}"
    );
    assert!(
        deletion < Duration::from_secs(1),
        "the deletion was judged from the guard's own state: {deletion:?}"
    );
    let deadline = Duration::from_secs(eviction_guard::webhook_config::TIMEOUT_SECONDS as u64);
    assert!(
        eviction < deadline,
        "the eviction was answered within the webhook's {deadline:?}: {eviction:?}"
    );
    wait_for("the prompt replica to take over", TIMEOUT, || async {
        prompt
            .leading
            .as_ref()
            .is_some_and(|l| *l.borrow())
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let slowed = samples.finish().await;
    let stepped_down = slowed
        .iter()
        .find(|&&(_, a, _)| !a)
        .map(|&(t, _, _)| t)
        .expect("the slow replica stopped leading");
    let took_over = slowed
        .iter()
        .find(|&&(_, _, b)| b)
        .map(|&(t, _, _)| t)
        .expect("the prompt replica took over");
    eprintln!(
        "2s slow: the leader stepped down {stepped_down:?} after, the other took over \
         {took_over:?} after ({:?} without a leader)",
        took_over.saturating_sub(stepped_down)
    );
    assert!(
        slowed.iter().all(|&(_, a, b)| !(a && b)),
        "two leaders at once: {:?}",
        slowed.iter().find(|&&(_, a, b)| a && b)
    );
    assert!(stepped_down < took_over);
    // and the replica that stepped down let its record expire rather than keep renewing it
    // (a slow API server applies writes whose answers come too late)
    assert!(
        took_over - stepped_down < LEASE + Duration::from_secs(3),
        "no leader for {:?}",
        took_over - stepped_down
    );
    assert!(readiness.is_ready(), "the slow replica stays ready");
    assert_kept(
        &pods,
        &["web-1", "web-2", "web-3", "web-4", "web-5", "patient"],
        "a storm",
    )
    .await;

    shutdown_prompt.cancel();
    prompt.wait().await?;
    proxy.restore();
    slow.stop().await?;
    drop(proxy);
    env.shutdown().await;
    Ok(())
}
