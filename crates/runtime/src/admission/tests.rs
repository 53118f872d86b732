use std::borrow::Cow;
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
    type Object<'a> = serde::de::IgnoredAny;

    async fn review<'r, 'a: 'r>(&'r self, req: &'r Request<'a, IgnoredAny>) -> Answer {
        if req.operation == Operation::Delete {
            Answer::deny(403, "Forbidden", format!("no deleting {}", req.name))
        } else {
            Answer::allow()
        }
    }
}

use serde::de::IgnoredAny;

/// A view of the fields a handler might read, to see them decoded and the rest skipped.
#[derive(Debug, serde::Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    metadata: MetaFields<'a>,
}

#[derive(Debug, serde::Deserialize)]
struct MetaFields<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    uid: Option<Cow<'a, str>>,
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
    let req = decode::<Meta>(POD_DELETE.as_bytes()).unwrap();
    assert_eq!(req.operation, Operation::Delete);
    assert_eq!(req.name, "user-deleted");
    assert_eq!(req.api_version, "admission.k8s.io/v1");
    let old = req.old_object.as_ref().expect("oldObject");
    assert_eq!(old.metadata.name, "user-deleted");
    assert!(old.metadata.uid.is_some());
    assert!(req.object.is_none());
    assert!(!req.uid.is_empty());
    assert_eq!(req.user_info.name(), "admin");
    assert!(
        matches!(req.uid, Cow::Borrowed(_)),
        "strings are borrowed from the body"
    );
}

#[test]
fn names_what_is_wrong_with_a_body() {
    let truncated = &POD_DELETE[..POD_DELETE.len() / 2];
    assert!(matches!(
        decode::<IgnoredAny>(truncated.as_bytes()),
        Err(DecodeError::Json(_))
    ));

    let wrong_kind = POD_DELETE.replacen("\"AdmissionReview\"", "\"Pod\"", 1);
    let err = decode::<IgnoredAny>(wrong_kind.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "expected kind AdmissionReview in admission.k8s.io/v1, got kind \"Pod\" in \"admission.k8s.io/v1\""
    );

    let no_request = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
    assert!(matches!(
        decode::<IgnoredAny>(no_request.as_bytes()),
        Err(DecodeError::MissingRequest)
    ));

    let mut value: serde_json::Value = serde_json::from_str(PVC_CREATE).unwrap();
    value["request"]["uid"] = "".into();
    let empty_uid = serde_json::to_vec(&value).unwrap();
    assert!(matches!(
        decode::<IgnoredAny>(&empty_uid),
        Err(DecodeError::MissingUid)
    ));
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
    let uid = decode::<IgnoredAny>(POD_DELETE.as_bytes()).unwrap().uid;
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["response"]["uid"], uid.as_ref());
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
    assert!(allowed["response"].get("status").is_none());
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
    let req = decode::<IgnoredAny>(PVC_CREATE.as_bytes()).unwrap();
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "add", "path": "/metadata/annotations/x", "value": "y"}
    ]))
    .unwrap();
    let answer = Answer::allow()
        .with_patch(&patch)
        .unwrap()
        .with_warnings(["careful".to_owned()]);
    let body: serde_json::Value = serde_json::from_slice(&encode(&req, &answer).unwrap()).unwrap();
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
    assert_eq!(body["response"]["uid"], req.uid.as_ref());
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(body["response"]["warnings"], serde_json::json!(["careful"]));
}

#[test]
fn a_refusal_is_encoded_as_the_api_server_reads_a_status() {
    let mut review: serde_json::Value = serde_json::from_str(POD_DELETE).unwrap();
    review["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let req = decode_value::<IgnoredAny>(review).unwrap();
    let answer = Answer::deny(429, "TooManyRequests", "wait \"a\" while").retry_after(10);
    let body: serde_json::Value = serde_json::from_slice(&encode(&req, &answer).unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1beta1",
            "kind": "AdmissionReview",
            "response": {
                "uid": req.uid.as_ref(),
                "allowed": false,
                "status": {"metadata": {}, "status": "Failure", "message": "wait \"a\" while",
                           "reason": "TooManyRequests", "code": 429,
                           "details": {"retryAfterSeconds": 10}}
            }
        })
    );
}

#[test]
fn null_fields_of_a_view_read_as_their_default() {
    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct View {
        #[serde(default, deserialize_with = "null_as_default")]
        names: Vec<String>,
    }
    let v: View = serde_json::from_str(r#"{"names": null}"#).unwrap();
    assert_eq!(v, View::default());
    let v: View = serde_json::from_str(r#"{"names": ["a"]}"#).unwrap();
    assert_eq!(v.names, ["a"]);
}
