//! The taint eviction controller gives up as Kubernetes' does: a pod whose NoExecute taint is not
//! tolerated is marked `DisruptionTarget` and deleted; when a webhook refuses the DELETE, the
//! controller tries five times, then leaves the pod alone — also after the webhook starts to
//! allow, and after the pod's labels change — until the node's NoExecute taints change.
//!
//! The node is one of the scenario's, healthy (its kubelet heartbeats, so the node lifecycle
//! controller leaves it alone) and tainted by the test; on a real cluster the API server must
//! reach the webhook on this host (`E2E_WEBHOOK_HOST`). A second scenario checks how the node
//! lifecycle controller taints failed nodes: rate-limited per zone, and not in a zone in partial
//! disruption. Both run on kube-sim and on a real control plane, whose own controllers are the
//! judge.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use ballast_e2e::{SimConfig, TestEnv, wait_for};
use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Longest wait for any condition: on a real control plane a node grace and the node
/// controller's rate limit (10s a node at the default 0.1 node/s) come first.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long to watch for attempts that must not come: many times the controller's pause.
const QUIET: Duration = Duration::from_millis(1500);
const NODE_CONTROLLER: &str = "system:serviceaccount:kube-system:node-controller";

/// A validating webhook over TLS refusing pod DELETEs while `refuse` is set; it counts the
/// DELETEs it saw from the node controller, by pod name.
struct RefusingWebhook {
    url: String,
    ca_bundle: String,
    refuse: Arc<AtomicBool>,
    deletes: Arc<Mutex<BTreeMap<String, u32>>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl RefusingWebhook {
    async fn start(host: &str) -> RefusingWebhook {
        ballast_runtime::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let certs = ballast_runtime::tls::generate(&[host, "localhost"]).unwrap();
        let (cert, key) = certs.write_to(dir.path()).unwrap();
        let tls = ballast_runtime::tls::ReloadingTls::load(&cert, &key).unwrap();
        let refuse = Arc::new(AtomicBool::new(true));
        let deletes: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
        let (r, d) = (refuse.clone(), deletes.clone());
        let review = move |Json(body): Json<Value>| {
            let (refuse, deletes) = (r.clone(), d.clone());
            async move {
                let req = &body["request"];
                let refusing = refuse.load(Ordering::SeqCst);
                if req["operation"] == "DELETE" && req["userInfo"]["username"] == NODE_CONTROLLER {
                    let name = req["name"].as_str().unwrap_or_default().to_string();
                    *deletes.lock().unwrap().entry(name).or_default() += 1;
                }
                let response = if refusing {
                    json!({"uid": req["uid"], "allowed": false,
                        "status": {"code": 403, "reason": "Forbidden", "message": "pod is protected"}})
                } else {
                    json!({"uid": req["uid"], "allowed": true})
                };
                Json(
                    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "response": response}),
                )
            }
        };
        let router = axum::Router::new().route("/review", post(review));
        let listener = tokio::net::TcpListener::bind(format!("{host}:0"))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        tokio::spawn(ballast_runtime::http::serve(
            listener,
            router,
            Some(tls),
            stop.clone(),
        ));
        RefusingWebhook {
            url: format!("https://{host}:{port}/review"),
            ca_bundle: base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem),
            refuse,
            deletes,
            stop,
            _dir: dir,
        }
    }

    fn deletes(&self, pod: &str) -> u32 {
        self.deletes
            .lock()
            .unwrap()
            .get(pod)
            .copied()
            .unwrap_or_default()
    }
}

fn taint(key: &str) -> Value {
    json!({"key": key, "value": "yes", "effect": "NoExecute"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_taint_evictions_stop_after_five_attempts_until_the_node_taints_change() {
    let env = TestEnv::start(
        SimConfig::default()
            .nodes(1)
            .kubelet(true)
            .taint_eviction(true)
            .eviction_retry(Duration::from_millis(50)),
    )
    .await;
    let Some(host) = env.webhook_host_or_skip("the taint eviction scenario's refusing webhook")
    else {
        env.shutdown().await;
        return;
    };
    let host = host.host;
    let ns = env.namespace.clone();
    let hook = RefusingWebhook::start(&host).await;
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("refuse-{ns}")},
        "webhooks": [{"name": "refuse.e2e.ballast.dev",
            "clientConfig": {"url": hook.url, "caBundle": hook.ca_bundle},
            "namespaceSelector": env.namespace_selector(),
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["pods"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail", "timeoutSeconds": 5},
            env.webhook_probe("refuse")]
    }))
    .unwrap();
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(env.client.clone());
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    env.wait_for_webhook_probe("refuse", true).await;

    // two pods bound to the node: one tolerating everything forever
    let node_name = env.node(1);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let pods: Api<Pod> = env.api();
    let mk = |name: &str, tolerations: Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node_name, "tolerations": tolerations,
                     "containers": [{"name": "app", "image": "registry.example/web:1.0"}]}}))
        .unwrap()
    };
    pods.create(&PostParams::default(), &mk("victim", json!([])))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &mk(
            "tolerant",
            json!([{"operator": "Exists", "effect": "NoExecute"}]),
        ),
    )
    .await
    .unwrap();
    wait_for("both pods Running", TIMEOUT, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        (list.items.len() == 2
            && list
                .items
                .iter()
                .all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
        .then_some(())
    })
    .await;

    // the node gets a NoExecute taint the victim does not tolerate: five refused attempts
    let pp = PatchParams::default();
    set_test_taints(&nodes, &node_name, &["e2e.ballast.dev/evict"]).await;
    wait_for("five refused DELETEs of the victim", TIMEOUT, || async {
        (hook.deletes("victim") >= 5).then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        hook.deletes("victim"),
        5,
        "the controller gives up after five"
    );
    assert_eq!(hook.deletes("tolerant"), 0);
    let victim = pods.get("victim").await.unwrap();
    assert!(victim.metadata.deletion_timestamp.is_none());
    let conditions = victim.status.and_then(|s| s.conditions).unwrap_or_default();
    let target = conditions
        .iter()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("DisruptionTarget set before the DELETE");
    assert_eq!(target.status, "True");
    assert_eq!(target.reason.as_deref(), Some("DeletionByTaintManager"));
    assert_eq!(
        target.message.as_deref(),
        Some("Taint manager: deleting due to NoExecute taint")
    );
    let events: Api<Event> = env.api();
    let marked = format!("Marking for deletion Pod {ns}/victim");
    wait_for("the controller's event for the victim", TIMEOUT, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .any(|e| {
                e.reason.as_deref() == Some("TaintManagerEviction")
                    && e.message.as_deref() == Some(marked.as_str())
            })
            .then_some(())
    })
    .await;

    // the webhook allows again, the pod's labels change: still nothing
    hook.refuse.store(false, Ordering::SeqCst);
    pods.patch(
        "victim",
        &pp,
        &Patch::Merge(&json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(QUIET).await;
    assert!(
        pods.get_opt("victim")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
        "given up: the victim stays"
    );
    assert_eq!(hook.deletes("victim"), 5);

    // a change of the node's NoExecute taints starts the eviction again
    set_test_taints(
        &nodes,
        &node_name,
        &["e2e.ballast.dev/evict", "e2e.ballast.dev/again"],
    )
    .await;
    // its kubelet confirms the deletion
    wait_for("the victim deleted", TIMEOUT, || async {
        pods.get_opt("victim")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(hook.deletes("victim"), 6);
    assert!(
        pods.get_opt("tolerant").await.unwrap().is_some(),
        "a pod tolerating the taints forever stays"
    );

    hook.stop.cancel();
    configs
        .delete(&format!("refuse-{ns}"), &DeleteParams::default())
        .await
        .unwrap();
    // the stopped webhook fails closed until the API server has the deletion in effect
    env.wait_for_webhook_probe("refuse", false).await;
    pods.delete("tolerant", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the tolerant pod deleted", TIMEOUT, || async {
        pods.get_opt("tolerant")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    env.shutdown().await;
}

/// Sets the node's test taints (keys under `e2e.ballast.dev/`, NoExecute) to `keys`, keeping
/// every other taint it has.
async fn set_test_taints(nodes: &Api<Node>, name: &str, keys: &[&str]) {
    let node = nodes.get(name).await.unwrap();
    let mut taints: Vec<Value> = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !t.key.starts_with("e2e.ballast.dev/"))
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    taints.extend(keys.iter().map(|k| taint(k)));
    nodes
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": taints}})),
        )
        .await
        .unwrap();
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
        })
}

fn is_unknown(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Ready" && c.status == "Unknown")
        })
}

/// The node lifecycle controller taints NotReady nodes one per zone per interval, and none in a
/// zone in partial disruption (more than two and at least 55 % of its nodes NotReady) — but for
/// the one node a real controller's tainting pass may catch in the instant between seeing the
/// zone's nodes NotReady and seeing the zone's new state: its per-zone limiter allows a first
/// node at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tainting_is_rate_limited_per_zone_and_stops_in_partial_disruption() {
    // twelve nodes: zones a, b, c in turn, so zone a holds nodes 1, 4, 7 and 10, zone b nodes
    // 2, 5, 8 and 11
    let env = TestEnv::start(
        SimConfig::default()
            .nodes(12)
            .node_grace(Duration::from_millis(200))
            .taint_interval(Duration::from_secs(1)),
    )
    .await;
    let interval = env.taint_interval();
    let nodes: Api<Node> = Api::all(env.client.clone());
    let zone_b = [env.node(2), env.node(5)];
    let zone_a = [env.node(1), env.node(4), env.node(7)];
    let tainted = |names: &[String]| {
        let (nodes, names) = (nodes.clone(), names.to_vec());
        async move {
            let mut count = 0;
            for n in &names {
                if nodes.get(n).await.is_ok_and(|n| has_unreachable_taint(&n)) {
                    count += 1;
                }
            }
            count
        }
    };
    let all_unknown = |names: &[String]| {
        let (nodes, names) = (nodes.clone(), names.to_vec());
        async move {
            let mut all = true;
            for n in &names {
                all &= nodes.get(n).await.ok().is_some_and(|n| is_unknown(&n));
            }
            all
        }
    };
    // two nodes of zone b fail together (2 of 4, normal): tainted one after the other, an
    // interval apart; at the same time three of zone a's four fail (partial disruption)
    for n in zone_b.iter().chain(&zone_a) {
        env.fail_node(n);
    }
    let start = std::time::Instant::now();
    let mut first = None;
    let mut both = None;
    let mut zone_a_unknown = None;
    while both.is_none() {
        assert!(
            start.elapsed() < TIMEOUT,
            "zone b's nodes never both tainted"
        );
        let count = tainted(&zone_b).await;
        if count >= 1 && first.is_none() {
            first = Some(std::time::Instant::now());
        }
        if count == 2 {
            both = Some(std::time::Instant::now());
        }
        if zone_a_unknown.is_none() && all_unknown(&zone_a).await {
            zone_a_unknown = Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let apart = both.unwrap() - first.unwrap();
    // the polling's delay in seeing the first taint, at most
    let margin = Duration::from_millis(150).max(interval / 10);
    eprintln!("zone b's nodes tainted {apart:?} apart (interval {interval:?})");
    assert!(
        apart >= interval - margin,
        "the second node of the zone waits for the rate limit: {apart:?}"
    );

    // zone a's three nodes: NotReady, but not tainted (partial disruption) for longer than a
    // zone in normal state takes to taint a second node
    let zone_a_unknown = match zone_a_unknown {
        Some(t) => t,
        None => {
            wait_for("zone a's three nodes Ready=Unknown", TIMEOUT, || async {
                all_unknown(&zone_a).await.then(std::time::Instant::now)
            })
            .await
        }
    };
    let quiet_until = zone_a_unknown + interval + Duration::from_secs(1);
    tokio::time::sleep(quiet_until.saturating_duration_since(std::time::Instant::now())).await;
    let count = tainted(&zone_a).await;
    assert!(
        count <= 1,
        "{count} of zone a's three NotReady nodes tainted: none in a zone in partial \
         disruption, but for one caught before the controller saw the zone's state"
    );
    // one of them recovers: 2 of 4 is normal again, and tainting resumes for the other two
    // (on a real controller after the interval: its zone's new limiter starts drained)
    let before = tainted(&zone_a[..2]).await;
    env.restore_node(&zone_a[2]);
    wait_for("zone a tainting again", TIMEOUT, || async {
        (tainted(&zone_a[..2]).await > before).then_some(())
    })
    .await;
    env.shutdown().await;
}
