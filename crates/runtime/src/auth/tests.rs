use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;

/// A stand-in API server answering TokenReview and SubjectAccessReview from fixed tables, and
/// recording the SubjectAccessReviews it was asked.
#[derive(Clone, Default)]
struct FakeApi {
    asked: Arc<Mutex<Vec<Value>>>,
}

async fn token_review(Json(body): Json<Value>) -> Json<Value> {
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let status = match token {
        "admin-token" => {
            json!({"authenticated": true, "user": {"username": "alice", "uid": "u1", "groups": ["ops"]}})
        }
        "viewer-token" => {
            json!({"authenticated": true, "user": {"username": "bob", "groups": ["viewers"]}})
        }
        _ => json!({"authenticated": false, "error": "token expired"}),
    };
    Json(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": body["spec"], "status": status}),
    )
}

async fn access_review(State(api): State<FakeApi>, Json(body): Json<Value>) -> Json<Value> {
    api.asked.lock().unwrap().push(body.clone());
    let allowed = body["spec"]["groups"]
        .as_array()
        .is_some_and(|g| g.contains(&json!("ops")));
    Json(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": body["spec"],
        "status": {"allowed": allowed, "reason": if allowed { "" } else { "no RBAC rule matched" }}
    }))
}

async fn start() -> (Authenticator, FakeApi, CancellationToken) {
    let api = FakeApi::default();
    let router = Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(token_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(access_review),
        )
        .with_state(api.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::http::serve(listener, router, None, shutdown.clone()));
    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    (Authenticator::Kube(client), api, shutdown)
}

fn write_interception() -> Access {
    Access::new("update", "control.ballast.dev", "interception")
}

#[tokio::test]
async fn allows_a_known_caller_with_the_permission() {
    let (auth, api, shutdown) = start().await;
    let caller = auth
        .authorize(Some("admin-token"), &write_interception())
        .await
        .unwrap();
    assert_eq!(caller.username, "alice");
    assert_eq!(caller.groups, vec!["ops".to_owned()]);
    let asked = api.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    let attrs = &asked[0]["spec"]["resourceAttributes"];
    assert_eq!(attrs["verb"], "update");
    assert_eq!(attrs["group"], "control.ballast.dev");
    assert_eq!(attrs["resource"], "interception");
    shutdown.cancel();
}

#[tokio::test]
async fn refuses_missing_unknown_and_unauthorised_callers_distinctly() {
    let (auth, _api, shutdown) = start().await;
    let access = write_interception();
    assert_eq!(
        auth.authorize(None, &access).await.unwrap_err(),
        AuthError::Unauthenticated("no bearer token in the request".into())
    );
    assert_eq!(
        auth.authorize(Some("stolen"), &access).await.unwrap_err(),
        AuthError::Unauthenticated("token expired".into())
    );
    assert_eq!(
        auth.authorize(Some("viewer-token"), &access)
            .await
            .unwrap_err(),
        AuthError::Forbidden(
            "user \"bob\" may not update interception.control.ballast.dev: no RBAC rule matched"
                .into()
        )
    );
    shutdown.cancel();
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable_not_forbidden() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let err = Authenticator::Kube(client)
        .authorize(Some("admin-token"), &write_interception())
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn local_mode_allows_everyone() {
    let caller = Authenticator::AllowAll
        .authorize(None, &write_interception())
        .await
        .unwrap();
    assert_eq!(caller, Caller::local());
}

#[test]
fn reads_bearer_tokens_from_the_authorization_header() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(bearer_token(&headers), None);
    headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
    assert_eq!(bearer_token(&headers), Some("abc"));
    headers.insert(http::header::AUTHORIZATION, "bearer  xyz ".parse().unwrap());
    assert_eq!(bearer_token(&headers), Some("xyz"));
    headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
    assert_eq!(bearer_token(&headers), None);
    headers.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
    assert_eq!(bearer_token(&headers), None);
}

fn reviewed(status: Value) -> TokenReview {
    serde_json::from_value(json!({"spec": {}, "status": status})).unwrap()
}

#[test]
fn with_an_audience_asked_the_answer_must_name_it() {
    let ours = vec!["control.ballast.dev".to_owned()];
    let valid = reviewed(json!({"authenticated": true, "user": {"username": "a"},
        "audiences": ["control.ballast.dev"]}));
    assert_eq!(check_audiences(&valid, &ours), Ok(()));
    // an API server token, or a reviewer that ignores audiences: no audience in the answer
    for status in [
        json!({"authenticated": true, "user": {"username": "a"}}),
        json!({"authenticated": true, "user": {"username": "a"}, "audiences": []}),
        json!({"authenticated": true, "user": {"username": "a"},
            "audiences": ["https://kubernetes.default.svc.cluster.local"]}),
    ] {
        let err = check_audiences(&reviewed(status), &ours).unwrap_err();
        assert!(
            matches!(&err, AuthError::Unauthenticated(m) if m.contains("--audience control.ballast.dev")),
            "{err}"
        );
    }
    // nothing asked, nothing checked
    assert_eq!(
        check_audiences(&reviewed(json!({"authenticated": true})), &[]),
        Ok(())
    );
}

#[test]
fn blank_audiences_mean_the_api_servers_own() {
    let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let client = kube::Client::try_from(config).unwrap();
    assert!(matches!(
        Authenticator::kube(client.clone(), vec![" ".into()]),
        Authenticator::Kube(_)
    ));
    assert!(matches!(
        Authenticator::kube(client, vec!["control.ballast.dev".into()]),
        Authenticator::KubeAudiences(_, a) if a == ["control.ballast.dev"]
    ));
}
