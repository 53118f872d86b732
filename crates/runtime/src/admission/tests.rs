use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;

const POD_DELETE: &str = include_str!("../../tests/data/pod-delete-user.json");
const PVC_CREATE: &str = include_str!("../../tests/data/pvc-create.json");

/// Denies deletes with 403, allows everything else: enough to see the plumbing carry answers.
struct DenyDeletes;

impl Handler for DenyDeletes {
    async fn review(&self, req: AdmissionRequest<DynamicObject>) -> AdmissionResponse {
        if req.operation == Operation::Delete {
            deny(&req, 403, "Forbidden", format!("no deleting {}", req.name))
        } else {
            AdmissionResponse::from(&req)
        }
    }
}

async fn start() -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/validate", listener.local_addr().unwrap());
    let router = Router::new().route("/validate", route("test", Arc::new(DenyDeletes)));
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::http::serve(listener, router, None, shutdown.clone()));
    (url, shutdown)
}

#[test]
fn decodes_a_real_api_server_request() {
    let req = decode(POD_DELETE.as_bytes()).unwrap();
    assert_eq!(req.operation, Operation::Delete);
    assert_eq!(req.name, "user-deleted");
    assert!(req.old_object.is_some());
    assert!(!req.uid.is_empty());
}

#[test]
fn names_what_is_wrong_with_a_body() {
    let truncated = &POD_DELETE[..POD_DELETE.len() / 2];
    assert!(matches!(
        decode(truncated.as_bytes()),
        Err(DecodeError::Json(_))
    ));

    let wrong_kind = POD_DELETE.replacen("\"AdmissionReview\"", "\"Pod\"", 1);
    let err = decode(wrong_kind.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected kind AdmissionReview in admission.k8s.io/v1, got kind \"Pod\" in \"admission.k8s.io/v1\""
    );

    let no_request = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
    assert!(matches!(
        decode(no_request.as_bytes()),
        Err(DecodeError::MissingRequest)
    ));

    let mut value: serde_json::Value = serde_json::from_str(PVC_CREATE).unwrap();
    value["request"]["uid"] = "".into();
    let empty_uid = serde_json::to_vec(&value).unwrap();
    assert!(matches!(decode(&empty_uid), Err(DecodeError::MissingUid)));
}

#[tokio::test]
async fn answers_with_the_request_uid_and_the_handler_verdict() {
    let (url, shutdown) = start().await;
    let http = reqwest::Client::new();
    let answer: serde_json::Value = http
        .post(&url)
        .body(POD_DELETE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = decode(POD_DELETE.as_bytes()).unwrap().uid;
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], uid.as_str());
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 403);
    assert_eq!(
        answer["response"]["status"]["message"],
        "no deleting user-deleted"
    );

    let allowed: serde_json::Value = http
        .post(&url)
        .body(PVC_CREATE)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(allowed["response"]["allowed"], true);
    shutdown.cancel();
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_clear_errors_and_the_server_keeps_serving() {
    let (url, shutdown) = start().await;
    let http = reqwest::Client::new();

    let truncated = http
        .post(&url)
        .body(&POD_DELETE[..100])
        .send()
        .await
        .unwrap();
    assert_eq!(truncated.status(), 400);
    assert!(
        truncated
            .text()
            .await
            .unwrap()
            .starts_with("failed to decode the AdmissionReview")
    );

    let oversized = http
        .post(&url)
        .body(vec![b' '; MAX_BODY_BYTES + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 413);

    let ok = http.post(&url).body(POD_DELETE).send().await.unwrap();
    assert_eq!(ok.status(), 200, "still serving after bad input");

    let text = crate::metrics::prometheus().render();
    assert!(
        crate::metrics::sample(
            &text,
            "admission_malformed_total",
            &[("webhook", "test"), ("error", "json")]
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    shutdown.cancel();
}

#[test]
fn encodes_the_patch_as_base64_like_the_api_server_expects() {
    let req = decode(PVC_CREATE.as_bytes()).unwrap();
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "add", "path": "/metadata/annotations/x", "value": "y"}
    ]))
    .unwrap();
    let response = AdmissionResponse::from(&req).with_patch(patch).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&encode(response).unwrap()).unwrap();
    let encoded = body["response"]["patch"]
        .as_str()
        .expect("patch is a string");
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        r#"[{"op":"add","path":"/metadata/annotations/x","value":"y"}]"#
    );
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    assert_eq!(body["response"]["uid"], req.uid.as_str());
}
