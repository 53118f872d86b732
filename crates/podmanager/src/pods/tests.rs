use super::*;
use serde_json::{Value, json};

/// A pod as the API server returns it for one of our pods: managed fields, other labels and
/// annotations, a sidecar listed before our container, a full status.
fn api_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "uid": "0c6f5a9e-1111-4a8e-9d7e-2b7b1c3a0f01",
            "resourceVersion": "48213",
            "generation": 1,
            "creationTimestamp": "2026-12-07T10:00:00Z",
            "deletionTimestamp": "2026-12-07T10:05:00Z",
            "deletionGracePeriodSeconds": 30,
            "labels": {
                "app": "web",
                "podmanager": "web",
                "podmanager-uid": "uid-web",
                "podmanager.ballast.dev/template-hash": "00a1b2c3d4",
                "tier": "frontend"
            },
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-07T09:00:00Z"},
            "ownerReferences": [{
                "apiVersion": "apps.mycompany.com/v1",
                "kind": "PodManager",
                "name": "web",
                "uid": "uid-web",
                "controller": true,
                "blockOwnerDeletion": true
            }],
            "finalizers": ["example.com/keep"],
            "managedFields": [{
                "manager": "podmanager",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2026-12-07T10:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}
            }]
        },
        "spec": {
            "nodeName": "node-3",
            "restartPolicy": "Always",
            "containers": [
                {"name": "log-shipper", "image": "fluent-bit:3.0", "resources": {}},
                {
                    "name": CONTAINER_NAME,
                    "image": "nginx:1.27",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "A", "value": "1"}]
                }
            ],
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}]
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-07T10:00:05Z"},
                {"type": "ContainersReady", "status": "True"}
            ],
            "containerStatuses": [{"name": CONTAINER_NAME, "ready": true, "restartCount": 0}]
        }
    })
}

fn both(json: Value) -> (Pod, CachedPod) {
    let full: Pod = serde_json::from_value(json.clone()).expect("k8s-openapi decodes it");
    let lean: CachedPod = serde_json::from_value(json).expect("the lean decode");
    (full, lean)
}

fn assert_same_view(full: &Pod, lean: &CachedPod) {
    assert_eq!(full.pod_name(), lean.pod_name());
    assert_eq!(PodView::node_name(full), PodView::node_name(lean));
    assert_eq!(PodView::phase(full), PodView::phase(lean));
    assert_eq!(full.is_terminating(), lean.is_terminating());
    assert_eq!(
        PodView::ready_condition(full),
        PodView::ready_condition(lean)
    );
    assert_eq!(full.reports_ready(), lean.reports_ready());
    assert_eq!(PodView::image(full), PodView::image(lean));
    assert_eq!(PodView::template_hash(full), PodView::template_hash(lean));
    assert_eq!(
        full.metadata.owner_references,
        lean.metadata.owner_references
    );
    assert_eq!(full.metadata.uid, lean.metadata.uid);
    assert_eq!(full.metadata.namespace, lean.metadata.namespace);
    assert_eq!(
        full.metadata.resource_version,
        lean.metadata.resource_version
    );
}

#[test]
fn the_lean_decode_keeps_what_the_plan_reads_of_an_api_pod() {
    let (full, lean) = both(api_pod());
    assert_same_view(&full, &lean);
    assert_eq!(lean, CachedPod::from(&full));
    assert_eq!(lean.image.as_deref(), Some("nginx:1.27"));
    assert_eq!(lean.owner_label.as_deref(), Some("web"));
    assert_eq!(lean.template_hash.as_deref(), Some("00a1b2c3d4"));
    assert!(lean.ready_condition && lean.is_terminating());
    // Nothing else is kept.
    assert_eq!(lean.metadata.labels, None);
    assert_eq!(lean.metadata.annotations, None);
    assert_eq!(lean.metadata.managed_fields, None);
    assert_eq!(lean.metadata.finalizers, None);
}

#[test]
fn the_lean_decode_agrees_on_sparse_and_odd_pods() {
    let mut other_first = api_pod();
    other_first["spec"]["containers"] = json!([{"name": "only", "image": "busybox"}]);
    let mut no_image = api_pod();
    no_image["spec"]["containers"] = json!([{"name": CONTAINER_NAME}]);
    let mut not_ready = api_pod();
    not_ready["status"]["conditions"][2]["status"] = json!("False");
    let mut pending = api_pod();
    pending["status"] = json!({"phase": "Pending"});
    let bare = json!({
        "metadata": {"name": "web-0", "namespace": "shop"},
        "spec": {"containers": []}
    });
    let no_spec_or_status = json!({"metadata": {"name": "web-0"}});
    for (case, json) in [
        ("other container first", other_first),
        ("no image", no_image),
        ("Ready False", not_ready),
        ("pending", pending),
        ("bare", bare),
        ("no spec or status", no_spec_or_status),
    ] {
        let (full, lean) = both(json);
        assert_same_view(&full, &lean);
        assert_eq!(lean, CachedPod::from(&full), "{case}");
    }
}

#[test]
fn a_malformed_kept_field_is_a_decode_error() {
    let mut bad = api_pod();
    bad["metadata"]["labels"]["podmanager"] = json!(7);
    assert!(serde_json::from_value::<CachedPod>(bad).is_err());
    let mut bad = api_pod();
    bad["spec"]["containers"] = json!({"name": "x"});
    assert!(serde_json::from_value::<CachedPod>(bad).is_err());
}

fn pod(namespace: &str, name: &str, owner: &str) -> CachedPod {
    CachedPod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        owner_label: Some(owner.into()),
        ..CachedPod::default()
    }
}

fn names(pods: &[Arc<CachedPod>]) -> Vec<&str> {
    pods.iter().map(|p| p.pod_name()).collect()
}

#[test]
fn pods_are_found_by_namespace_and_label_in_name_order() {
    let cache = PodCache::default();
    cache.apply(&watcher::Event::Init);
    for p in [
        pod("a", "web-1", "web"),
        pod("a", "web-0", "web"),
        pod("a", "api-0", "api"),
        pod("b", "web-0", "web"),
    ] {
        cache.apply(&watcher::Event::InitApply(p));
    }
    assert!(!cache.is_synced());
    cache.apply(&watcher::Event::InitDone);
    assert!(cache.is_synced());
    assert_eq!(names(&cache.labelled("a", "web")), ["web-0", "web-1"]);
    assert_eq!(names(&cache.labelled("a", "api")), ["api-0"]);
    assert_eq!(names(&cache.labelled("b", "web")), ["web-0"]);
    assert!(cache.labelled("b", "api").is_empty());
    assert_eq!(cache.len(), 4);
}

#[test]
fn changes_and_deletions_are_applied() {
    let cache = PodCache::default();
    cache.apply(&watcher::Event::Apply(pod("a", "web-0", "web")));
    let mut moved = pod("a", "web-1", "web");
    cache.apply(&watcher::Event::Apply(moved.clone()));
    // Relabelled to another PodManager: it leaves the first one's pods.
    moved.owner_label = Some("other".into());
    cache.apply(&watcher::Event::Apply(moved.clone()));
    assert_eq!(names(&cache.labelled("a", "web")), ["web-0"]);
    assert_eq!(names(&cache.labelled("a", "other")), ["web-1"]);
    // An update replaces the pod held.
    let mut ready = pod("a", "web-0", "web");
    ready.ready_condition = true;
    cache.apply(&watcher::Event::Apply(ready));
    assert!(cache.labelled("a", "web")[0].ready_condition);
    cache.apply(&watcher::Event::Delete(pod("a", "web-0", "web")));
    cache.apply(&watcher::Event::Delete(moved));
    // Deleting what is not held changes nothing.
    cache.apply(&watcher::Event::Delete(pod("a", "ghost", "web")));
    assert!(cache.labelled("a", "web").is_empty());
    assert!(cache.labelled("a", "other").is_empty());
    assert!(cache.is_empty());
}

#[test]
fn a_relist_is_swapped_in_whole_when_done() {
    let cache = PodCache::default();
    cache.apply(&watcher::Event::Apply(pod("a", "web-0", "web")));
    cache.apply(&watcher::Event::Apply(pod("a", "web-1", "web")));
    cache.apply(&watcher::Event::Init);
    cache.apply(&watcher::Event::InitApply(pod("a", "web-1", "web")));
    cache.apply(&watcher::Event::InitApply(pod("a", "web-2", "web")));
    // Until the relist is complete, readers see the old pods.
    assert_eq!(names(&cache.labelled("a", "web")), ["web-0", "web-1"]);
    cache.apply(&watcher::Event::InitDone);
    // web-0 went while the watch was down: gone with the relist.
    assert_eq!(names(&cache.labelled("a", "web")), ["web-1", "web-2"]);
}

#[tokio::test]
async fn synced_waits_for_the_first_complete_list_and_reset_forgets() {
    let cache = Arc::new(PodCache::default());
    let waiter = tokio::spawn({
        let cache = cache.clone();
        async move { cache.synced().await }
    });
    cache.apply(&watcher::Event::Init);
    cache.apply(&watcher::Event::InitApply(pod("a", "web-0", "web")));
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    cache.apply(&watcher::Event::InitDone);
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("synced returns once the list is done")
        .expect("the waiter does not panic");
    cache.reset();
    assert!(!cache.is_synced());
    assert!(cache.is_empty());
}
