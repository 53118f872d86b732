//! The served webhook, in process, over real TLS: AdmissionReviews captured from a Kubernetes
//! 1.36 API server go in over HTTPS (HTTP/2, as the API server speaks it), patches and metrics
//! come out.

use std::sync::Arc;

use ballast_runtime::metrics::sample;
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};
use pvc_timing::{Config, FixedClock, KubeAccess, Running, WebhookConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Served {
    running: Running,
    shutdown: CancellationToken,
    client: reqwest::Client,
    _certs: tempfile::TempDir,
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}{path}",
            self.running.webhook_addr.unwrap().port()
        )
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.running.admin_addr);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }

    async fn review(&self, body: &Value) -> (reqwest::Version, Value) {
        let response = self
            .client
            .post(self.url("/mutate"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let version = response.version();
        (version, response.json().await.unwrap())
    }
}

/// Starts the webhook alone (no controller, so no API server needed) at `now`.
async fn serve(now: DateTime<Utc>) -> Served {
    ballast_runtime::tls::install_crypto_provider();
    let certs = tempfile::tempdir().unwrap();
    let generated = ballast_runtime::tls::generate(&["localhost", "127.0.0.1"]).unwrap();
    let (cert, key) = generated.write_to(certs.path()).unwrap();
    let shutdown = CancellationToken::new();
    let config = Config {
        webhook: Some(WebhookConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some((cert, key)),
            self_signed: None,
        }),
        controller: None,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        kube: KubeAccess::Kubeconfig {
            path: None,
            context: None,
        },
        clock: Arc::new(FixedClock(now)),
    };
    let running = pvc_timing::start(config, shutdown.clone()).await.unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(generated.ca_pem.as_bytes()).unwrap())
        .resolve("localhost", running.webhook_addr.unwrap())
        .build()
        .unwrap();
    Served {
        running,
        shutdown,
        client,
        _certs: certs,
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn patch_of(review: &Value) -> Value {
    let response = &review["response"];
    assert_eq!(response["patchType"], "JSONPatch");
    // Go's `[]byte`, as the API documents it: a base64 string.
    let text = response["patch"].as_str().expect("a base64 patch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn created_at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 59, 1).unwrap() + chrono::Duration::seconds(secs)
}

#[tokio::test]
async fn create_over_tls_gets_a_pending_patch_over_http2() {
    let served = serve(created_at(1)).await;
    let (version, review) = served.review(&fixture("pvc-create")).await;
    assert_eq!(version, reqwest::Version::HTTP_2);
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"],
        "11ecb804-b28c-4398-b7d9-4efce09cf77e"
    );
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(
        patch_of(&review),
        json!([{"op": "add", "path": "/metadata/annotations", "value": {
            "pvc-timing": r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#
        }}])
    );
    served.shutdown.cancel();
    served.running.wait().await.unwrap();
}

#[tokio::test]
async fn binding_is_recorded_at_the_status_write_and_nothing_is_counted_at_admission() {
    // A storage class of its own, so parallel tests sharing the recorder do not interfere.
    let class = "tls-walk";
    let served = serve(created_at(7)).await;
    let pending = r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"}]}"#;
    let mut status = fixture("pvc-status-update-binder-bound");
    for field in ["object", "oldObject"] {
        status["request"][field]["metadata"]["annotations"]["pvc-timing"] = json!(pending);
        status["request"][field]["spec"]["storageClassName"] = json!(class);
    }
    let before = served.metrics().await;
    let bound_before = sample(
        &before,
        "pvc_phase_transitions_total",
        &[("phase", "Bound")],
    )
    .unwrap_or(0.0);

    let (_, review) = served.review(&status).await;
    let recorded = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T08:59:08Z"}]}"#;
    assert_eq!(
        patch_of(&review),
        json!([{"op": "replace", "path": "/metadata/annotations/pvc-timing", "value": recorded}])
    );

    // Reinvocation with the patched object: nothing to add, nothing counted again.
    status["request"]["object"]["metadata"]["annotations"]["pvc-timing"] = json!(recorded);
    let (_, again) = served.review(&status).await;
    assert_eq!(again["response"]["allowed"], true);
    assert!(
        again["response"].get("patch").is_none_or(Value::is_null),
        "{again}"
    );

    // The webhook sees requests, not outcomes (the API server may still refuse this one): it
    // counts nothing; the controller counts what was stored.
    let after = served.metrics().await;
    assert_eq!(
        sample(
            &after,
            "pvc_time_to_bound_seconds_count",
            &[("storage_class", class)]
        ),
        None,
        "{after}"
    );
    let bound_after =
        sample(&after, "pvc_phase_transitions_total", &[("phase", "Bound")]).unwrap_or(0.0);
    assert_eq!(bound_after, bound_before);
    served.shutdown.cancel();
    served.running.wait().await.unwrap();
}

#[tokio::test]
async fn a_body_that_is_not_an_admission_review_gets_a_clear_400() {
    let served = serve(created_at(1)).await;
    let cases = [
        (
            "{\"kind\":\"Pod\"}",
            r#"expected kind AdmissionReview in admission.k8s.io/v1, got kind "Pod""#,
        ),
        ("{\"kind\":", "failed to decode the AdmissionReview"),
    ];
    for (body, expected) in cases {
        let response = served
            .client
            .post(served.url("/mutate"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(expected), "{body}: {text}");
    }
    served.shutdown.cancel();
    served.running.wait().await.unwrap();
}

#[tokio::test]
async fn the_admin_server_reports_ready_while_the_webhook_serves() {
    let served = serve(created_at(1)).await;
    let url = format!("http://{}/readyz", served.running.admin_addr);
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), 200);
    served.shutdown.cancel();
    served.running.wait().await.unwrap();
}
