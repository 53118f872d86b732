//! The taint eviction controller gives up as Kubernetes' does: a pod whose NoExecute taint is not
//! tolerated is marked `DisruptionTarget` and deleted; when a webhook refuses the DELETE, the
//! controller tries five times, then leaves the pod alone — also after the webhook starts to
//! allow, and after the pod's labels change — until the node's NoExecute taints change.
//!
//! The node is a Node object with no kubelet behind it, tainted by the test, so the scenario needs
//! no simulator powers; on a real cluster the API server must reach the webhook on this host
//! (`E2E_WEBHOOK_HOST`), and the node lifecycle controller leaves the node alone for its grace
//! period (40 s or more), longer than the scenario takes.

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

const TIMEOUT: Duration = Duration::from_secs(20);
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
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["pods"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail", "timeoutSeconds": 5}]
    }))
    .unwrap();
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(env.client.clone());
    configs
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    // a node with no kubelet, and two pods bound to it: one tolerating everything forever
    let node_name = format!("{ns}-node");
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": node_name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
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

    // the node gets a NoExecute taint the victim does not tolerate: five refused attempts
    let taints = |keys: &[&str]| json!({"spec": {"taints": keys.iter().map(|k| taint(k)).collect::<Vec<_>>()}});
    let pp = PatchParams::default();
    nodes
        .patch(
            &node_name,
            &pp,
            &Patch::Merge(&taints(&["e2e.ballast.dev/evict"])),
        )
        .await
        .unwrap();
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
    let marked = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("TaintManagerEviction")
                && e.message.as_deref() == Some(&format!("Marking for deletion Pod {ns}/victim"))
        });
    assert!(marked, "the controller's event for the victim");

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
        pods.get_opt("victim").await.unwrap().is_some(),
        "given up: the victim stays"
    );
    assert_eq!(hook.deletes("victim"), 5);

    // a change of the node's NoExecute taints starts the eviction again
    nodes
        .patch(
            &node_name,
            &pp,
            &Patch::Merge(&taints(&["e2e.ballast.dev/evict", "e2e.ballast.dev/again"])),
        )
        .await
        .unwrap();
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
    pods.delete("tolerant", &DeleteParams::default())
        .await
        .unwrap();
    nodes
        .delete(&node_name, &DeleteParams::default())
        .await
        .unwrap();
    env.shutdown().await;
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
/// zone in partial disruption (more than two and at least 55 % of its nodes NotReady).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tainting_is_rate_limited_per_zone_and_stops_in_partial_disruption() {
    // twelve nodes: zones a, b, c in turn, so zone-a holds node-1, -4, -7 and -10
    let interval = Duration::from_secs(1);
    let env = TestEnv::start(
        SimConfig::default()
            .nodes(12)
            .node_grace(Duration::from_millis(200))
            .taint_interval(interval),
    )
    .await;
    let Some(sim) = env.sim_or_skip("failing nodes") else {
        env.shutdown().await;
        return;
    };
    let nodes: Api<Node> = Api::all(env.client.clone());
    // two nodes of zone-b fail together: tainted one after the other, an interval apart
    sim.fail_node("node-2");
    sim.fail_node("node-5");
    let start = std::time::Instant::now();
    let mut first = None;
    let mut both = None;
    while both.is_none() {
        assert!(
            start.elapsed() < TIMEOUT,
            "zone-b's nodes never both tainted"
        );
        let mut tainted = 0;
        for n in ["node-2", "node-5"] {
            if nodes.get(n).await.is_ok_and(|n| has_unreachable_taint(&n)) {
                tainted += 1;
            }
        }
        if tainted >= 1 && first.is_none() {
            first = Some(std::time::Instant::now());
        }
        if tainted == 2 {
            both = Some(std::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let apart = both.unwrap() - first.unwrap();
    assert!(
        apart >= interval - Duration::from_millis(150),
        "the second node of the zone waits for the rate limit: {apart:?}"
    );

    // three of zone-a's four nodes fail: NotReady, but not tainted (partial disruption)
    for n in ["node-1", "node-4", "node-7"] {
        sim.fail_node(n);
    }
    wait_for("zone-a's three nodes Ready=Unknown", TIMEOUT, || async {
        let mut all = true;
        for n in ["node-1", "node-4", "node-7"] {
            all &= nodes.get(n).await.ok().is_some_and(|n| is_unknown(&n));
        }
        all.then_some(())
    })
    .await;
    tokio::time::sleep(interval * 2).await;
    for n in ["node-1", "node-4", "node-7"] {
        let node = nodes.get(n).await.unwrap();
        assert!(
            !has_unreachable_taint(&node),
            "{n}: no taint in a zone in partial disruption"
        );
    }
    // one of them recovers: 2 of 4 is normal again, the other two get tainted
    sim.restore_node("node-7");
    wait_for("zone-a tainting again", TIMEOUT, || async {
        let mut all = true;
        for n in ["node-1", "node-4"] {
            all &= nodes
                .get(n)
                .await
                .ok()
                .is_some_and(|n| has_unreachable_taint(&n));
        }
        all.then_some(())
    })
    .await;
    env.shutdown().await;
}
