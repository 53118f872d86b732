//! Custom resources as a real API server serves them: structural-schema defaulting, pruning and
//! validation with the real 422s (create, update, patch, scale), defaults applied on read, and
//! several versions with `None` and `Webhook` conversion. Each CRD gets a group named after the
//! test's namespace, so runs on a real cluster do not collide; the CRD is deleted at the end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use ballast_e2e::{SimConfig, TestEnv, kubectl_with_input, wait_for};
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CRD_READY: Duration = Duration::from_secs(30);
fn fixture(name: &str) -> Value {
    let text = match name {
        "defaulted" => {
            include_str!("../../crates/kube-sim/tests/data/real-api/crd-create-defaulted.json")
        }
        "replicas-0" => {
            include_str!("../../crates/kube-sim/tests/data/real-api/crd-create-replicas-0.json")
        }
        "wrong-type" => {
            include_str!("../../crates/kube-sim/tests/data/real-api/crd-create-wrong-type.json")
        }
        "pruned" => include_str!(
            "../../crates/kube-sim/tests/data/real-api/crd-create-unknown-field-pruned.json"
        ),
        "scale-0" => include_str!("../../crates/kube-sim/tests/data/real-api/crd-scale-to-0.json"),
        "read-v2" => {
            include_str!("../../crates/kube-sim/tests/data/real-api/conversion-read-v2.json")
        }
        "review" => {
            include_str!("../../crates/kube-sim/tests/data/real-api/conversion-review-request.json")
        }
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).expect("fixture is JSON")
}

/// A fixture's Status as a client sees it, with the fixture's group replaced by `group`.
fn expected_status(fx: &Value, group: &str) -> Value {
    let text = fx["body"].to_string().replace("apps.mycompany.com", group);
    let mut s: Value = serde_json::from_str(&text).unwrap();
    let m = s.as_object_mut().unwrap();
    for k in ["kind", "apiVersion", "metadata"] {
        m.remove(k);
    }
    s
}

fn status_of(e: kube::Error) -> Value {
    match e {
        kube::Error::Api(s) => {
            let mut v = serde_json::to_value(*s).unwrap();
            v.as_object_mut().unwrap().remove("metadata");
            v
        }
        other => panic!("expected an API error, got {other}"),
    }
}

fn group_of(env: &TestEnv) -> String {
    format!("{}.example.com", env.namespace)
}

/// The PodManager v1 schema the fixtures were taken with, plus fields for enum, pattern and
/// maxLength checks.
fn podmanager_like_crd(group: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("podmanagers.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "podmanagers", "singular": "podmanager", "kind": "PodManager"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {
                    "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.currentReplicas",
                    "labelSelectorPath": ".status.selector"}},
                "schema": {"openAPIV3Schema": {
                    "type": "object", "required": ["spec"],
                    "properties": {
                        "spec": {"type": "object", "required": ["image"], "properties": {
                            "image": {"type": "string", "minLength": 1},
                            "replicas": {"type": "integer", "format": "int32", "minimum": 1, "default": 3},
                            "tier": {"type": "string", "enum": ["gold", "silver"]},
                            "owner": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8}}},
                        "status": {"type": "object", "nullable": true, "properties": {
                            "currentReplicas": {"type": "integer", "format": "int32", "default": 0},
                            "selector": {"type": "string", "nullable": true}}}}}}
            }]
        }
    })
}

/// Creates the CRD and waits until its resource answers (a real API server takes a moment).
async fn install(
    client: &Client,
    crd: &Value,
    namespace: &str,
    version: &str,
) -> Api<DynamicObject> {
    let crd: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let api = api_for(client, &crd, namespace, version);
    wait_for("the custom resource to be served", CRD_READY, || {
        let api = api.clone();
        async move { api.list(&ListParams::default()).await.ok().map(|_| ()) }
    })
    .await;
    api
}

fn api_for(
    client: &Client,
    crd: &CustomResourceDefinition,
    namespace: &str,
    version: &str,
) -> Api<DynamicObject> {
    let group = crd.spec.group.clone();
    let ar = ApiResource {
        api_version: format!("{group}/{version}"),
        group,
        version: version.into(),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    };
    Api::namespaced_with(client.clone(), namespace, &ar)
}

async fn uninstall(client: &Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if let Err(e) = crds.delete(name, &DeleteParams::default()).await {
        eprintln!("failed to delete CRD {name}: {e}");
    }
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("a valid object")
}

fn with_api_version(body: &Value, group: &str, version: &str) -> Value {
    let mut b = body.clone();
    b["apiVersion"] = json!(format!("{group}/{version}"));
    b
}

// kubectl blocks its thread; the simulator serves from the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_are_defaulted_pruned_and_validated_like_the_api_server() {
    let env = TestEnv::start(SimConfig::default()).await;
    let group = group_of(&env);
    let crd = podmanager_like_crd(&group);
    let api = install(&env.client, &crd, &env.namespace, "v1").await;
    let pp = PostParams::default();

    // Defaulting: replicas 3 when not given.
    let fx = fixture("defaulted");
    let created = api
        .create(
            &pp,
            &obj(with_api_version(&fx["request"]["body"], &group, "v1")),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"], fx["body"]["spec"]);

    // Validation on create: minimum, then a string for an integer (two causes, as the server).
    for name in ["replicas-0", "wrong-type"] {
        let fx = fixture(name);
        let body = with_api_version(&fx["request"]["body"], &group, "v1");
        let err = api.create(&pp, &obj(body)).await.unwrap_err();
        assert_eq!(status_of(err), expected_status(&fx, &group), "{name}");
    }

    // Pruning: the unknown field is dropped silently.
    let fx = fixture("pruned");
    let created = api
        .create(
            &pp,
            &obj(with_api_version(&fx["request"]["body"], &group, "v1")),
        )
        .await
        .unwrap();
    assert_eq!(created.data["spec"], fx["body"]["spec"]);
    let read = api.get("pm-extra").await.unwrap();
    assert_eq!(read.data["spec"], fx["body"]["spec"]);
    // kubectl: strict field validation (its default) refuses the unknown field; with
    // --validate=warn the server prunes it and says so in a Warning header, which kubectl prints.
    let manifest = |name: &str| {
        let mut body = with_api_version(&fx["request"]["body"], &group, "v1");
        body["metadata"]["name"] = json!(name);
        body["metadata"]["namespace"] = json!(env.namespace);
        body.to_string()
    };
    if let Some(out) = kubectl_with_input(
        &env.kubeconfig,
        &["create", "-f", "-"],
        Some(&manifest("pm-strict")),
    ) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(
                "Error from server (BadRequest): error when creating \"STDIN\": PodManager in version \"v1\" \
                 cannot be handled as a PodManager: strict decoding error: unknown field \"spec.bogus\""
            ),
            "{stderr}"
        );
        let out = kubectl_with_input(
            &env.kubeconfig,
            &["create", "--validate=warn", "-f", "-"],
            Some(&manifest("pm-warned")),
        )
        .expect("kubectl ran above");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let warning = fx["headers"]["Warning"].as_str().unwrap();
        assert_eq!(warning, "299 - \"unknown field \\\"spec.bogus\\\"\"");
        assert!(
            stderr.contains("Warning: unknown field \"spec.bogus\""),
            "{stderr}"
        );
        assert_eq!(
            api.get("pm-warned").await.unwrap().data["spec"],
            fx["body"]["spec"]
        );
    }

    // The scale subresource validates the object it writes.
    let fx = fixture("scale-0");
    let err = api
        .patch_scale(
            "pm-default",
            &PatchParams::default(),
            &Patch::Merge(&fx["request"]["body"]),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(err), expected_status(&fx, &group));
    let scale = api
        .patch_scale(
            "pm-default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));

    // Patches and updates are validated too; maxLength, pattern and enum have their own texts.
    // (One field per request: the real server visits sibling fields in no fixed order.) A string
    // gets the first of its checks that fails, maxLength before pattern.
    for (owner, message, reason) in [
        (
            "Team-Platform",
            "spec.owner: Too long: may not be more than 8 bytes".to_owned(),
            "FieldValueTooLong",
        ),
        (
            "Team",
            "spec.owner: Invalid value: \"Team\": spec.owner in body should match '^[a-z]+$'"
                .to_owned(),
            "FieldValueInvalid",
        ),
    ] {
        let err = api
            .patch(
                "pm-default",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"owner": owner}})),
            )
            .await
            .unwrap_err();
        let status = status_of(err);
        assert_eq!(status["code"], 422);
        assert_eq!(
            status["message"],
            format!("PodManager.{group} \"pm-default\" is invalid: {message}")
        );
        let reasons: Vec<&str> = status["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["reason"].as_str().unwrap())
            .collect();
        assert_eq!(reasons, vec![reason], "{owner}");
    }
    let err = api
        .patch(
            "pm-default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tier": "bronze"}})),
        )
        .await
        .unwrap_err();
    let status = status_of(err);
    assert_eq!(
        status["message"],
        format!(
            "PodManager.{group} \"pm-default\" is invalid: spec.tier: Unsupported value: \"bronze\": supported values: \"gold\", \"silver\""
        )
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueNotSupported"
    );
    let mut current = api.get("pm-default").await.unwrap();
    current.data["spec"]["image"] = json!("");
    let err = api.replace("pm-default", &pp, &current).await.unwrap_err();
    assert_eq!(
        status_of(err)["message"],
        format!(
            "PodManager.{group} \"pm-default\" is invalid: spec.image: Invalid value: \"\": spec.image in body should be at least 1 chars long"
        )
    );
    current.data["spec"]
        .as_object_mut()
        .unwrap()
        .remove("image");
    let err = api.replace("pm-default", &pp, &current).await.unwrap_err();
    let status = status_of(err);
    assert_eq!(
        status["message"],
        format!("PodManager.{group} \"pm-default\" is invalid: spec.image: Required value")
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueRequired"
    );

    // Removing a defaulted field on update defaults it again.
    let patched = api
        .patch(
            "pm-default",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "remove", "path": "/spec/replicas"},
                    {"op": "add", "path": "/spec/tier", "value": "gold"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.data["spec"],
        json!({"image": "nginx", "replicas": 3, "tier": "gold"})
    );

    // A default added to the schema later appears when existing objects are read.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let crd_name = format!("podmanagers.{group}");
    crds.patch(
        &crd_name,
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "add",
                "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/owner/default",
                "value": "nobody"}]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    let read = wait_for("the new default on read", CRD_READY, || {
        let api = api.clone();
        async move {
            let o = api.get("pm-extra").await.ok()?;
            (o.data["spec"]["owner"] == "nobody").then_some(o)
        }
    })
    .await;
    assert_eq!(
        read.data["spec"],
        json!({"image": "nginx", "replicas": 3, "owner": "nobody"})
    );

    uninstall(&env.client, &crd_name).await;
    env.shutdown().await;
}

/// A CRD `things.<group>` with v1 (storage) and v2, converted by `conversion`.
fn things_crd(group: &str, conversion: Value) -> Value {
    let schema = |fields: Value| {
        json!({"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "properties": fields}}}})
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("things.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "conversion": conversion,
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": schema(json!({"alpha": {"type": "integer"}, "a": {"type": "integer"}}))},
                {"name": "v2", "served": true, "storage": false,
                 "schema": schema(json!({"a": {"type": "integer", "minimum": 1}}))}
            ]
        }
    })
}

#[tokio::test]
async fn versions_without_a_webhook_only_change_the_api_version_and_discovery_lists_both() {
    let env = TestEnv::start(SimConfig::default()).await;
    let group = group_of(&env);
    let crd = things_crd(&group, json!({"strategy": "None"}));
    let v1 = install(&env.client, &crd, &env.namespace, "v1").await;
    let typed: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    let v2 = api_for(&env.client, &typed, &env.namespace, "v2");
    let pp = PostParams::default();

    v2.create(
        &pp,
        &obj(json!({"apiVersion": format!("{group}/v2"), "kind": "Thing",
                    "metadata": {"name": "t1"}, "spec": {"a": 1}})),
    )
    .await
    .unwrap();
    let as_v1 = v1.get("t1").await.unwrap();
    assert_eq!(
        as_v1.types.as_ref().map(|t| t.api_version.clone()),
        Some(format!("{group}/v1"))
    );
    assert_eq!(as_v1.data["spec"], json!({"a": 1}));
    // v2's schema is applied to what v2 writes: a v1-only field is pruned, minimum enforced.
    let err = v2
        .create(
            &pp,
            &obj(json!({"apiVersion": format!("{group}/v2"), "kind": "Thing",
                        "metadata": {"name": "t0"}, "spec": {"a": 0}})),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(err)["code"], 422);
    let pruned = v2
        .create(
            &pp,
            &obj(json!({"apiVersion": format!("{group}/v2"), "kind": "Thing",
                        "metadata": {"name": "t2"}, "spec": {"a": 2, "alpha": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(pruned.data["spec"], json!({"a": 2}));

    let groups = env.client.list_api_groups().await.unwrap();
    let ours = groups
        .groups
        .iter()
        .find(|g| g.name == group)
        .expect("the CRD's group in discovery");
    let versions: Vec<&str> = ours.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, vec!["v2", "v1"]);
    assert_eq!(
        ours.preferred_version.as_ref().map(|p| p.version.as_str()),
        Some("v2")
    );

    uninstall(&env.client, &format!("things.{group}")).await;
    env.shutdown().await;
}

/// An HTTPS conversion webhook renaming v1 `spec.alpha` to v2 `spec.a`; records the reviews.
struct Converter {
    url: String,
    ca_bundle: String,
    seen: Arc<Mutex<Vec<Value>>>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

fn convert_one(obj: &Value, desired: &str) -> Value {
    let mut out = obj.clone();
    let spec = out["spec"].as_object_mut().cloned().unwrap_or_default();
    let mut new_spec = serde_json::Map::new();
    for (k, v) in spec {
        let k = match (desired.ends_with("/v1"), k.as_str()) {
            (true, "a") => "alpha".to_string(),
            (false, "alpha") => "a".to_string(),
            _ => k,
        };
        new_spec.insert(k, v);
    }
    out["spec"] = Value::Object(new_spec);
    out["apiVersion"] = json!(desired);
    out
}

async fn start_converter(host: &str) -> Converter {
    ballast_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = ballast_runtime::tls::generate(&[host, "localhost"]).unwrap();
    let (cert, key) = certs.write_to(dir.path()).unwrap();
    let tls = ballast_runtime::tls::ReloadingTls::load(&cert, &key).unwrap();
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let convert = move |Json(body): Json<Value>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(body.clone());
            let req = &body["request"];
            let desired = req["desiredAPIVersion"].as_str().unwrap_or_default();
            let objects: Vec<Value> = req["objects"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|o| convert_one(o, desired))
                .collect();
            Json(
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                "response": {"uid": req["uid"], "convertedObjects": objects, "result": {"status": "Success"}}}),
            )
        }
    };
    let router = axum::Router::new().route("/convert", post(convert));
    let bind = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let listener = tokio::net::TcpListener::bind((bind, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(ballast_runtime::http::serve(
        listener,
        router,
        Some(tls),
        stop.clone(),
    ));
    Converter {
        url: format!("https://{host}:{port}/convert"),
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem),
        seen,
        stop,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_conversion_webhook_converts_reads_lists_watches_and_writes_and_its_failure_is_a_500() {
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("a conversion webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let host = host.host;
    let hook = start_converter(&host).await;
    let group = group_of(&env);
    let crd = things_crd(
        &group,
        json!({"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"],
            "clientConfig": {"url": hook.url, "caBundle": hook.ca_bundle}}}),
    );
    let v1 = install(&env.client, &crd, &env.namespace, "v1").await;
    let typed: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    let v2 = api_for(&env.client, &typed, &env.namespace, "v2");
    let pp = PostParams::default();

    // Write through v2: the webhook turns it into the storage version v1.
    let fx = fixture("read-v2");
    let body = json!({"apiVersion": format!("{group}/v2"), "kind": "Thing",
                      "metadata": {"name": "t1"}, "spec": fx["body"]["spec"]});
    v2.create(&pp, &obj(body)).await.unwrap();
    let review = fixture("review");
    let first = hook
        .seen
        .lock()
        .unwrap()
        .first()
        .cloned()
        .expect("a ConversionReview");
    assert_eq!(first["apiVersion"], review["apiVersion"]);
    assert_eq!(first["kind"], review["kind"]);
    assert_eq!(first["request"]["desiredAPIVersion"], format!("{group}/v1"));
    let sent = &first["request"]["objects"][0];
    assert_eq!(sent["apiVersion"], format!("{group}/v2"));
    assert_eq!(
        (&sent["kind"], &sent["spec"]),
        (
            &review["request"]["objects"][0]["kind"],
            &review["request"]["objects"][0]["spec"]
        )
    );
    assert!(
        first["request"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );

    // Read in both versions: v1 shows the stored form, v2 the converted one (the fixture).
    let stored = v1.get("t1").await.unwrap();
    assert_eq!(stored.data["spec"], json!({"alpha": 1}));
    let read = v2.get("t1").await.unwrap();
    assert_eq!(
        read.types.as_ref().map(|t| t.api_version.clone()),
        Some(format!("{group}/v2"))
    );
    assert_eq!(read.data["spec"], fx["body"]["spec"]);
    let listed = v2.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].data["spec"], json!({"a": 1}));
    let mut events = v2
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.data["spec"], json!({"a": 1})),
        other => panic!("expected ADDED, got {other:?}"),
    }

    // Update through v2, validated with v2's schema before conversion.
    let err = v2
        .patch(
            "t1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"a": 0}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        status_of(err)["message"],
        format!(
            "Thing.{group} \"t1\" is invalid: spec.a: Invalid value: 0: spec.a in body should be greater than or equal to 1"
        )
    );
    v2.patch(
        "t1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"a": 7}})),
    )
    .await
    .unwrap();
    assert_eq!(
        v1.get("t1").await.unwrap().data["spec"],
        json!({"alpha": 7})
    );

    // The webhook down: reads of v2 fail with the API server's error; v1 needs no conversion.
    // Lists of v2 are answered from v2's watch cache, which holds the objects as converted when
    // they were written: they go on answering while nothing changes.
    let listed = v2.list(&ListParams::default()).await.unwrap();
    hook.stop.cancel();
    let err = wait_for("reads of v2 to fail", Duration::from_secs(10), || {
        let v2 = v2.clone();
        async move { v2.get("t1").await.err() }
    })
    .await;
    let status = status_of(err);
    assert_eq!(status["code"], 500);
    let prefix = format!(
        "conversion webhook for {group}/v1, Kind=Thing failed: Post \"{}?timeout=30s\": ",
        hook.url
    );
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(&prefix), "{message}");
    let cached = v2.list(&ListParams::default()).await.unwrap();
    let specs = |l: &kube::core::ObjectList<DynamicObject>| -> Vec<Value> {
        l.items.iter().map(|o| o.data["spec"].clone()).collect()
    };
    assert_eq!(specs(&cached), specs(&listed));
    assert_eq!(specs(&cached), vec![json!({"a": 7})]);
    // A write that needs the webhook fails, so the watch cache has nothing newer to serve.
    let err = v2
        .patch(
            "t1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"a": 8}})),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(err)["code"], 500);
    assert_eq!(
        v1.get("t1").await.unwrap().data["spec"],
        json!({"alpha": 7})
    );

    uninstall(&env.client, &format!("things.{group}")).await;
    env.shutdown().await;
}
