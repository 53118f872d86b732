//! What a scenario leaves on a real cluster, removed: its namespace first (with whatever
//! finalizers hold objects in it), then every cluster-scoped object it made — each has the namespace's name
//! in its own (`validate-e2e-x7k2pq`, `e2e-x7k2pq-node-1`, `things.e2e-x7k2pq.example.com`), or
//! is a volume of one of its claims — plus the events the control plane wrote about its nodes.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, PersistentVolume, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// How long a namespace gets to go by itself before finalizers holding it are removed.
const GRACEFUL: Duration = Duration::from_secs(10);
/// How long after its nodes are gone the control plane's last events about them come (its
/// node monitor looks every second on the suite's control plane).
const NODE_EVENTS_LAG: Duration = Duration::from_secs(2);
/// How long the whole cleanup may take before it reports what is left.
const DEADLINE: Duration = Duration::from_secs(60);

/// Removes everything of scenario `ns`; returns what is still there after [`DEADLINE`].
pub async fn sweep(client: &Client, ns: &str) -> Vec<String> {
    sweep_namespace(client, ns).await;
    sweep_cluster(client, ns, true).await
}

/// Removes the scenario's webhook configurations and its namespace, and waits until the
/// namespace is gone (removing what holds it after [`GRACEFUL`]), so that the scenario's
/// kubelets, if still running, finish its pods as a cluster's would.
pub async fn sweep_namespace(client: &Client, ns: &str) {
    // Webhooks first: a dead one that fails closed would refuse the deletions below.
    delete_named::<ValidatingWebhookConfiguration>(client, ns).await;
    delete_named::<MutatingWebhookConfiguration>(client, ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = namespaces.delete(ns, &DeleteParams::background()).await
        && !is_not_found(&e)
    {
        eprintln!("failed to delete namespace {ns}: {e}");
    }
    let start = Instant::now();
    let mut forced = false;
    while start.elapsed() < DEADLINE {
        if matches!(namespaces.get_opt(ns).await, Ok(None)) {
            return;
        }
        if !forced && start.elapsed() >= GRACEFUL {
            // Pods on failed nodes, custom resources whose operator has stopped: what a real
            // cluster would keep forever.
            force_namespace(client, ns).await;
            forced = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Removes the scenario's cluster-scoped objects (named after it, or volumes of its claims)
/// and the traces of its nodes (`had_nodes`: waiting for the last ones); returns what is still
/// there after [`DEADLINE`].
pub async fn sweep_cluster(client: &Client, ns: &str, had_nodes: bool) -> Vec<String> {
    delete_named::<ValidatingWebhookConfiguration>(client, ns).await;
    delete_named::<MutatingWebhookConfiguration>(client, ns).await;
    delete_named::<StorageClass>(client, ns).await;
    delete_named::<ClusterRoleBinding>(client, ns).await;
    delete_named::<ClusterRole>(client, ns).await;
    delete_named::<CSIDriver>(client, ns).await;
    delete_named::<CustomResourceDefinition>(client, ns).await;
    delete_named::<Node>(client, ns).await;
    delete_volumes(client, ns).await;
    delete_node_traces(client, ns).await;

    let start = Instant::now();
    // The node lifecycle controller records `RemovingNode` a moment after a node goes: once the
    // nodes are gone, their events are removed once more after that moment.
    let mut traces_again = (!had_nodes).then(Instant::now);
    let mut forced = false;
    loop {
        let left = leftovers(client, ns).await;
        let nodes_gone = !left.iter().any(|l| l.starts_with("Node "));
        match traces_again {
            None if nodes_gone => traces_again = Some(Instant::now() + NODE_EVENTS_LAG),
            Some(at) if Instant::now() >= at => {
                delete_node_traces(client, ns).await;
                if left.is_empty() {
                    return left;
                }
            }
            _ => {}
        }
        if start.elapsed() >= DEADLINE {
            return left;
        }
        if !forced && start.elapsed() >= GRACEFUL {
            force_namespace(client, ns).await;
            strip_volume_finalizers(client, ns).await;
            forced = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Names of what is left of scenario `ns`.
pub async fn leftovers(client: &Client, ns: &str) -> Vec<String> {
    let mut left = Vec::new();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Ok(Some(n)) = namespaces.get_opt(ns).await {
        let phase = n.status.and_then(|s| s.phase).unwrap_or_default();
        left.push(format!("namespace {ns} ({phase})"));
    }
    left.extend(named::<ValidatingWebhookConfiguration>(client, ns).await);
    left.extend(named::<MutatingWebhookConfiguration>(client, ns).await);
    left.extend(named::<StorageClass>(client, ns).await);
    left.extend(named::<ClusterRoleBinding>(client, ns).await);
    left.extend(named::<ClusterRole>(client, ns).await);
    left.extend(named::<CSIDriver>(client, ns).await);
    left.extend(named::<CustomResourceDefinition>(client, ns).await);
    left.extend(named::<Node>(client, ns).await);
    for pv in volumes(client, ns).await {
        left.push(format!("PersistentVolume {}", pv.name_any()));
    }
    left
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

async fn list_all<K>(client: &Client) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// `Kind name` of each cluster-scoped `K` whose name contains `ns`.
async fn named<K>(client: &Client, ns: &str) -> Vec<String>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    list_all::<K>(client)
        .await
        .into_iter()
        .map(|o| o.name_any())
        .filter(|n| n.contains(ns))
        .map(|n| format!("{} {n}", K::kind(&())))
        .collect()
}

async fn delete_named<K>(client: &Client, ns: &str)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    for o in list_all::<K>(client).await {
        let name = o.name_any();
        if name.contains(ns)
            && let Err(e) = api.delete(&name, &DeleteParams::background()).await
            && !is_not_found(&e)
        {
            eprintln!("failed to delete {} {name}: {e}", K::kind(&()));
        }
    }
}

/// Volumes named after the scenario or bound to one of its claims.
async fn volumes(client: &Client, ns: &str) -> Vec<PersistentVolume> {
    list_all::<PersistentVolume>(client)
        .await
        .into_iter()
        .filter(|pv| {
            pv.name_any().contains(ns)
                || pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|c| c.namespace.as_deref())
                    == Some(ns)
        })
        .collect()
}

async fn delete_volumes(client: &Client, ns: &str) {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    for pv in volumes(client, ns).await {
        if let Err(e) = api
            .delete(&pv.name_any(), &DeleteParams::background())
            .await
            && !is_not_found(&e)
        {
            eprintln!("failed to delete PersistentVolume {}: {e}", pv.name_any());
        }
    }
}

async fn strip_volume_finalizers(client: &Client, ns: &str) {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    for pv in volumes(client, ns).await {
        if pv.finalizers().is_empty() {
            continue;
        }
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        let _ = api
            .patch(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
    }
}

/// The node Leases and the events the control plane recorded about the scenario's nodes (in
/// `default`, where events about cluster-scoped objects go).
async fn delete_node_traces(client: &Client, ns: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    if let Ok(list) = leases.list(&ListParams::default()).await {
        for l in list.items.iter().filter(|l| l.name_any().contains(ns)) {
            let _ = leases.delete(&l.name_any(), &DeleteParams::default()).await;
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    if let Ok(list) = events.list(&ListParams::default()).await {
        for e in list.items.iter().filter(|e| {
            e.involved_object
                .name
                .as_deref()
                .is_some_and(|n| n.contains(ns))
        }) {
            let _ = events.delete(&e.name_any(), &DeleteParams::default()).await;
        }
    }
}

/// Pods deleted at once (no kubelet will confirm them) and finalizers removed from whatever
/// in the namespace is held by one.
async fn force_namespace(client: &Client, ns: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for p in list.items {
            let _ = pods
                .delete(&p.name_any(), &DeleteParams::default().grace_period(0))
                .await;
        }
    }
    let Ok(discovery) = Discovery::new(client.clone()).run().await else {
        return;
    };
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced || !caps.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for o in list.items {
                if o.finalizers().is_empty() {
                    continue;
                }
                let patch = serde_json::json!({"metadata": {"finalizers": null}});
                if let Err(e) = api
                    .patch(
                        &o.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    eprintln!(
                        "failed to remove the finalizers of {} {ns}/{}: {e}",
                        ar.kind,
                        o.name_any()
                    );
                }
            }
        }
    }
}
