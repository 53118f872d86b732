//! The webhook and the seed's callbacks served in-process over real TLS (rcgen certificates),
//! driven with AdmissionReview bodies captured from a Kubernetes 1.36 API server.

use std::sync::Arc;

use ballast_runtime::auth::Authenticator;
use ballast_runtime::tls::ReloadingTls;
use chrono::Utc;
use eviction_guard::callback::Callbacks;
use eviction_guard::rules::Policy;
use eviction_guard::storm::{NodeState, StormConfig};
use eviction_guard::{Guard, webhook_router};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DELETE_TAINT: &str = include_str!("data/pod-delete-node-controller-taint-eviction.json");
const STATUS_NOT_READY: &str =
    include_str!("data/pod-status-update-node-controller-not-ready.json");
const STATUS_DISRUPTION: &str =
    include_str!("data/pod-status-update-node-controller-disruption-target.json");
const STATUS_READY: &str = include_str!("data/pod-status-update-ready.json");
const EVICTION: &str = include_str!("data/pod-eviction-create.json");
const CREATE: &str = include_str!("data/pod-create.json");
const CREATE_DRY_RUN: &str = include_str!("data/pod-create-dry-run.json");

fn node(name: &str, ready: bool) -> NodeState {
    NodeState {
        name: name.to_owned(),
        ready,
        since: Some(Utc::now()),
        reason: if ready {
            "KubeletReady"
        } else {
            "NodeStatusUnknown"
        }
        .to_owned(),
        zone: None,
        out_of_service: false,
    }
}

/// A guard in a storm: node-a (the fixtures' node), node-b, node-c NotReady; node-d Ready.
fn storm_guard() -> Arc<Guard> {
    let guard = Guard::new(StormConfig::default(), None);
    guard.replace_workers([
        node("node-a", false),
        node("node-b", false),
        node("node-c", false),
        node("node-d", true),
    ]);
    guard
}

struct Server {
    url: String,
    http: reqwest::Client,
    ca_pem: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ballast_runtime::Error>>,
}

async fn serve(guard: Arc<Guard>, writes_per_second: u32) -> Server {
    ballast_runtime::tls::install_crypto_provider();
    let _ = ballast_runtime::metrics::prometheus();
    let dir = tempfile::tempdir().unwrap();
    let cert = ballast_runtime::tls::generate(&["localhost", "127.0.0.1"]).unwrap();
    let (cert_path, key_path) = cert.write_to(dir.path()).unwrap();
    let tls = ReloadingTls::load(&cert_path, &key_path).unwrap();
    let callbacks = Callbacks::new(
        guard.clone(),
        Authenticator::AllowAll,
        false,
        writes_per_second.try_into().unwrap(),
    );
    let router = webhook_router(guard, Policy::default(), None, callbacks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ballast_runtime::http::serve(
        listener,
        router,
        Some(tls),
        shutdown.clone(),
    ));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    Server {
        url: format!("https://localhost:{}", addr.port()),
        http,
        ca_pem: cert.ca_pem.clone(),
        shutdown,
        task,
    }
}

impl Server {
    async fn review(&self, body: &str) -> (reqwest::Version, Value) {
        let resp = self
            .http
            .post(format!("{}/validate", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let version = resp.version();
        let review: Value = resp.json().await.unwrap();
        (version, review["response"].clone())
    }

    async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        self.post_with(&self.http, path, body).await
    }

    /// Like `post_raw`, from another local address (any of 127.0.0.0/8 reaches the server).
    async fn post_from(&self, local: &str, path: &str, body: Vec<u8>) -> (u16, String) {
        let port = self.url.rsplit(':').next().unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .local_address(Some(local.parse().unwrap()))
            .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
            .build()
            .unwrap();
        self.post_with(&client, path, body).await
    }

    async fn post_with(&self, http: &reqwest::Client, path: &str, body: Vec<u8>) -> (u16, String) {
        let resp = http
            .post(format!("{}{path}", self.url))
            .body(body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn counter(name: &str, op: &str) -> f64 {
    let text = ballast_runtime::metrics::prometheus().render();
    ballast_runtime::metrics::sample(&text, name, &[("operation", op)]).unwrap_or(0.0)
}

/// The counters are process-wide and the tests of this file run in parallel: the tests that
/// review pods hold this while they do, so one test's counter deltas are its own.
static COUNTERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn with_dry_run(body: &str) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    v["request"]["dryRun"] = json!(true);
    v.to_string()
}

#[tokio::test]
async fn refuses_node_controller_traffic_for_pods_on_notready_nodes_over_tls_and_counts_it() {
    let _counters = COUNTERS.lock().await;
    let server = serve(storm_guard(), 5).await;
    let deletes = counter("eviction_intercepted_total", "delete");
    let statuses = counter("eviction_intercepted_total", "status");

    let (version, resp) = server.review(DELETE_TAINT).await;
    assert_eq!(
        version,
        reqwest::Version::HTTP_2,
        "the API server speaks HTTP/2"
    );
    assert_eq!(resp["uid"], "ed149109-be34-4e8f-bed1-f37d47731441");
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 403);
    assert_eq!(resp["status"]["reason"], "Forbidden");
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("eviction-guard refused deletion of pod fixtures/web-a: node node-a is NotReady (NodeStatusUnknown)"),
        "{msg}"
    );
    assert!(
        msg.contains("3 of 4 worker nodes NotReady within 5m"),
        "{msg}"
    );
    assert!(msg.contains("/callback/disable-interception"), "{msg}");

    for body in [STATUS_NOT_READY, STATUS_DISRUPTION] {
        let (_, resp) = server.review(body).await;
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 403);
    }
    for body in [STATUS_READY, CREATE, CREATE_DRY_RUN] {
        let (_, resp) = server.review(body).await;
        assert_eq!(resp["allowed"], true, "{resp}");
    }

    // dry-run: the same decision, but the counters do not move
    let (_, resp) = server.review(&with_dry_run(DELETE_TAINT)).await;
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 403);

    assert_eq!(
        counter("eviction_intercepted_total", "delete") - deletes,
        1.0
    );
    assert_eq!(
        counter("eviction_intercepted_total", "status") - statuses,
        2.0
    );
    let text = ballast_runtime::metrics::prometheus().render();
    assert!(
        text.contains(
            "admission_duration_seconds_count{webhook=\"eviction-guard\",operation=\"DELETE\"}"
        ),
        "latency histogram recorded"
    );
    server.stop().await;
}

#[tokio::test]
async fn eviction_whose_pod_cannot_be_looked_up_is_refused_as_retryable_during_a_storm() {
    let _counters = COUNTERS.lock().await;
    let server = serve(storm_guard(), 5).await;
    let (_, resp) = server.review(EVICTION).await;
    assert_eq!(resp["allowed"], false);
    assert_eq!(resp["status"]["code"], 429);
    assert_eq!(resp["status"]["reason"], "TooManyRequests");
    assert_eq!(
        resp["status"]["details"],
        serde_json::json!({"retryAfterSeconds": 10}),
        "a retry hint the API server turns into Retry-After"
    );
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("eviction-guard could not look up pod fixtures/drain-me"),
        "{msg}"
    );
    assert!(msg.ends_with("retry the eviction"), "{msg}");
    server.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_a_clear_error_and_the_server_keeps_serving() {
    let _counters = COUNTERS.lock().await;
    let server = serve(storm_guard(), 5).await;
    let mut no_uid: Value = serde_json::from_str(DELETE_TAINT).unwrap();
    no_uid["request"]["uid"] = json!("");
    let mut wrong_kind: Value = serde_json::from_str(DELETE_TAINT).unwrap();
    wrong_kind["kind"] = json!("Pod");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "truncated",
            DELETE_TAINT.as_bytes()[..DELETE_TAINT.len() / 2].to_vec(),
            400,
            "failed to decode the AdmissionReview",
        ),
        (
            "wrong kind",
            wrong_kind.to_string().into_bytes(),
            400,
            "expected kind AdmissionReview",
        ),
        (
            "missing request",
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#.to_vec(),
            400,
            "the AdmissionReview has no request",
        ),
        (
            "missing uid",
            no_uid.to_string().into_bytes(),
            400,
            "empty uid",
        ),
        ("oversized", vec![b' '; 5 * 1024 * 1024], 413, "larger than"),
    ];
    for (name, body, code, text) in cases {
        let (status, message) = server.post_raw("/validate", body).await;
        assert_eq!(status, code, "{name}: {message}");
        assert!(message.contains(text), "{name}: {message}");
    }
    let (_, resp) = server.review(DELETE_TAINT).await;
    assert_eq!(
        resp["status"]["code"], 403,
        "still serving after bad bodies"
    );
    server.stop().await;
}

#[tokio::test]
async fn seed_callbacks_disable_and_enable_interception_with_the_seed_json_shapes() {
    let _counters = COUNTERS.lock().await;
    let guard = storm_guard();
    let server = serve(guard.clone(), 1).await;

    let status: Value = server
        .http
        .get(format!("{}/callback/status", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "success");
    assert_eq!(status["data"]["intercepting"], true);
    assert_eq!(
        status["data"]["notReadyNodes"],
        json!(["node-a", "node-b", "node-c"])
    );
    assert_eq!(status["data"]["mode"], "auto");
    assert_eq!(
        status["data"]["reason"],
        "3 of 4 worker nodes NotReady within 5m"
    );

    let (code, body) = server
        .post_raw(
            "/callback/disable-interception",
            br#"{"reason":"drain rack 4"}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["status"], "success");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "Interception disabled successfully; once protection lifts for a node still NotReady \
             and tainted NoExecute, eviction-guard completes the node controller's refused evictions"
        ),
        "disabling says what happens to the refused evictions: {message}"
    );
    let (_, resp) = server.review(DELETE_TAINT).await;
    assert_eq!(resp["allowed"], true, "disabled lets the deletion through");
    assert_eq!(guard.mode().reason, "drain rack 4");
    assert_eq!(guard.mode().changed_by, "local");

    // one write per second: an immediate second write is refused
    let (code, body) = server
        .post_raw("/callback/enable-interception", Vec::new())
        .await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "error"
    );
    // ... from that client only: a caller from another address is not held back.
    let (code, body) = server
        .post_from(
            "127.0.0.2",
            "/callback/disable-interception",
            br#"{"reason":"second operator"}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(guard.mode().reason, "second operator");

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, body) = server
        .post_raw("/callback/enable-interception", Vec::new())
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"status": "success", "message": "Interception enabled successfully"})
    );
    let (_, resp) = server.review(DELETE_TAINT).await;
    assert_eq!(resp["allowed"], false, "back to AUTO: protection resumes");

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (code, body) = server
        .post_raw("/callback/disable-interception", b"{not json".to_vec())
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("failed to read the request body as JSON"),
        "{body}"
    );
    assert_eq!(guard.mode().mode, ballast_control::Mode::Auto);
    server.stop().await;
}
