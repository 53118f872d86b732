//! How the API server calls admission webhooks, checked against a real server's answers: TLS
//! verification as Go's crypto/x509 does it, `matchConditions` (CEL) with their failurePolicy,
//! and a webhook's `retryAfterSeconds` turned into a `Retry-After` header.
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
    let evict = || async {
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
        (status, retry_after, body)
    };
    first_refusal(&env, "the webhook to deny", &configmap("probe", &[])).await;
    let (status, retry_after, body) = evict().await;
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
