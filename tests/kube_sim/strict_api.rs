//! Where the API server is strict: metadata validation, what a `/status` write keeps, JSON
//! patches that do not apply, and the tables kubectl prints. Each scenario asserts the answer a
//! real API server gives (recorded in `tests/data/real-api/`), so it passes on a real cluster too.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::post;
use ballast_e2e::{SimConfig, TestEnv, kubectl, wait_for};
use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{TIMEOUT, Webhook};

/// A recorded answer of a real API server.
fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/real-api")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `metav1.Status` body a failed call answered, as the server sent it.
fn status_body(e: kube::Error) -> Value {
    match e {
        kube::Error::Api(s) => {
            let mut v = serde_json::to_value(&*s).expect("a Status serializes");
            v["kind"] = json!("Status");
            v["apiVersion"] = json!("v1");
            v["metadata"] = json!({});
            v
        }
        other => panic!("expected an API error, got {other}"),
    }
}

fn object<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// An HTTPS webhook whose review answers come from `respond(request)`.
async fn start_hook(respond: fn(&Value) -> Value) -> Webhook {
    ballast_runtime::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = ballast_runtime::tls::generate(&["127.0.0.1", "localhost"]).unwrap();
    let (cert, key) = certs.write_to(dir.path()).unwrap();
    let tls = ballast_runtime::tls::ReloadingTls::load(&cert, &key).unwrap();
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let review = move |Json(body): Json<Value>| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(body.clone());
            let req = &body["request"];
            let mut response = respond(req);
            response["uid"] = req["uid"].clone();
            Json(
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
            )
        }
    };
    let router = axum::Router::new().route("/review", post(review));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(ballast_runtime::http::serve(
        listener,
        router,
        Some(tls),
        stop.clone(),
    ));
    Webhook {
        url: format!("https://127.0.0.1:{port}/review"),
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem),
        seen,
        stop,
        _dir: dir,
    }
}

fn patch_response(patch: Value) -> Value {
    json!({"allowed": true, "patchType": "JSONPatch",
           "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
}

/// Registers `hook` as a mutating webhook for `rules` in this test's namespace, and returns once
/// the API server has the configuration in effect (a real one a moment after it is stored).
async fn register_mutating(env: &TestEnv, hook: &Webhook, rules: Value, failure_policy: &str) {
    let config: MutatingWebhookConfiguration = object(json!({
        "metadata": {"name": format!("strict-{}", env.namespace)},
        "webhooks": [
            {"name": "strict.e2e.ballast.dev",
             "clientConfig": {"url": hook.url, "caBundle": hook.ca_bundle},
             "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.namespace}},
             "rules": rules, "sideEffects": "None", "admissionReviewVersions": ["v1"],
             "failurePolicy": failure_policy, "timeoutSeconds": 5},
            env.webhook_probe("strict"),
        ]
    }));
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    env.wait_for_webhook_probe("strict", true).await;
}

/// Deletes the configuration and returns once the API server no longer has it in effect.
async fn unregister_mutating(env: &TestEnv) {
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .delete(&format!("strict-{}", env.namespace), &Default::default())
        .await
        .unwrap();
    env.wait_for_webhook_probe("strict", false).await;
}

fn causes(body: &Value) -> Vec<(String, String)> {
    body["details"]["causes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or_default().to_string(),
                        c["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn invalid_names_and_labels_are_refused_with_the_real_422() {
    let env = TestEnv::start(SimConfig::default()).await;
    let pp = PostParams::default();
    let cms: Api<ConfigMap> = env.api();

    for file in ["invalid-name-configmap.json", "invalid-label-value.json"] {
        let f = fixture(file);
        let err = cms
            .create(&pp, &object(f["request"]["body"].clone()))
            .await
            .unwrap_err();
        assert_eq!(status_body(err), f["body"], "{file}");
    }
    let f = fixture("invalid-generate-name-namespace.json");
    let err = Api::<Namespace>::all(env.client.clone())
        .create(&pp, &object(f["request"]["body"].clone()))
        .await
        .unwrap_err();
    assert_eq!(status_body(err), f["body"]);

    // generateName: the prefix and the name made from it are both checked.
    let err = cms
        .create(&pp, &object(json!({"metadata": {"generateName": "Bad_"}})))
        .await
        .unwrap_err();
    let body = status_body(err);
    assert_eq!(
        (body["code"].as_u64(), body["reason"].as_str()),
        (Some(422), Some("Invalid"))
    );
    let fields: Vec<String> = causes(&body).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["metadata.generateName", "metadata.name"]);
    let generated = body["details"]["name"].as_str().unwrap();
    assert!(
        generated.starts_with("Bad_") && generated.len() == "Bad_".len() + 5,
        "{generated}"
    );
    assert!(
        body["message"].as_str().unwrap().starts_with(&format!(
            "ConfigMap \"{generated}\" is invalid: [metadata.generateName: Invalid value: \"Bad_\": a lowercase RFC 1123 subdomain"
        )),
        "{body}"
    );
    // A prefix ending in '-' is fine.
    let made = cms
        .create(&pp, &object(json!({"metadata": {"generateName": "web-"}})))
        .await
        .unwrap();
    assert!(made.name_any().starts_with("web-"));

    // Services are RFC 1123 labels since Kubernetes 1.36 (no longer RFC 1035: a leading digit
    // is fine), so no capital letters and no dots.
    env.api::<Service>()
        .create(
            &pp,
            &object(json!({"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}})),
        )
        .await
        .expect("a service name may start with a digit");
    let err = env
        .api::<Service>()
        .create(
            &pp,
            &object(json!({"metadata": {"name": "Web"}, "spec": {"ports": [{"port": 80}]}})),
        )
        .await
        .unwrap_err();
    let body = status_body(err);
    assert_eq!(
        body["message"],
        "Service \"Web\" is invalid: metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    );

    // Cluster-scoped kinds of other groups: the message names the qualified kind.
    let err =
        Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
            env.client.clone(),
        )
        .create(&pp, &object(json!({"metadata": {"name": "Bad_Hook"}})))
        .await
        .unwrap_err();
    let body = status_body(err);
    assert!(
        body["message"].as_str().unwrap().starts_with(
            "ValidatingWebhookConfiguration.admissionregistration.k8s.io \"Bad_Hook\" is invalid: metadata.name: Invalid value: \"Bad_Hook\": a lowercase RFC 1123 subdomain"
        ),
        "{body}"
    );
    assert_eq!(body["details"]["group"], "admissionregistration.k8s.io");
    assert_eq!(body["details"]["kind"], "ValidatingWebhookConfiguration");

    // Label keys on update: the stored object is unchanged.
    cms.create(&pp, &object(json!({"metadata": {"name": "keys"}})))
        .await
        .unwrap();
    let err = cms
        .patch(
            "keys",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"bad key": "v"}}})),
        )
        .await
        .unwrap_err();
    let body = status_body(err);
    // On update the real API server validates metadata in more than one place and repeats the
    // cause (three or four times, by kind); the message lists it once, and so does kube-sim.
    let mut distinct = causes(&body);
    distinct.dedup();
    assert_eq!(
        distinct,
        [(
            "metadata.labels".to_string(),
            "Invalid value: \"bad key\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string()
        )]
    );
    assert!(cms.get("keys").await.unwrap().metadata.labels.is_none());
    env.shutdown().await;
}

/// Adds `webhook-saw: <subresource>` to the annotations of the object under review.
fn annotate_status_writes(req: &Value) -> Value {
    let op = if req["object"]["metadata"]["annotations"].is_object() {
        json!({"op": "add", "path": "/metadata/annotations/webhook-saw", "value": "status"})
    } else {
        json!({"op": "add", "path": "/metadata/annotations", "value": {"webhook-saw": "status"}})
    };
    patch_response(json!([op]))
}

#[tokio::test]
async fn status_writes_keep_labels_and_annotations_and_reset_only_the_spec() {
    let env = TestEnv::start(SimConfig::default()).await;
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let claim: PersistentVolumeClaim = object(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}}
    }));
    pvcs.create(&PostParams::default(), &claim).await.unwrap();

    // A patch through /status: metadata kept, spec reset, status written.
    let out = pvcs
        .patch_status(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"labels": {"via": "status-patch"}, "annotations": {"note": "kept"}},
                "spec": {"volumeName": "not-through-status"},
                "status": {"phase": "Pending"}
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        out.labels().get("via").map(String::as_str),
        Some("status-patch")
    );
    let stored = pvcs.get("data").await.unwrap();
    assert_eq!(stored.labels()["via"], "status-patch");
    assert_eq!(stored.annotations()["note"], "kept");
    assert_eq!(stored.spec.as_ref().unwrap().volume_name, None);

    // A PUT to /status: the same.
    let mut replaced = stored.clone();
    replaced
        .labels_mut()
        .insert("via".into(), "status-put".into());
    replaced.spec.as_mut().unwrap().volume_name = Some("still-not".into());
    pvcs.replace_status("data", &PostParams::default(), &replaced)
        .await
        .unwrap();
    let stored = pvcs.get("data").await.unwrap();
    assert_eq!(stored.labels()["via"], "status-put");
    assert_eq!(stored.spec.as_ref().unwrap().volume_name, None);

    // A mutating webhook's annotation on a status write is stored.
    let hook = start_hook(annotate_status_writes).await;
    register_mutating(
        &env,
        &hook,
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                "resources": ["persistentvolumeclaims/status"]}]),
        "Fail",
    )
    .await;
    pvcs.patch_status(
        "data",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Pending"}})),
    )
    .await
    .unwrap();
    let stored = pvcs.get("data").await.unwrap();
    assert_eq!(
        stored.annotations().get("webhook-saw").map(String::as_str),
        Some("status")
    );
    assert_eq!(stored.annotations()["note"], "kept");
    let seen = hook.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "one status write reviewed");
    assert_eq!(seen[0]["request"]["subResource"], "status");
    unregister_mutating(&env).await;
    hook.stop.cancel();
    env.shutdown().await;
}

/// Adds a label whatever the object looks like: the patch does not apply to objects without
/// labels.
fn add_label_blindly(_req: &Value) -> Value {
    patch_response(json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}]))
}

#[tokio::test]
async fn json_patches_adding_under_a_missing_parent_are_refused() {
    let env = TestEnv::start(SimConfig::default()).await;
    let pp = PostParams::default();

    // A client's JSON patch: 422 with the generic message and empty details.
    let cms: Api<ConfigMap> = env.api();
    cms.create(&pp, &object(json!({"metadata": {"name": "nolabels"}})))
        .await
        .unwrap();
    let f = fixture("client-json-patch-missing-parent.json");
    let err = cms
        .patch(
            "nolabels",
            &PatchParams::default(),
            &Patch::<()>::Json(object(f["request"]["body"].clone())),
        )
        .await
        .unwrap_err();
    assert_eq!(status_body(err), f["body"]);
    // A `test` for null on an absent path passes, so this guarded form applies.
    let guarded = json!([
        {"op": "test", "path": "/metadata/labels", "value": null},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}
    ]);
    let out = cms
        .patch(
            "nolabels",
            &PatchParams::default(),
            &Patch::<()>::Json(object(guarded)),
        )
        .await
        .unwrap();
    assert_eq!(out.labels()["x"], "y");

    // A webhook's: 500 with the library's message, whatever the failurePolicy.
    let hook = start_hook(add_label_blindly).await;
    let rules = json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                        "resources": ["secrets"]}]);
    let f = fixture("webhook-json-patch-missing-parent.json");
    let secrets: Api<Secret> = env.api();
    for policy in ["Fail", "Ignore"] {
        register_mutating(&env, &hook, rules.clone(), policy).await;
        let err = secrets
            .create(&pp, &object(f["request"]["body"].clone()))
            .await
            .unwrap_err();
        assert_eq!(status_body(err), f["body"], "failurePolicy {policy}");
        assert!(secrets.get_opt("s1").await.unwrap().is_none());
        unregister_mutating(&env).await;
    }
    // The same webhook patch applies to an object that has labels.
    register_mutating(&env, &hook, rules, "Fail").await;
    let labelled: Secret = object(json!({"metadata": {"name": "s2", "labels": {"a": "b"}}}));
    let out = secrets.create(&pp, &labelled).await.unwrap();
    assert_eq!(out.labels()["mutated"], "yes");
    unregister_mutating(&env).await;
    hook.stop.cancel();
    env.shutdown().await;
}

/// The rows kubectl prints, header first, each cut at the header's column starts (cells may be
/// empty; header names may hold single spaces, columns are three spaces apart at least).
fn table_rows(out: &std::process::Output) -> Vec<Vec<String>> {
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts = vec![0];
    let bytes = header.as_bytes();
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    std::iter::once(header)
        .chain(lines)
        .map(|line| {
            starts
                .iter()
                .enumerate()
                .map(|(n, &from)| {
                    let to = starts
                        .get(n + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    line.get(from.min(to)..to)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_prints_events_volumes_and_classes_with_the_real_columns() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let ns = env.namespace.clone();
    let pp = PostParams::default();
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let claim = pvcs
        .create(
            &pp,
            &object(json!({"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                         "resources": {"requests": {"storage": "1Gi"}}}})),
        )
        .await
        .unwrap();
    let now = now_rfc3339();
    let events: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &ns,
        &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::Event>(&()),
    );
    events
        .create(
            &pp,
            &object(json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "data.strict1"},
                "involvedObject": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                   "namespace": ns, "name": "data", "uid": claim.uid()},
                "reason": "WaitingForTest", "message": "waiting for the table test",
                "type": "Warning", "count": 3, "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": "strict-api-test"}
            })),
        )
        .await
        .unwrap();
    let Some(out) = kubectl(&env.kubeconfig, &["get", "events", "-n", &ns]) else {
        env.shutdown().await;
        return;
    };
    let rows = table_rows(&out);
    assert_eq!(
        rows[0],
        ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    let row = rows
        .iter()
        .find(|r| r.get(2).map(String::as_str) == Some("WaitingForTest"))
        .unwrap_or_else(|| panic!("no row for the event in {rows:?}"));
    assert_eq!(row[1], "Warning");
    assert_eq!(row[3], "persistentvolumeclaim/data");
    assert_eq!(row[4], "waiting for the table test");
    assert!(row[0].ends_with('s'), "LAST SEEN is an age: {row:?}");

    // Cluster-scoped kinds: only on the simulator is it safe to create a class and a volume.
    if env.on_sim() {
        let scs: Api<DynamicObject> = Api::all_with(
            env.client.clone(),
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::storage::v1::StorageClass>(&()),
        );
        scs.create(
            &pp,
            &object(json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "strict-fast", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "ballast.dev/hostpath", "reclaimPolicy": "Retain",
                "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true})),
        )
        .await
        .unwrap();
        let out = kubectl(&env.kubeconfig, &["get", "sc", "strict-fast"]).unwrap();
        let rows = table_rows(&out);
        assert_eq!(
            rows[0],
            [
                "NAME",
                "PROVISIONER",
                "RECLAIMPOLICY",
                "VOLUMEBINDINGMODE",
                "ALLOWVOLUMEEXPANSION",
                "AGE"
            ]
        );
        assert_eq!(
            rows[1][..5],
            [
                "strict-fast (default)",
                "ballast.dev/hostpath",
                "Retain",
                "WaitForFirstConsumer",
                "true"
            ]
        );

        let pvs: Api<DynamicObject> = Api::all_with(
            env.client.clone(),
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::core::v1::PersistentVolume>(
                &(),
            ),
        );
        pvs.create(
            &pp,
            &object(json!({"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": "strict-pv"},
                "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "strict-fast",
                         "hostPath": {"path": "/tmp/strict"}}})),
        )
        .await
        .unwrap();
        // New volumes are Pending until the PV controller marks them Available.
        wait_for("the volume to become Available", TIMEOUT, || async {
            let pv = pvs.get("strict-pv").await.ok()?;
            (pv.data.pointer("/status/phase") == Some(&json!("Available"))).then_some(())
        })
        .await;
        let out = kubectl(&env.kubeconfig, &["get", "pv", "strict-pv"]).unwrap();
        let rows = table_rows(&out);
        assert_eq!(
            rows[0],
            [
                "NAME",
                "CAPACITY",
                "ACCESS MODES",
                "RECLAIM POLICY",
                "STATUS",
                "CLAIM",
                "STORAGECLASS",
                "VOLUMEATTRIBUTESCLASS",
                "REASON",
                "AGE"
            ]
        );
        assert_eq!(
            rows[1][..9],
            [
                "strict-pv",
                "2Gi",
                "RWO",
                "Retain",
                "Available",
                "",
                "strict-fast",
                "<unset>",
                ""
            ]
        );
    }
    env.shutdown().await;
}

/// Now, as an RFC 3339 timestamp with seconds (the form `metav1.Time` takes).
fn now_rfc3339() -> String {
    let t =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .expect("a Time serializes to a string")
}
