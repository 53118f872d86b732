//! The simulator itself, exercised with plain kube-rs calls, real webhooks over TLS, kube-runtime
//! and the installed kubectl. Each test fails if the simulator departs from what a real API
//! server does in the respect it checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use ballast_e2e::{SimConfig, TestEnv, WebhookHost, kubectl, kubectl_with_input, wait_for};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{
    DeleteParams, EvictParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[path = "kube_sim/control_auth.rs"]
mod control_auth;
#[path = "kube_sim/crd_schema.rs"]
mod crd_schema;
#[path = "kube_sim/guard_install.rs"]
mod guard_install;
#[path = "kube_sim/input_bounds.rs"]
mod input_bounds;
#[path = "kube_sim/leader_election.rs"]
mod leader_election;
#[path = "kube_sim/pv_controller.rs"]
mod pv_controller;
#[path = "kube_sim/selectors.rs"]
mod selectors;
#[path = "kube_sim/service_shape.rs"]
mod service_shape;
#[path = "kube_sim/strict_api.rs"]
mod strict_api;
#[path = "kube_sim/taint_eviction.rs"]
mod taint_eviction;
#[path = "kube_sim/watch_cache.rs"]
mod watch_cache;
#[path = "kube_sim/webhook_client.rs"]
mod webhook_client;

/// Longest wait for any condition: a few seconds on kube-sim, up to a node grace plus the
/// controllers' periods on a real control plane.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A ConfigMap labelled as the scenario's own (`e2e.ballast.dev/own=yes`).
fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("e2e.ballast.dev/own".to_string(), "yes".to_string())].into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {"containers": [{"name": "app", "image": "registry.example/web:1.0"}]},
    }))
    .expect("valid pod")
}

fn api_error(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_without_gaps_or_duplicates() {
    let env = TestEnv::start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = env.api();
    let pp = PostParams::default();
    let a = cms.create(&pp, &cm("a")).await.unwrap();
    let from = a.resource_version().unwrap();
    cms.create(&pp, &cm("b")).await.unwrap();
    cms.create(&pp, &cm("c")).await.unwrap();
    let mut a2 = cms.get("a").await.unwrap();
    a2.data = Some([("k".to_string(), "changed".to_string())].into());
    cms.replace("a", &pp, &a2).await.unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();

    // The scenario's own ConfigMaps only: a real cluster adds kube-root-ca.crt to every new
    // namespace, possibly after `a`.
    let stream = cms
        .watch(
            &WatchParams::default()
                .labels("e2e.ballast.dev/own=yes")
                .timeout(5),
            &from,
        )
        .await
        .unwrap();
    let events: Vec<(String, String, u64)> = stream
        .filter_map(|e| async move {
            match e.ok()? {
                WatchEvent::Added(o) => Some((
                    "ADDED".into(),
                    o.name_any(),
                    o.resource_version()?.parse().ok()?,
                )),
                WatchEvent::Modified(o) => Some((
                    "MODIFIED".into(),
                    o.name_any(),
                    o.resource_version()?.parse().ok()?,
                )),
                WatchEvent::Deleted(o) => Some((
                    "DELETED".into(),
                    o.name_any(),
                    o.resource_version()?.parse().ok()?,
                )),
                _ => None,
            }
        })
        .take(4)
        .collect()
        .await;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|(t, n, _)| (t.as_str(), n.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("ADDED", "b"),
            ("ADDED", "c"),
            ("MODIFIED", "a"),
            ("DELETED", "b")
        ]
    );
    let rvs: Vec<u64> = events.iter().map(|(_, _, rv)| *rv).collect();
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]),
        "increasing versions: {rvs:?}"
    );
    assert!(rvs[0] > from.parse::<u64>().unwrap());
    env.shutdown().await;
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_410_gone() {
    let env = TestEnv::start(SimConfig::default().watch_history(5)).await;
    if env.sim_only().is_none() {
        env.shutdown().await;
        return;
    }
    let cms: Api<ConfigMap> = env.api();
    let first = cms
        .create(&PostParams::default(), &cm("first"))
        .await
        .unwrap();
    for i in 0..10 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}")))
            .await
            .unwrap();
    }
    let mut stream = cms
        .watch(
            &WatchParams::default().timeout(5),
            &first.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    env.shutdown().await;
}

#[tokio::test]
async fn a_streaming_list_sends_the_objects_then_a_bookmark_marking_the_end() {
    let env = TestEnv::start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = env.api();
    for name in ["a", "b"] {
        cms.create(&PostParams::default(), &cm(name)).await.unwrap();
    }
    let now: u64 = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap()
        .parse()
        .unwrap();
    // What kube-runtime's watcher does with streaming lists: ?sendInitialEvents=true
    // &resourceVersionMatch=NotOlderThan; the initial state as ADDED events, then a bookmark
    // annotated k8s.io/initial-events-end at a version no older than the one asked for.
    let wp = WatchParams::streaming_lists()
        .labels("e2e.ballast.dev/own=yes")
        .timeout(10);
    let mut stream = cms.watch(&wp, "0").await.unwrap().boxed();
    let mut added = Vec::new();
    let bookmark = loop {
        match stream.next().await {
            Some(Ok(WatchEvent::Added(o))) => added.push(o.name_any()),
            Some(Ok(WatchEvent::Bookmark(b))) => break b,
            other => panic!("expected ADDED events then a bookmark, got {other:?}"),
        }
    };
    added.sort();
    assert_eq!(added, ["a", "b"]);
    assert_eq!(
        bookmark
            .metadata
            .annotations
            .get("k8s.io/initial-events-end")
            .map(String::as_str),
        Some("true")
    );
    let at: u64 = bookmark.metadata.resource_version.parse().unwrap();
    assert!(at >= now, "bookmark at {at}, list at {now}");
    env.shutdown().await;
}

#[tokio::test]
async fn stale_update_gets_409_conflict() {
    let env = TestEnv::start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = env.api();
    let pp = PostParams::default();
    let original = cms.create(&pp, &cm("a")).await.unwrap();
    let mut fresh = original.clone();
    fresh.data = Some([("k".to_string(), "1".to_string())].into());
    cms.replace("a", &pp, &fresh).await.unwrap();
    let mut stale = original;
    stale.data = Some([("k".to_string(), "2".to_string())].into());
    let (code, reason, message) = api_error(cms.replace("a", &pp, &stale).await.unwrap_err());
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "1");
    env.shutdown().await;
}

/// A webhook server over real TLS: mutates pod creates (adds a label), denies deletes of pods
/// labelled `protect=true` (403) and every eviction (429). Records the reviews it received.
struct Webhook {
    url: String,
    ca_bundle: String,
    seen: Arc<Mutex<Vec<Value>>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start_webhook(host: &WebhookHost) -> Webhook {
    ballast_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = ballast_runtime::tls::generate(&host.cert_names()).unwrap();
    let (cert, key) = certs.write_to(dir.path()).unwrap();
    let tls = ballast_runtime::tls::ReloadingTls::load(&cert, &key).unwrap();
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let review = move |Json(body): Json<Value>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(body.clone());
            let req = &body["request"];
            let uid = req["uid"].clone();
            let protected = req["oldObject"]["metadata"]["labels"]["protect"] == "true";
            let response = match (req["operation"].as_str(), req["subResource"].as_str()) {
                (Some("CREATE"), Some("eviction")) => json!({"uid": uid, "allowed": false,
                    "status": {"code": 429, "reason": "TooManyRequests", "message": "evictions are paused"}}),
                (Some("DELETE"), _) if protected => json!({"uid": uid, "allowed": false,
                    "status": {"code": 403, "reason": "Forbidden", "message": "pod is protected"}}),
                (Some("CREATE"), None) => {
                    // A patch must apply to the object as the API server holds it: a pod created
                    // without labels has no /metadata/labels to add under.
                    let patch = if req["object"]["metadata"]["labels"].is_object() {
                        json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}])
                    } else {
                        json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}])
                    };
                    json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                           "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
                }
                _ => json!({"uid": uid, "allowed": true}),
            };
            Json(
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
            )
        }
    };
    let router = axum::Router::new().route("/review", post(review));
    let listener = tokio::net::TcpListener::bind(host.bind_addr(0))
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
    Webhook {
        url: host.url(port, "/review"),
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem),
        seen,
        stop,
        _dir: dir,
    }
}

/// Registers `hook` for this test's namespace: mutating pod creates, validating pod deletes and
/// evictions. Returns once the API server calls both configurations' webhooks (a real one sees
/// a new configuration a moment after it is stored).
async fn register(env: &TestEnv, hook: &Webhook, failure_policy: &str) {
    let selector = json!({"matchLabels": {"kubernetes.io/metadata.name": env.namespace}});
    let client_config = json!({"url": hook.url, "caBundle": hook.ca_bundle});
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("mutate-{}", env.namespace)},
        "webhooks": [{"name": "mutate.e2e.ballast.dev", "clientConfig": client_config, "namespaceSelector": selector,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": failure_policy, "timeoutSeconds": 5},
            env.webhook_probe("mutating")]
    }))
    .unwrap();
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("validate-{}", env.namespace)},
        "webhooks": [{"name": "guard.e2e.ballast.dev", "clientConfig": client_config, "namespaceSelector": selector,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["pods"]},
                      {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods/eviction"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": failure_policy, "timeoutSeconds": 5},
            env.webhook_probe("validating")]
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .create(&pp, &mutating)
        .await
        .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .create(&pp, &validating)
        .await
        .unwrap();
    env.wait_for_webhook_probe("mutating", true).await;
    env.wait_for_webhook_probe("validating", true).await;
}

#[tokio::test]
async fn webhooks_mutate_and_deny_with_the_real_messages_and_codes() {
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("webhooks mutating and denying") else {
        env.shutdown().await;
        return;
    };
    let hook = start_webhook(&host).await;
    register(&env, &hook, "Fail").await;
    let pods: Api<Pod> = env.api();
    let pp = PostParams::default();

    let created = pods
        .create(&pp, &pod("guarded", &[("protect", "true")]))
        .await
        .unwrap();
    assert_eq!(
        created.labels().get("mutated").map(String::as_str),
        Some("yes"),
        "mutating patch applied"
    );
    assert_eq!(
        pods.get("guarded").await.unwrap().labels()["mutated"],
        "yes"
    );

    let (code, reason, message) = api_error(
        pods.delete("guarded", &DeleteParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        message,
        "admission webhook \"guard.e2e.ballast.dev\" denied the request: pod is protected"
    );

    let (code, reason, message) = api_error(
        pods.evict("guarded", &EvictParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        message,
        "admission webhook \"guard.e2e.ballast.dev\" denied the request: evictions are paused"
    );
    assert!(pods.get("guarded").await.is_ok(), "denied pod still there");

    pods.create(&pp, &pod("free", &[])).await.unwrap();
    pods.delete("free", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_error(pods.get("free").await.unwrap_err()).0, 404);

    let seen = hook.seen.lock().unwrap().clone();
    let eviction = seen
        .iter()
        .find(|r| r["request"]["subResource"] == "eviction")
        .expect("eviction reviewed");
    assert_eq!(
        eviction["request"]["kind"],
        json!({"group": "policy", "version": "v1", "kind": "Eviction"})
    );
    assert_eq!(eviction["request"]["object"]["kind"], "Eviction");
    assert_eq!(eviction["request"]["name"], "guarded");
    assert_eq!(
        eviction["request"]["userInfo"]["groups"][0],
        "system:masters"
    );
    let delete = seen
        .iter()
        .find(|r| r["request"]["operation"] == "DELETE")
        .expect("delete reviewed");
    assert_eq!(delete["request"]["object"], Value::Null);
    assert_eq!(
        delete["request"]["oldObject"]["metadata"]["name"],
        "guarded"
    );
    hook.stop.cancel();
    env.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_webhook_fails_closed_or_open_by_failure_policy() {
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("an unreachable webhook") else {
        env.shutdown().await;
        return;
    };
    let hook = start_webhook(&host).await;
    hook.stop.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    register(&env, &hook, "Fail").await;
    let pods: Api<Pod> = env.api();
    let (code, reason, message) = api_error(
        pods.create(&PostParams::default(), &pod("p", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (500, "InternalError"));
    assert!(
        message.starts_with("Internal error occurred: failed calling webhook \"mutate.e2e.ballast.dev\": failed to call webhook: Post"),
        "{message}"
    );
    // Same configuration, failing open.
    let mwc: Api<MutatingWebhookConfiguration> = Api::all(env.client.clone());
    let name = format!("mutate-{}", env.namespace);
    let patch = json!([{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]);
    mwc.patch(
        &name,
        &PatchParams::default(),
        &Patch::<Value>::Json(serde_json::from_value(patch).unwrap()),
    )
    .await
    .unwrap();
    // A real API server fails open a moment after the patch is stored: until then a dry run
    // (nothing stored) is still refused.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for("the API server to fail open", TIMEOUT, || async {
        pods.create(&dry_run, &pod("p", &[])).await.ok().map(drop)
    })
    .await;
    let created = pods
        .create(&PostParams::default(), &pod("p", &[]))
        .await
        .unwrap();
    assert!(!created.labels().contains_key("mutated"));
    env.shutdown().await;
}

#[tokio::test]
async fn dry_run_goes_through_admission_and_stores_nothing() {
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("dry run through admission") else {
        env.shutdown().await;
        return;
    };
    let hook = start_webhook(&host).await;
    register(&env, &hook, "Fail").await;
    let pods: Api<Pod> = env.api();
    let out = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod("dry", &[]),
        )
        .await
        .unwrap();
    assert_eq!(out.labels()["mutated"], "yes");
    assert_eq!(api_error(pods.get("dry").await.unwrap_err()).0, 404);
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.last().unwrap()["request"]["dryRun"], true);
    hook.stop.cancel();
    env.shutdown().await;
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let env = TestEnv::start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = env.api();
    let mut held = cm("held");
    held.metadata.finalizers = Some(vec!["ballast.dev/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let still = cms.get("held").await.unwrap();
    assert!(
        still.metadata.deletion_timestamp.is_some(),
        "marked for deletion"
    );
    let patch = json!({"metadata": {"finalizers": null}});
    cms.patch("held", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for("the held ConfigMap to go", TIMEOUT, || async {
        cms.get_opt("held").await.unwrap().is_none().then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn deleting_an_owner_cascades_to_owned_objects() {
    let env = TestEnv::start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = env.api();
    let pods: Api<Pod> = env.api();
    let pp = PostParams::default();
    let owner = cms.create(&pp, &cm("owner")).await.unwrap();
    let mut owned = pod("owned", &[]);
    owned.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.uid().unwrap(),
            ..Default::default()
        },
    ]);
    pods.create(&pp, &owned).await.unwrap();
    pods.create(&pp, &pod("unowned", &[])).await.unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_for("the owned pod to be garbage collected", TIMEOUT, || async {
        pods.get_opt("owned").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(pods.get_opt("unowned").await.unwrap().is_some());
    env.shutdown().await;
}

#[tokio::test]
async fn kube_runtime_reflector_and_controller_run_unchanged() {
    let env = TestEnv::start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = env.api();
    let pp = PostParams::default();
    for n in ["one", "two", "three"] {
        cms.create(&pp, &cm(n)).await.unwrap();
    }
    // Only the scenario's own ConfigMaps: every namespace of a real cluster also holds
    // kube-root-ca.crt.
    let mine = watcher::Config::default().labels("e2e.ballast.dev/own=yes");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(cms.clone(), mine.clone())).applied_objects();
    let reflector_task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.try_next().await.is_ok() {}
    });
    let names = |r: &reflector::Store<ConfigMap>| {
        let mut v: Vec<String> = r.state().iter().map(|o| o.name_any()).collect();
        v.sort();
        v
    };
    wait_for("the reflector to list three", TIMEOUT, || async {
        (names(&reader).len() == 3).then_some(())
    })
    .await;
    cms.delete("two", &DeleteParams::default()).await.unwrap();
    cms.create(&pp, &cm("four")).await.unwrap();
    wait_for("the reflector to follow changes", TIMEOUT, || async {
        (names(&reader) == ["four", "one", "three"]).then_some(())
    })
    .await;
    reflector_task.abort();

    async fn reconcile(
        obj: Arc<ConfigMap>,
        api: Arc<Api<ConfigMap>>,
    ) -> Result<Action, kube::Error> {
        let patch = json!({"metadata": {"annotations": {"e2e.ballast.dev/reconciled": "yes"}}});
        api.patch(&obj.name_any(), &PatchParams::apply("e2e-controller"), &Patch::Apply(&json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": obj.name_any(), "annotations": patch["metadata"]["annotations"]}
        })))
        .await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Api<ConfigMap>>) -> Action {
        Action::requeue(Duration::from_millis(200))
    }
    let ctx = Arc::new(cms.clone());
    let controller = tokio::spawn(
        Controller::new(cms.clone(), mine)
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );
    wait_for(
        "the controller to reconcile every ConfigMap",
        TIMEOUT,
        || async {
            let list = cms
                .list(&ListParams::default().labels("e2e.ballast.dev/own=yes"))
                .await
                .ok()?;
            list.items
                .iter()
                .all(|c| {
                    c.annotations()
                        .get("e2e.ballast.dev/reconciled")
                        .map(String::as_str)
                        == Some("yes")
                })
                .then_some(())
        },
    )
    .await;
    controller.abort();
    env.shutdown().await;
}

#[tokio::test]
async fn scheduler_kubelet_node_failure_and_taint_eviction_behave_like_a_cluster() {
    let env = TestEnv::start(
        SimConfig::default()
            .nodes(2)
            .scheduler(true)
            .kubelet(true)
            .taint_eviction(true),
    )
    .await;
    let pods: Api<Pod> = env.api();
    let nodes: Api<Node> = Api::all(env.client.clone());
    let pp = PostParams::default();
    pods.create(&pp, &pod("short", &[])).await.unwrap();
    let mut patient = pod("patient", &[]);
    patient.spec.as_mut().unwrap().tolerations =
        Some(vec![k8s_openapi::api::core::v1::Toleration {
            key: Some("node.kubernetes.io/unreachable".into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: None,
            ..Default::default()
        }]);
    patient.spec.as_mut().unwrap().node_selector = None;
    pods.create(&pp, &patient).await.unwrap();
    let node = wait_for("pod short Running and Ready", TIMEOUT, || async {
        let p = pods.get("short").await.ok()?;
        let st = p.status?;
        let ready = st
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (st.phase.as_deref() == Some("Running") && ready)
            .then(|| p.spec.unwrap().node_name.unwrap())
    })
    .await;
    // Put the patient on the same node so both see the failure.
    let patient_node = pods.get("patient").await.unwrap().spec.unwrap().node_name;
    env.fail_node(&node);
    // The node lifecycle controller writes the NoExecute and the NoSchedule unreachable taints
    // in separate passes (a real one may show either first): wait for both.
    wait_for(
        "the node Ready=Unknown with the unreachable NoExecute and NoSchedule taints",
        TIMEOUT,
        || async {
            let n = nodes.get(&node).await.ok()?;
            let unknown = n.status.clone()?.conditions?.iter().any(|c| {
                c.type_ == "Ready"
                    && c.status == "Unknown"
                    && c.reason.as_deref() == Some("NodeStatusUnknown")
            });
            let taints = n.spec.clone()?.taints?;
            let tainted = |effect: &str| {
                taints
                    .iter()
                    .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == effect)
            };
            (unknown && tainted("NoExecute") && tainted("NoSchedule")).then_some(())
        },
    )
    .await;
    // Deleted by the taint eviction once its default toleration runs out: gone at once on
    // kube-sim; Terminating on a real cluster, where only the node's kubelet can confirm it.
    wait_for(
        "pod short deleted by taint eviction after its default toleration",
        TIMEOUT,
        || async {
            let p = pods.get_opt("short").await.unwrap();
            p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await;
    if patient_node.as_deref() == Some(node.as_str()) {
        let p = pods.get("patient").await.unwrap();
        let ready = p
            .status
            .unwrap()
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            ready.status, "False",
            "pods on an unreachable node are marked not ready"
        );
    } else {
        assert!(pods.get_opt("patient").await.unwrap().is_some());
    }
    env.restore_node(&node);
    wait_for("the node Ready again without taints", TIMEOUT, || async {
        let n = nodes.get(&node).await.ok()?;
        let ready = n
            .status
            .clone()?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let tainted = n
            .spec
            .clone()
            .and_then(|s| s.taints)
            .is_some_and(|t| !t.is_empty());
        (ready && !tainted).then_some(())
    })
    .await;
    assert!(
        pods.get_opt("patient").await.unwrap().is_some(),
        "a pod tolerating forever stays"
    );
    wait_for("the evicted pod's deletion finished", TIMEOUT, || async {
        pods.get_opt("short").await.unwrap().is_none().then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn pv_binder_binds_a_pre_bound_volume_and_claim() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let pv_name = format!("pv-{}", env.namespace);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                 "hostPath": {"path": "/tmp/x"}, "claimRef": {"namespace": env.namespace, "name": "data"}}
    }))
    .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual", "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    let pp = PostParams::default();
    pvs.create(&pp, &pv).await.unwrap();
    let created = pvcs.create(&pp, &pvc).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Pending"));
    let bound = wait_for("the claim Bound", TIMEOUT, || async {
        let c = pvcs.get("data").await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    })
    .await;
    assert_eq!(
        bound.spec.clone().unwrap().volume_name.as_deref(),
        Some(pv_name.as_str())
    );
    assert_eq!(
        bound.annotations()["pv.kubernetes.io/bind-completed"],
        "yes"
    );
    assert_eq!(
        bound.status.clone().unwrap().capacity.unwrap()["storage"].0,
        "2Gi"
    );
    let volume = pvs.get(&pv_name).await.unwrap();
    assert_eq!(volume.status.unwrap().phase.as_deref(), Some("Bound"));
    assert_eq!(
        volume.spec.unwrap().claim_ref.unwrap().uid,
        bound.metadata.uid
    );
    env.shutdown().await;
}

#[tokio::test]
async fn pv_binder_leaves_a_claim_naming_a_volume_of_another_class_unbound() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let pv_name = format!("pv-fast-{}", env.namespace);
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": pv_name},
        "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                 "hostPath": {"path": "/tmp/x"}}
    }))
    .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "slow-claim"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "slow", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    let pp = PostParams::default();
    pvs.create(&pp, &pv).await.unwrap();
    pvcs.create(&pp, &pvc).await.unwrap();
    // A pre-bound claim of the right class, created after, still binds: the binder is running.
    let ok_pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": format!("pv-slow-{}", env.namespace)},
        "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "slow",
                 "hostPath": {"path": "/tmp/y"}, "claimRef": {"namespace": env.namespace, "name": "witness"}}
    }))
    .unwrap();
    let witness: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "witness"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "slow", "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    pvs.create(&pp, &ok_pv).await.unwrap();
    pvcs.create(&pp, &witness).await.unwrap();
    wait_for("the witness claim Bound", TIMEOUT, || async {
        let c = pvcs.get("witness").await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
    // As in Kubernetes, the class mismatch keeps the named volume free and the claim Pending
    // (checked again after several more binder passes).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let volume = pvs.get(&pv_name).await.unwrap();
    assert!(
        volume.spec.unwrap().claim_ref.is_none(),
        "the fast volume was claimed"
    );
    let claim = pvcs.get("slow-claim").await.unwrap();
    assert_eq!(claim.status.unwrap().phase.as_deref(), Some("Pending"));
    env.shutdown().await;
}

#[tokio::test]
async fn token_and_access_reviews_answer_for_service_accounts_and_their_grants() {
    let env = TestEnv::start(SimConfig::default()).await;
    let (oncall, token) = env.service_account_token("oncall", &[]).await;
    env.allow(&oncall, "update", "control.ballast.dev", "interception")
        .await;
    let tr: Api<k8s_openapi::api::authentication::v1::TokenReview> = Api::all(env.client.clone());
    let review = serde_json::from_value(json!({"spec": {"token": token}})).unwrap();
    let out = tr
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(out.authenticated, Some(true));
    let user = out.user.unwrap();
    assert_eq!(user.username.as_deref(), Some(oncall.as_str()));
    let groups = user.groups.unwrap();
    assert!(
        groups.contains(&"system:serviceaccounts".to_string())
            && groups.contains(&format!("system:serviceaccounts:{}", env.namespace)),
        "{groups:?}"
    );
    let forged = serde_json::from_value(json!({"spec": {"token": "not-a-token"}})).unwrap();
    let out = tr
        .create(&PostParams::default(), &forged)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(out.authenticated, Some(true));
    let sar: Api<k8s_openapi::api::authorization::v1::SubjectAccessReview> =
        Api::all(env.client.clone());
    let ask = |verb: &str| {
        serde_json::from_value(json!({"spec": {"user": oncall, "groups": groups,
            "resourceAttributes": {"verb": verb, "group": "control.ballast.dev", "resource": "interception"}}}))
        .unwrap()
    };
    let yes = sar
        .create(&PostParams::default(), &ask("update"))
        .await
        .unwrap();
    assert!(yes.status.unwrap().allowed);
    let no = sar
        .create(&PostParams::default(), &ask("delete"))
        .await
        .unwrap();
    assert!(!no.status.unwrap().allowed);
    // An identity with no grant, acting on the cluster itself, is held to the same rules.
    let stranger = env.client_as("stranger", &[]).await;
    let (code, _, message) = api_error(
        Api::<Pod>::namespaced(stranger, &env.namespace)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        message.contains("User \"stranger\" cannot list resource \"pods\""),
        "{message}"
    );
    env.shutdown().await;
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// kubectl runs as a blocking child process: the simulator needs other threads meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_creates_applies_patches_deletes_and_watches() {
    let env = TestEnv::start(SimConfig::default().nodes(1).scheduler(true).kubelet(true)).await;
    let kc = env.kubeconfig.clone();
    let ns = env.namespace.clone();
    let Some(out) = kubectl(&kc, &["get", "nodes"]) else {
        return;
    };
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&env.node(1)) && text(&out).contains("Ready"),
        "{}",
        text(&out)
    );
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: {ns}\n  labels: {{app: web}}\nspec:\n  containers:\n  - name: app\n    image: registry.example/web:1.0\n"
    );
    let out = kubectl_with_input(&kc, &["create", "-f", "-"], Some(&manifest)).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pod/web created"), "{}", text(&out));

    let settings = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\ndata:\n  mode: fast\n"
    );
    let out = kubectl_with_input(&kc, &["apply", "-f", "-"], Some(&settings)).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("configmap/settings created"),
        "{}",
        text(&out)
    );
    let applied = env.api::<ConfigMap>().get("settings").await.unwrap();
    assert!(
        applied
            .annotations()
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );

    // Typed kubectl commands send protobuf bodies.
    let out = kubectl(
        &kc,
        &[
            "create",
            "configmap",
            "generated",
            "-n",
            &ns,
            "--from-literal=a=b",
        ],
    )
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let generated = env.api::<ConfigMap>().get("generated").await.unwrap();
    assert_eq!(generated.data.unwrap()["a"], "b");

    let out = kubectl(
        &kc,
        &[
            "patch",
            "configmap",
            "settings",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"data":{"mode":"slow"}}"#,
        ],
    )
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.api::<ConfigMap>()
            .get("settings")
            .await
            .unwrap()
            .data
            .unwrap()["mode"],
        "slow"
    );

    wait_for("kubectl to show the pod Running", TIMEOUT, || async {
        let out = kubectl(&kc, &["get", "pods", "-n", &ns])?;
        let t = text(&out);
        (t.contains("web") && t.contains("Running") && t.contains("1/1")).then_some(())
    })
    .await;
    let out = kubectl(
        &kc,
        &[
            "get",
            "pod",
            "web",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.phase}",
        ],
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Running");

    let watch = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kc.to_str().unwrap(),
            "get",
            "configmaps",
            "-n",
            &ns,
            "--watch",
            "--output-watch-events",
            "--request-timeout=4s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cms: Api<ConfigMap> = env.api();
    tokio::time::sleep(Duration::from_millis(800)).await;
    cms.create(&PostParams::default(), &cm("watched"))
        .await
        .unwrap();

    let out = kubectl(&kc, &["delete", "pod", "web", "-n", &ns]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pod \"web\" deleted"), "{}", text(&out));
    assert!(env.api::<Pod>().get_opt("web").await.unwrap().is_none());

    let out = tokio::task::spawn_blocking(move || watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(t.contains("ADDED") && t.contains("settings"), "{t}");
    assert!(t.contains("watched"), "watch saw the later create: {t}");
    env.shutdown().await;
}

#[tokio::test]
async fn events_recorded_through_events_v1_are_listed_as_core_events() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let env = TestEnv::start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = env.api();
    let target = cms
        .create(&PostParams::default(), &cm("subject"))
        .await
        .unwrap();
    let recorder = Recorder::new(
        env.client.clone(),
        Reporter {
            controller: "ballast.dev/e2e".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Checked".into(),
        note: Some("all good".into()),
        action: "Check".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &target.object_ref(&()))
        .await
        .unwrap();
    let core: Api<k8s_openapi::api::core::v1::Event> = env.api();
    let listed = core
        .list(&ListParams::default().fields("involvedObject.name=subject"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1, "{listed:?}");
    let e = &listed.items[0];
    assert_eq!(e.message.as_deref(), Some("all good"));
    assert_eq!(e.reason.as_deref(), Some("Checked"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("ConfigMap"));
    let none = core
        .list(&ListParams::default().fields("involvedObject.name=other"))
        .await
        .unwrap();
    assert!(none.items.is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn scheduler_selects_a_node_for_wait_for_first_consumer_claims_and_waits_for_binding() {
    use k8s_openapi::api::storage::v1::StorageClass;
    let env = TestEnv::start(
        SimConfig::default()
            .nodes(2)
            .scheduler(true)
            .kubelet(true)
            .pv_binder(true),
    )
    .await;
    let class_name = format!("wffc-{}", env.namespace);
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": class_name}, "provisioner": "e2e.ballast.dev/fake",
        "volumeBindingMode": "WaitForFirstConsumer"}))
    .unwrap();
    Api::<StorageClass>::all(env.client.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class_name, "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    let mut p = pod("consumer", &[]);
    p.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(json!(
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}))
        .unwrap(),
    ]);
    let pods: Api<Pod> = env.api();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let node = wait_for(
        "the scheduler to select a node for the claim",
        TIMEOUT,
        || async {
            pvcs.get("data")
                .await
                .ok()?
                .annotations()
                .get("volume.kubernetes.io/selected-node")
                .cloned()
        },
    )
    .await;
    assert!(
        pods.get("consumer")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .is_none(),
        "pod waits for its claim"
    );
    // Play the provisioner: a PV pre-bound to the claim; the PV binder binds them.
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": format!("pv-{}", env.namespace)},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": class_name,
                 "hostPath": {"path": "/tmp/x"}, "claimRef": {"namespace": env.namespace, "name": "data"}}}))
    .unwrap();
    Api::<PersistentVolume>::all(env.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let placed = wait_for("the pod on the selected node, Running", TIMEOUT, || async {
        let p = pods.get("consumer").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running"))
            .then(|| p.spec.unwrap().node_name.unwrap())
    })
    .await;
    assert_eq!(placed, node);
    env.shutdown().await;
}
