//! How the API server calls admission webhooks, checked against a real server's answers: TLS
//! verification as Go's crypto/x509 does it, `matchConditions` (CEL) with their failurePolicy
//! (and the eviction-guard's own conditions at work), and a webhook's `retryAfterSeconds`
//! turned into a `Retry-After` header.
//!
//! The webhooks are served in-process; on a real cluster these scenarios run when
//! `E2E_WEBHOOK_HOST` names an address of this host the API server can reach.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use ballast_e2e::{SimConfig, TestEnv, WebhookHost, wait_for};
use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Long enough for a real API server to pick up a new webhook configuration.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A certificate and its key, PEM.
struct Pem {
    cert: String,
    key: String,
}

fn params(names: &[&str], common_name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("certificate names");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p
}

/// A self-signed serving certificate with `CA:TRUE`, as `openssl req -x509` makes by default.
fn self_signed_ca_certificate(names: &[&str]) -> Pem {
    let key = KeyPair::generate().expect("key");
    let mut p = params(names, "e2e-self-signed-webhook");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).expect("self-signed certificate");
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// A CA (its PEM) and a signer of serving certificates.
fn certificate_authority(common_name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("key");
    let mut p = params(&[], common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(p, key))
}

fn signed(issuer: &Issuer<'static, KeyPair>, p: CertificateParams) -> Pem {
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("signed certificate");
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn b64(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem)
}

/// A webhook served over TLS with `pem`, answering every review with `answer(request)` (the
/// response without its uid). Records the requests it received.
struct Served {
    url: String,
    seen: Arc<Mutex<Vec<Value>>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn serve(host: &WebhookHost, pem: &Pem, answer: fn(&Value) -> Value) -> Served {
    ballast_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &pem.cert).expect("write cert");
    std::fs::write(&key, &pem.key).expect("write key");
    let tls = ballast_runtime::tls::ReloadingTls::load(&cert, &key).expect("serving TLS");
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let review = move |Json(body): Json<Value>| {
        let record = record.clone();
        async move {
            let request = body["request"].clone();
            record.lock().expect("lock").push(request.clone());
            let mut response = answer(&request);
            response["uid"] = request["uid"].clone();
            Json(
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                        "response": response}),
            )
        }
    };
    let listener = tokio::net::TcpListener::bind(host.bind_addr(0))
        .await
        .expect("bind the webhook");
    let port = listener.local_addr().expect("local addr").port();
    let stop = CancellationToken::new();
    tokio::spawn(ballast_runtime::http::serve(
        listener,
        axum::Router::new().route("/review", post(review)),
        Some(tls),
        stop.clone(),
    ));
    Served {
        url: host.url(port, "/review"),
        seen,
        stop,
        _dir: dir,
    }
}

/// One validating webhook of this test's namespace (`name` must be unique in the cluster).
fn webhook(env: &TestEnv, name: &str, url: &str, ca_pem: &str, rules: Value) -> Value {
    json!({
        "name": name,
        "clientConfig": {"url": url, "caBundle": b64(ca_pem)},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.namespace}},
        "rules": rules,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "failurePolicy": "Fail",
        "timeoutSeconds": 5,
    })
}

fn configmap_creates() -> Value {
    json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
            "resources": ["configmaps"]}])
}

/// Registers the webhooks; the returned name is for [`unregister`].
async fn register(env: &TestEnv, suffix: &str, webhooks: Vec<Value>) -> String {
    let name = format!("{suffix}-{}", env.namespace);
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": webhooks,
    }))
    .expect("a valid webhook configuration");
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .create(&PostParams::default(), &config)
        .await
        .expect("webhook configuration registered");
    name
}

/// Webhook configurations are cluster-scoped: a real cluster keeps them after the namespace.
async fn unregister(env: &TestEnv, name: &str) {
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .delete(name, &DeleteParams::default())
        .await
        .expect("webhook configuration deleted");
}

fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// The first refusal of a dry-run create of `cm`, once the API server applies the webhook
/// configuration (a real one takes a moment to see a new configuration).
async fn first_refusal(env: &TestEnv, what: &str, cm: &ConfigMap) -> kube::core::Status {
    let cms: Api<ConfigMap> = env.api();
    wait_for(what, TIMEOUT, || async {
        match cms.create(&dry_run(), cm).await {
            Ok(_) => None,
            Err(kube::Error::Api(status)) => Some(*status),
            Err(other) => panic!("expected an API answer, got {other}"),
        }
    })
    .await
}

/// A webhook answer proving the API server reached it.
fn reached_over_tls(_: &Value) -> Value {
    json!({"allowed": false, "status": {"code": 403, "reason": "Forbidden",
           "message": "reached over TLS"}})
}

#[tokio::test]
async fn a_self_signed_ca_certificate_given_as_its_own_ca_bundle_is_trusted() {
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("webhook TLS with a self-signed certificate") else {
        env.shutdown().await;
        return;
    };
    let pem = self_signed_ca_certificate(&host.cert_names());
    let hook = serve(&host, &pem, reached_over_tls).await;
    let name = format!("tls.{}.example.com", env.namespace);
    let config = register(
        &env,
        "tls",
        vec![webhook(
            &env,
            &name,
            &hook.url,
            &pem.cert,
            configmap_creates(),
        )],
    )
    .await;
    let status = first_refusal(&env, "the webhook to answer", &configmap("cm", &[])).await;
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            403,
            "Forbidden",
            format!("admission webhook \"{name}\" denied the request: reached over TLS").as_str()
        ),
        "the API server reached the webhook over TLS"
    );
    assert!(!hook.seen.lock().unwrap().is_empty());
    unregister(&env, &config).await;
    hook.stop.cancel();
    env.shutdown().await;
}

#[tokio::test]
async fn serving_certificates_for_another_address_expired_or_from_an_unknown_ca_are_refused() {
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("webhook TLS refusals") else {
        env.shutdown().await;
        return;
    };
    let (ca_pem, ca) = certificate_authority("e2e-webhook-ca");
    let (_, other_ca) = certificate_authority("e2e-other-ca");
    // Names of the kind the host is: Go lists IP SANs for an IP host, DNS names otherwise.
    let wrong = if host.host.parse::<std::net::IpAddr>().is_ok() {
        "10.255.255.1"
    } else {
        "wrong.invalid"
    };
    let mut expired = params(&host.cert_names(), "e2e-expired");
    expired.not_before = rcgen::date_time_ymd(2024, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2025, 1, 1);
    let cases = [
        ("wrong-san", signed(&ca, params(&[wrong], "e2e-wrong-san"))),
        ("expired", signed(&ca, expired)),
        (
            "unknown-ca",
            signed(&other_ca, params(&host.cert_names(), "e2e-unknown-ca")),
        ),
    ];
    let mut served = Vec::new();
    let mut webhooks = Vec::new();
    for (case, pem) in &cases {
        let hook = serve(&host, pem, reached_over_tls).await;
        let mut w = webhook(
            &env,
            &format!("{case}.{}.example.com", env.namespace),
            &hook.url,
            &ca_pem,
            configmap_creates(),
        );
        w["objectSelector"] = json!({"matchLabels": {"tls-case": case}});
        webhooks.push(w);
        served.push(hook);
    }
    let config = register(&env, "tls-refused", webhooks).await;

    let mut messages = Vec::new();
    for ((case, _), hook) in cases.iter().zip(&served) {
        let status = first_refusal(
            &env,
            &format!("the {case} webhook call to fail"),
            &configmap("cm", &[("tls-case", case)]),
        )
        .await;
        assert_eq!(
            (status.code, status.reason.as_str()),
            (500, "InternalError")
        );
        let prefix = format!(
            "Internal error occurred: failed calling webhook \"{case}.{}.example.com\": \
             failed to call webhook: Post \"{}?timeout=5s\": tls: failed to verify certificate: ",
            env.namespace, hook.url
        );
        let reason = status
            .message
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{:?} starts with {prefix:?}", status.message));
        messages.push(reason.to_owned());
        assert!(
            hook.seen.lock().unwrap().is_empty(),
            "{case}: never reached"
        );
    }
    assert_eq!(
        messages[0],
        format!("x509: certificate is valid for {wrong}, not {}", host.host)
    );
    assert!(
        messages[1].starts_with("x509: certificate has expired or is not yet valid: current time ")
            && messages[1].ends_with(" is after 2025-01-01T00:00:00Z"),
        "{}",
        messages[1]
    );
    assert_eq!(messages[2], "x509: certificate signed by unknown authority");
    unregister(&env, &config).await;
    for hook in served {
        hook.stop.cancel();
    }
    env.shutdown().await;
}

/// The fixture's answer for this namespace.
fn real_answer(fixture: &str, ns: &str) -> Value {
    serde_json::from_str(&fixture.replace("NAMESPACE", ns)).expect("fixture JSON")
}

#[tokio::test]
async fn a_webhook_denial_with_retry_after_seconds_sets_the_retry_after_header() {
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("a webhook asking clients to retry later") else {
        env.shutdown().await;
        return;
    };
    let (ca_pem, ca) = certificate_authority("e2e-webhook-ca");
    let hook = serve(
        &host,
        &signed(&ca, params(&host.cert_names(), "e2e-retry")),
        |_| {
            json!({"allowed": false, "status": {"code": 429, "reason": "TooManyRequests",
                   "message": "try later", "details": {"retryAfterSeconds": 7}}})
        },
    )
    .await;
    let ns = env.namespace.clone();
    // ConfigMap creates too, to see when the configuration is in force without evicting.
    let evictions = json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                            "resources": ["pods/eviction", "configmaps"]}]);
    let config = register(
        &env,
        "retry",
        vec![webhook(
            &env,
            &format!("v.{ns}.example.com"),
            &hook.url,
            &ca_pem,
            evictions,
        )],
    )
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p1"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0"}]},
    }))
    .expect("valid pod");
    env.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod created");

    let expected = real_answer(
        include_str!("../data/real-api/webhook-deny-429-retry-after.json"),
        &ns,
    );
    first_refusal(&env, "the webhook to deny", &configmap("probe", &[])).await;
    // The raw answer, headers included, to the request the fixture records.
    let body = serde_json::to_vec(&expected["request"]["body"]).expect("eviction body");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("/api/v1/namespaces/{ns}/pods/p1/eviction"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(kube::client::Body::from(body))
        .expect("request");
    let response = env.client.send(request).await.expect("an HTTP answer");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.into_body().collect_bytes().await.expect("body");
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        retry_after.as_deref(),
        expected["headers"]["Retry-After"].as_str()
    );
    assert_eq!(body, expected["body"]);
    assert!(env.api::<Pod>().get_opt("p1").await.unwrap().is_some());
    unregister(&env, &config).await;
    hook.stop.cancel();
    env.shutdown().await;
}

#[tokio::test]
async fn match_conditions_decide_whether_a_webhook_is_called_and_errors_follow_the_failure_policy()
{
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("webhooks with matchConditions") else {
        env.shutdown().await;
        return;
    };
    let (ca_pem, ca) = certificate_authority("e2e-webhook-ca");
    let hook = serve(
        &host,
        &signed(&ca, params(&host.cert_names(), "e2e-conditions")),
        reached_over_tls,
    )
    .await;
    let ns = env.namespace.clone();
    let guarded = "has(object.metadata.labels) && 'guarded' in object.metadata.labels";
    let missing_key = "object.metadata.annotations.x == 'y'";
    // One webhook per case, told apart by the `mc` label.
    let case = |case: &str, policy: &str, expressions: &[&str]| {
        let mut w = webhook(
            &env,
            &format!("{case}.{ns}.example.com"),
            &hook.url,
            &ca_pem,
            configmap_creates(),
        );
        w["failurePolicy"] = json!(policy);
        w["objectSelector"] = json!({"matchLabels": {"mc": case}});
        w["matchConditions"] = expressions
            .iter()
            .enumerate()
            .map(|(i, e)| json!({"name": format!("condition-{i}"), "expression": e}))
            .collect();
        w
    };
    let config = register(
        &env,
        "conditions",
        vec![
            case("true", "Fail", &["request.operation == 'CREATE'", guarded]),
            case("error-fail", "Fail", &[missing_key]),
            case("error-ignore", "Ignore", &[missing_key]),
            case(
                "false-wins",
                "Fail",
                &[missing_key, "request.dryRun != true"],
            ),
        ],
    )
    .await;

    // Every condition true: the webhook is called (and denies).
    let status = first_refusal(
        &env,
        "the webhook to be called",
        &configmap("called", &[("mc", "true"), ("guarded", "yes")]),
    )
    .await;
    assert_eq!(
        (status.code, status.message.as_str()),
        (
            403,
            format!(
                "admission webhook \"true.{ns}.example.com\" denied the request: reached over TLS"
            )
            .as_str()
        )
    );
    let cms: Api<ConfigMap> = env.api();
    // One condition false: not called.
    cms.create(&dry_run(), &configmap("skipped", &[("mc", "true")]))
        .await
        .expect("not sent to the webhook, so not denied");
    // An evaluation error under Fail: 403 with the error, the webhook not called.
    let status = match cms
        .create(&dry_run(), &configmap("refused", &[("mc", "error-fail")]))
        .await
    {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            403,
            "Forbidden",
            format!(
                "configmaps \"refused\" is forbidden: expression '{missing_key}' resulted in \
                 error: no such key: annotations"
            )
            .as_str()
        )
    );
    // Under Ignore: the webhook is skipped.
    cms.create(&dry_run(), &configmap("ignored", &[("mc", "error-ignore")]))
        .await
        .expect("an evaluation error under Ignore skips the webhook");
    // A false condition wins over another's error.
    cms.create(
        &dry_run(),
        &configmap("false-wins", &[("mc", "false-wins")]),
    )
    .await
    .expect("a false condition skips the webhook whatever the others say");

    let names: Vec<String> = hook
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "called"),
        "only the request whose conditions all held reached the webhook: {names:?}"
    );
    unregister(&env, &config).await;
    hook.stop.cancel();
    env.shutdown().await;
}

#[tokio::test]
async fn a_match_condition_that_does_not_compile_is_refused_when_the_configuration_is_stored() {
    let env = TestEnv::start(SimConfig::default()).await;
    let mut w = webhook(
        &env,
        &format!("bad.{}.example.com", env.namespace),
        "https://127.0.0.1:1/review",
        "",
        configmap_creates(),
    );
    // Never called: the configuration is refused before anything could reach it.
    w["clientConfig"] = json!({"url": "https://127.0.0.1:1/review"});
    w["matchConditions"] = json!([{"name": "broken", "expression": "request.("}]);
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("bad-{}", env.namespace)},
        "webhooks": [w],
    }))
    .unwrap();
    let refused = Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .create(&PostParams::default(), &config)
        .await;
    let status = match refused {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 422, got {other:?}"),
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.contains(
            "webhooks[0].matchConditions[0].expression: Invalid value: \"request.(\": \
             compilation failed: ERROR: <input>:1:"
        ),
        "{}",
        status.message
    );
    env.shutdown().await;
}

/// The admission reviews the guard has answered for `operation`, from its `/metrics`.
async fn guard_reviews(admin: &str, operation: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics text");
    ballast_runtime::metrics::sample(
        &text,
        "admission_duration_seconds_count",
        &[("webhook", "eviction-guard"), ("operation", operation)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eviction_guards_match_conditions_keep_kubelet_and_unrelated_updates_away() {
    use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;
    use kube::api::{Patch, PatchParams};

    let env = TestEnv::start(SimConfig::default().nodes(1)).await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard served in-process") else {
        env.shutdown().await;
        return;
    };
    let ns = env.namespace.clone();
    let dir = tempfile::tempdir().unwrap();
    let cert = ballast_runtime::tls::generate(&host.cert_names()).unwrap();
    let (cert_path, key_path) = cert.write_to(dir.path()).unwrap();
    let mut config = eviction_guard::Config::loopback(env.client.clone());
    config.webhook_addr = host.bind_addr(0);
    config.tls = Some((cert_path, key_path));
    config.namespace = ns.clone();
    config.worker_selector = env.node_selector().parse().unwrap();
    let shutdown = CancellationToken::new();
    let running = eviction_guard::start(config, shutdown.clone())
        .await
        .expect("the guard starts");
    let admin = running.admin_addr.to_string();
    let configuration = env.scoped(
        eviction_guard::webhook_config::validating_webhook_configuration(
            &format!("eviction-guard-{ns}"),
            WebhookClientConfig {
                url: Some(host.url(running.webhook_addr.port(), "/validate")),
                ca_bundle: Some(k8s_openapi::ByteString(cert.ca_pem.clone().into_bytes())),
                service: None,
            },
            &["kube-system"],
        ),
    );
    let configurations = Api::<ValidatingWebhookConfiguration>::all(env.client.clone());
    configurations
        .create(&PostParams::default(), &configuration)
        .await
        .expect("the guard's configuration registered");

    let pods: Api<Pod> = env.api();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"nodeName": env.node(1), "containers": [{"name": "app", "image": "nginx"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let not_ready = Patch::Merge(json!({"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]}}));
    let pp = PatchParams::default();
    // A status update marking the pod unready reaches the guard (which allows it: no storm).
    let before = guard_reviews(&admin, "UPDATE").await;
    wait_for("the guard to review a status update", TIMEOUT, || async {
        pods.patch_status("web-1", &pp, &not_ready).await.ok()?;
        (guard_reviews(&admin, "UPDATE").await > before).then_some(())
    })
    .await;

    let before = guard_reviews(&admin, "UPDATE").await;
    // An update that adds no deletion mark: not sent.
    pods.patch(
        "web-1",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"team": "storage"}}})),
    )
    .await
    .expect("label update allowed");
    // The kubelet's own status update: not sent, even marking the pod unready.
    let kubelet = env
        .client_as(
            &format!("system:node:{}", env.node(1)),
            &["system:nodes", "system:authenticated"],
        )
        .await;
    Api::<Pod>::namespaced(kubelet, &ns)
        .patch_status("web-1", &pp, &not_ready)
        .await
        .expect("the kubelet's status update allowed");
    assert_eq!(
        guard_reviews(&admin, "UPDATE").await,
        before,
        "neither the label update nor the kubelet's status update reached the guard"
    );
    // A delete does reach it.
    let deletes = guard_reviews(&admin, "DELETE").await;
    pods.delete("web-1", &DeleteParams::default())
        .await
        .expect("a pod on a Ready node is deleted");
    assert_eq!(guard_reviews(&admin, "DELETE").await, deletes + 1.0);

    configurations
        .delete(&format!("eviction-guard-{ns}"), &DeleteParams::default())
        .await
        .expect("configuration deleted");
    shutdown.cancel();
    running.wait().await.expect("the guard stops");
    env.shutdown().await;
}

#[tokio::test]
async fn a_webhook_url_that_is_not_https_is_refused_when_the_configuration_is_stored() {
    let env = TestEnv::start(SimConfig::default()).await;
    let mut w = webhook(
        &env,
        &format!("plain.{}.example.com", env.namespace),
        "http://127.0.0.1:8080/validate",
        "",
        configmap_creates(),
    );
    w["clientConfig"] = json!({"url": "http://127.0.0.1:8080/validate"});
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("plain-{}", env.namespace)},
        "webhooks": [w],
    }))
    .unwrap();
    let status = match Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .create(&PostParams::default(), &config)
        .await
    {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 422, got {other:?}"),
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        status.message.ends_with(
            "webhooks[0].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed \
             URL scheme; desired format: https://host[/path]"
        ),
        "{}",
        status.message
    );
    env.shutdown().await;
}
