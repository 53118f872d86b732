use super::*;
use crate::auth::UserInfo;

fn settings() -> Settings {
    Settings {
        default_toleration_seconds: 2,
        bookmark_interval: Duration::from_secs(5),
        pv_binder: false,
    }
}

async fn sim() -> Arc<Sim> {
    let sim = Arc::new(Sim::new(
        settings(),
        CancellationToken::new(),
        1000,
        crate::controllers::DELETION_HOOKS,
    ));
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}});
    sim.call(ApiRequest::new(Verb::Create, "v1", "namespaces", UserInfo::admin()).body(&ns))
        .await
        .unwrap();
    sim
}

fn req(verb: Verb, api_version: &str, resource: &str) -> ApiRequest {
    ApiRequest::new(verb, api_version, resource, UserInfo::admin()).ns("ns")
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

async fn get(sim: &Arc<Sim>, resource: &str, name: &str) -> Result<Value, ApiError> {
    sim.call(req(Verb::Get, "v1", resource).name(name)).await
}

#[tokio::test]
async fn create_fills_uid_timestamp_version_and_generated_name() {
    let sim = sim().await;
    let mut obj = cm("");
    obj["metadata"] = json!({"generateName": "cfg-"});
    let created = sim
        .call(req(Verb::Create, "v1", "configmaps").body(&obj))
        .await
        .unwrap();
    let name = created["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
    assert!(
        created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(created["metadata"]["creationTimestamp"].is_string());
    assert!(object_rv(&created).is_some());
    assert_eq!(created["metadata"]["namespace"], "ns");
}

#[tokio::test]
async fn create_twice_is_already_exists_and_missing_namespace_is_not_found() {
    let sim = sim().await;
    sim.call(req(Verb::Create, "v1", "configmaps").body(&cm("a")))
        .await
        .unwrap();
    let err = sim
        .call(req(Verb::Create, "v1", "configmaps").body(&cm("a")))
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"a\" already exists");
    let err = sim
        .call(
            ApiRequest::new(Verb::Create, "v1", "configmaps", UserInfo::admin())
                .ns("nope")
                .body(&cm("a")),
        )
        .await
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
}

#[tokio::test]
async fn stale_update_gets_409_conflict_with_the_real_message() {
    let sim = sim().await;
    let created = sim
        .call(req(Verb::Create, "v1", "configmaps").body(&cm("a")))
        .await
        .unwrap();
    let mut first = created.clone();
    first["data"]["k"] = json!("1");
    sim.call(req(Verb::Update, "v1", "configmaps").name("a").body(&first))
        .await
        .unwrap();
    let mut stale = created;
    stale["data"]["k"] = json!("2");
    let err = sim
        .call(req(Verb::Update, "v1", "configmaps").name("a").body(&stale))
        .await
        .unwrap_err();
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert!(
        err.message.starts_with(
            "Operation cannot be fulfilled on configmaps \"a\": the object has been modified"
        ),
        "{}",
        err.message
    );
    assert_eq!(
        get(&sim, "configmaps", "a").await.unwrap()["data"]["k"],
        "1"
    );
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "app", "image": "web:1"}]}})
}

#[tokio::test]
async fn pods_get_defaults_pending_status_and_short_default_tolerations() {
    let sim = sim().await;
    let p = sim
        .call(req(Verb::Create, "v1", "pods").body(&pod("p")))
        .await
        .unwrap();
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["metadata"]["generation"], 1);
    assert_eq!(p["spec"]["schedulerName"], "default-scheduler");
    let tols = p["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tols.iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 2)
    );
}

#[tokio::test]
async fn status_updates_change_only_status_and_spec_changes_bump_generation() {
    let sim = sim().await;
    let p = sim
        .call(req(Verb::Create, "v1", "pods").body(&pod("p")))
        .await
        .unwrap();
    let mut s = p.clone();
    s["status"]["phase"] = json!("Running");
    s["spec"]["nodeName"] = json!("ignored");
    let after = sim
        .call(
            req(Verb::Update, "v1", "pods")
                .name("p")
                .subresource("status")
                .body(&s),
        )
        .await
        .unwrap();
    assert_eq!(after["status"]["phase"], "Running");
    assert!(after["spec"].get("nodeName").is_none());
    assert_eq!(after["metadata"]["generation"], 1);

    let mut m = after.clone();
    m["status"]["phase"] = json!("Failed");
    m["spec"]["activeDeadlineSeconds"] = json!(5);
    let after = sim
        .call(req(Verb::Update, "v1", "pods").name("p").body(&m))
        .await
        .unwrap();
    assert_eq!(
        after["status"]["phase"], "Running",
        "main resource update keeps status"
    );
    assert_eq!(after["metadata"]["generation"], 2);
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let sim = sim().await;
    let mut obj = cm("held");
    obj["metadata"]["finalizers"] = json!(["ballast.dev/hold"]);
    sim.call(req(Verb::Create, "v1", "configmaps").body(&obj))
        .await
        .unwrap();
    let deleting = sim
        .call(req(Verb::Delete, "v1", "configmaps").name("held"))
        .await
        .unwrap();
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    let still = get(&sim, "configmaps", "held").await.unwrap();
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    let patch = json!({"metadata": {"finalizers": null}});
    sim.call(
        req(Verb::Patch(PatchType::Merge), "v1", "configmaps")
            .name("held")
            .body(&patch),
    )
    .await
    .unwrap();
    let err = get(&sim, "configmaps", "held").await.unwrap_err();
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn deleting_an_owner_cascades_to_its_dependents() {
    let sim = sim().await;
    let owner = sim
        .call(req(Verb::Create, "v1", "configmaps").body(&cm("owner")))
        .await
        .unwrap();
    let mut dep = cm("dep");
    dep["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
        "name": "owner", "uid": owner["metadata"]["uid"]}]);
    sim.call(req(Verb::Create, "v1", "configmaps").body(&dep))
        .await
        .unwrap();
    sim.call(req(Verb::Create, "v1", "configmaps").body(&cm("bystander")))
        .await
        .unwrap();
    sim.call(req(Verb::Delete, "v1", "configmaps").name("owner"))
        .await
        .unwrap();
    for _ in 0..50 {
        if get(&sim, "configmaps", "dep").await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&sim, "configmaps", "dep").await.unwrap_err().code, 404);
    assert!(get(&sim, "configmaps", "bystander").await.is_ok());
}

#[tokio::test]
async fn dry_run_create_stores_nothing() {
    let sim = sim().await;
    let mut r = req(Verb::Create, "v1", "configmaps").body(&cm("dry"));
    r.query = Query::default().set("dryRun", "All");
    let out = sim.call(r).await.unwrap();
    assert_eq!(out["metadata"]["name"], "dry");
    assert_eq!(get(&sim, "configmaps", "dry").await.unwrap_err().code, 404);
}

#[tokio::test]
async fn list_pages_with_limit_and_continue_and_filters_by_selectors() {
    let sim = sim().await;
    for i in 0..5 {
        let mut o = cm(&format!("c{i}"));
        o["metadata"]["labels"] = json!({"even": (i % 2 == 0).to_string()});
        sim.call(req(Verb::Create, "v1", "configmaps").body(&o))
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut cont: Option<String> = None;
    loop {
        let mut r = req(Verb::List, "v1", "configmaps");
        r.query = Query::default().set("limit", "2");
        if let Some(c) = &cont {
            r.query = r.query.set("continue", c);
        }
        let page = sim.call(r).await.unwrap();
        assert!(page["items"].as_array().unwrap().len() <= 2);
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(c) => cont = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);
    let mut r = req(Verb::List, "v1", "configmaps");
    r.query = Query::default()
        .set("labelSelector", "even=true")
        .set("fieldSelector", "metadata.name!=c0");
    let page = sim.call(r).await.unwrap();
    let got: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["c2", "c4"]);
    assert_eq!(page["kind"], "ConfigMapList");
}

#[tokio::test]
async fn users_without_a_rule_are_forbidden_with_the_real_message() {
    let sim = sim().await;
    let bob = UserInfo::new("bob", &[]);
    let err = sim
        .call(ApiRequest::new(Verb::List, "v1", "pods", bob.clone()).ns("ns"))
        .await
        .unwrap_err();
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"ns\""
    );
    sim.auth.allow("bob", "list", "", "pods");
    assert!(
        sim.call(ApiRequest::new(Verb::List, "v1", "pods", bob).ns("ns"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn custom_resources_are_served_once_their_crd_exists() {
    let sim = sim().await;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "subresources": {"status": {}}, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                   "spec": {"size": 1}, "status": {"ignored": true}});
    let err = sim
        .call(req(Verb::Create, "example.com/v1", "widgets").body(&w))
        .await
        .unwrap_err();
    assert_eq!(err.code, 404);
    sim.call(
        ApiRequest::new(
            Verb::Create,
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            UserInfo::admin(),
        )
        .body(&crd),
    )
    .await
    .unwrap();
    let created = sim
        .call(req(Verb::Create, "example.com/v1", "widgets").body(&w))
        .await
        .unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(
        created.get("status").is_none(),
        "status is dropped on create with a status subresource"
    );
}

#[tokio::test]
async fn scale_subresource_reads_and_sets_replicas() {
    let sim = sim().await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
    sim.call(req(Verb::Create, "apps/v1", "deployments").body(&deploy))
        .await
        .unwrap();
    let scale = sim
        .call(
            req(Verb::Get, "apps/v1", "deployments")
                .name("d")
                .subresource("scale"),
        )
        .await
        .unwrap();
    assert_eq!(
        (scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()),
        (Some("Scale"), Some(2))
    );
    let patch = json!({"spec": {"replicas": 5}});
    sim.call(
        req(Verb::Patch(PatchType::Merge), "apps/v1", "deployments")
            .name("d")
            .subresource("scale")
            .body(&patch),
    )
    .await
    .unwrap();
    let d = sim
        .call(req(Verb::Get, "apps/v1", "deployments").name("d"))
        .await
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
}

#[tokio::test]
async fn malformed_objects_are_refused_with_422_not_a_panic() {
    let sim = sim().await;
    let p = sim
        .call(req(Verb::Create, "v1", "pods").body(&pod("p")))
        .await
        .unwrap();
    let bad_spec =
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"}, "spec": "nope"});
    let err = sim
        .call(req(Verb::Create, "v1", "pods").body(&bad_spec))
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let mut bad_status = p.clone();
    bad_status["status"] = json!(["x"]);
    let err = sim
        .call(
            req(Verb::Update, "v1", "pods")
                .name("p")
                .subresource("status")
                .body(&bad_status),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 422);
    let root = json!([{"op": "replace", "path": "", "value": "flat"}]);
    let err = sim
        .call(
            req(Verb::Patch(PatchType::Json), "v1", "pods")
                .name("p")
                .body(&root),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 422);
    let labels = json!({"metadata": {"labels": ["a"]}});
    let err = sim
        .call(
            req(Verb::Patch(PatchType::Merge), "v1", "pods")
                .name("p")
                .body(&labels),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(
        get(&sim, "pods", "p").await.unwrap()["status"]["phase"],
        "Pending"
    );
}

#[test]
fn query_strings_are_percent_decoded_without_panicking_on_odd_input() {
    let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&x=%aé&y=%4"));
    assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
    assert_eq!(q.get("x"), Some("%aé"));
    assert_eq!(q.get("y"), Some("%4"));
}

#[tokio::test]
async fn status_writes_follow_each_kinds_status_strategy() {
    let sim = sim().await;
    // Pods: metadata written through /status is kept, except ownerReferences.
    let p = sim
        .call(req(Verb::Create, "v1", "pods").body(&pod("p")))
        .await
        .unwrap();
    let mut s = p.clone();
    s["metadata"]["labels"] = json!({"via": "status"});
    s["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "u"}]);
    s["status"] = json!({"phase": "Running"});
    let after = sim
        .call(
            req(Verb::Update, "v1", "pods")
                .name("p")
                .subresource("status")
                .body(&s),
        )
        .await
        .unwrap();
    assert_eq!(after["metadata"]["labels"], json!({"via": "status"}));
    assert!(after["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        after["status"],
        json!({"phase": "Running", "qosClass": "BestEffort"}),
        "the QoS class is kept"
    );

    // Custom resources: nothing but status.
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    sim.call(
        ApiRequest::new(
            Verb::Create,
            "apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            UserInfo::admin(),
        )
        .body(&crd),
    )
    .await
    .unwrap();
    let g = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
                   "spec": {"size": 1}});
    let created = sim
        .call(req(Verb::Create, "example.com/v1", "gadgets").body(&g))
        .await
        .unwrap();
    let mut s = created.clone();
    s["metadata"]["labels"] = json!({"via": "status"});
    s["status"] = json!({"ready": true});
    let after = sim
        .call(
            req(Verb::Update, "example.com/v1", "gadgets")
                .name("g")
                .subresource("status")
                .body(&s),
        )
        .await
        .unwrap();
    assert_eq!(after["status"], json!({"ready": true}));
    assert!(after["metadata"].get("labels").is_none());
}

#[tokio::test]
async fn empty_metadata_maps_are_not_stored_and_invalid_names_are_refused() {
    let sim = sim().await;
    let mut obj = cm("plain");
    obj["metadata"]["labels"] = json!({});
    obj["metadata"]["annotations"] = json!({});
    let created = sim
        .call(req(Verb::Create, "v1", "configmaps").body(&obj))
        .await
        .unwrap();
    assert!(created["metadata"].get("labels").is_none());
    assert!(created["metadata"].get("annotations").is_none());

    let err = sim
        .call(req(Verb::Create, "v1", "configmaps").body(&cm("Bad_Name")))
        .await
        .unwrap_err();
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    let details = err.details.unwrap();
    assert_eq!(details["kind"], "ConfigMap");
    assert_eq!(details["causes"][0]["field"], "metadata.name");
    assert!(
        get(&sim, "configmaps", "Bad_Name").await.is_err(),
        "nothing stored"
    );
}

async fn install_thing_crd(sim: &Arc<Sim>) {
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": {"type": "object",
                        "properties": {"n": {"type": "integer", "default": 1}}}}}}},
                {"name": "v2", "served": true, "storage": false, "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": {"type": "object",
                        "properties": {"n": {"type": "integer", "default": 2}, "m": {"type": "string"}}}}}}}]}});
    let req = ApiRequest::new(
        Verb::Create,
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        UserInfo::admin(),
    )
    .body(&crd);
    sim.call(req).await.unwrap();
}

#[tokio::test]
async fn a_custom_resources_spec_of_the_wrong_type_gets_the_schemas_type_error() {
    let sim = sim().await;
    install_thing_crd(&sim).await;
    let body = json!({"apiVersion": "example.com/v1", "kind": "Thing",
                      "metadata": {"name": "t"}, "spec": "x"});
    let err = sim
        .call(req(Verb::Create, "example.com/v1", "things").body(&body))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "Thing.example.com \"t\" is invalid: spec: Invalid value: \"string\": spec in body must be of type object: \"string\""
    );
}

#[tokio::test]
async fn custom_resources_are_stored_in_the_storage_version_and_defaulted_per_version() {
    let sim = sim().await;
    install_thing_crd(&sim).await;
    let body = json!({"apiVersion": "example.com/v2", "kind": "Thing",
                      "metadata": {"name": "t"}, "spec": {"m": "x", "bogus": true}});
    let created = sim
        .call(req(Verb::Create, "example.com/v2", "things").body(&body))
        .await
        .unwrap();
    // Defaulted with v2's schema, stored as v1 (the None strategy only rewrites apiVersion and
    // v1's schema prunes `m`), and answered as read back from storage: `m` is lost, as on a real
    // server without a conversion webhook.
    assert_eq!(created["apiVersion"], "example.com/v2");
    assert_eq!(created["spec"], json!({"n": 2}));
    let key = crate::store::StorageKey::new("example.com", "things");
    let stored = sim.store.get(&key, "ns", "t").unwrap();
    assert_eq!(stored["apiVersion"], "example.com/v1");
    assert_eq!(stored["spec"], json!({"n": 2}));
    let v1 = sim
        .call(req(Verb::Get, "example.com/v1", "things").name("t"))
        .await
        .unwrap();
    assert_eq!(v1["spec"], json!({"n": 2}));
    // A write with an unknown field answers with its warning.
    let resp = sim
        .execute(
            req(Verb::Update, "example.com/v1", "things")
                .name("t")
                .body(&json!({"apiVersion": "example.com/v1", "kind": "Thing",
                              "metadata": {"name": "t"}, "spec": {"n": 3, "zzz": 1}})),
        )
        .await
        .unwrap();
    match resp {
        ApiResponse::Warned(200, v, w) => {
            assert_eq!(v["spec"], json!({"n": 3}));
            assert_eq!(w, vec!["unknown field \"spec.zzz\"".to_string()]);
        }
        other => panic!("expected a warned 200, got {other:?}"),
    }
}
