//! Simulated cluster behaviour. Every controller acts through [`Sim::call`] under the identity the
//! real one uses, so its writes go through admission like in a real cluster:
//! - garbage collector (`generic-garbage-collector`): ownerReference cascade and orphaning;
//! - namespace controller (`namespace-controller`): empties a deleted namespace, then removes it;
//! - node lifecycle (`node-controller`): nodes whose heartbeats stop go Ready=Unknown, their pods
//!   Ready=False, and they get the unreachable taints at the rate [`zones`] allows; heartbeats
//!   resuming undo it;
//! - taint eviction (`node-controller`, see [`taint_eviction`]): pods on NoExecute-tainted nodes
//!   are marked DisruptionTarget and deleted once their toleration runs out; refused five times,
//!   a pod is left alone until the node's NoExecute taints change;
//! - scheduler (`system:kube-scheduler`): binds pending pods to Ready nodes whose taints they
//!   tolerate and whose labels match their nodeSelector (no affinity, no resources); a pod waits
//!   until its claims are Bound, and for WaitForFirstConsumer claims the scheduler first writes
//!   `volume.kubernetes.io/selected-node` on them (volume topology is not checked);
//! - kubelets (`system:node:<node>`): pods on Ready nodes go Running and Ready;
//! - PV controller (`persistent-volume-binder`) and PVC/PV protection, see [`pv`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::apiserver::{ApiRequest, Sim, Verb, now};
use crate::auth::UserInfo;
use crate::defaults::{TAINT_NOT_READY, TAINT_UNREACHABLE, condition, set_condition};
use crate::patch::PatchType;
use crate::resources::ResourceType;
use crate::store::StorageKey;

pub mod pv;
pub use pv::spawn_pv_binder;
pub mod taint_eviction;
pub mod zones;

/// How often the simulated controllers look at the store.
pub const TICK: Duration = Duration::from_millis(100);
/// How long the namespace controller waits between passes over a terminating namespace.
const NAMESPACE_RETRY: Duration = Duration::from_millis(200);

/// Timings of the node lifecycle and taint eviction simulation.
#[derive(Debug, Clone)]
pub struct NodeTimings {
    /// How long after heartbeats stop a node goes Ready=Unknown (40s in Kubernetes).
    pub grace: Duration,
    /// Pause between the taint eviction's attempts on one pod (10ms in Kubernetes).
    pub eviction_retry: Duration,
    /// Pause between two nodes tainted in one healthy zone (10s in Kubernetes: the
    /// `--node-eviction-rate` of 0.1 node/s).
    pub taint_interval: Duration,
}

pub(crate) fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

pub(crate) fn list(sim: &Sim, group: &str, resource: &str) -> Vec<Value> {
    sim.store.list(&StorageKey::new(group, resource), None).0
}

fn unique_types(sim: &Sim) -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = Vec::new();
    for t in sim.registry().all() {
        if !t.virtual_review && !out.iter().any(|o| o.storage_key() == t.storage_key()) {
            out.push(t.clone());
        }
    }
    out
}

pub(crate) async fn sleep_or_stop(sim: &Sim, d: Duration) -> bool {
    tokio::select! {
        _ = sim.shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

fn owner_exists(sim: &Sim, dependent_ns: &str, owner: &Value) -> bool {
    let registry = sim.registry();
    let Some(rt) = registry.find_kind(s(owner, "/apiVersion"), s(owner, "/kind")) else {
        return false;
    };
    let ns = if rt.namespaced { dependent_ns } else { "" };
    sim.store
        .get(&rt.storage_key(), ns, s(owner, "/name"))
        .is_some_and(|o| s(&o, "/metadata/uid") == s(owner, "/uid"))
}

/// Deletes (or un-owns) the dependents of a deleted object.
pub fn spawn_cascade(sim: Arc<Sim>, owner_uid: String) {
    tokio::spawn(async move {
        let gc = UserInfo::service_account("kube-system", "generic-garbage-collector");
        for rt in unique_types(&sim) {
            let (items, _) = sim.store.list(&rt.storage_key(), None);
            for item in items {
                let Some(refs) = item
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                else {
                    continue;
                };
                if !refs.iter().any(|r| s(r, "/uid") == owner_uid) {
                    continue;
                }
                let ns = s(&item, "/metadata/namespace").to_string();
                let name = s(&item, "/metadata/name").to_string();
                let others_alive = refs
                    .iter()
                    .filter(|r| s(r, "/uid") != owner_uid)
                    .any(|r| owner_exists(&sim, &ns, r));
                let req =
                    ApiRequest::new(Verb::Delete, &rt.api_version(), &rt.resource, gc.clone())
                        .ns(&ns)
                        .name(&name);
                let result = if others_alive {
                    let kept: Vec<Value> = refs
                        .iter()
                        .filter(|r| s(r, "/uid") != owner_uid)
                        .cloned()
                        .collect();
                    let mut req = req;
                    req.verb = Verb::Patch(PatchType::Merge);
                    sim.call(req.body(&json!({"metadata": {"ownerReferences": kept}})))
                        .await
                } else {
                    let req = req.body(&json!({"propagationPolicy": "Background"}));
                    sim.call(req).await
                };
                match result {
                    Ok(_) => {
                        tracing::info!(resource = %rt.qualified(), namespace = %ns, name = %name, owner = %owner_uid, "garbage collected dependent")
                    }
                    Err(e) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(resource = %rt.qualified(), namespace = %ns, name = %name, error = %e, "failed to garbage collect dependent")
                    }
                }
            }
        }
    });
}

/// Orphan propagation: removes the owner from its dependents, then the `orphan` finalizer.
pub fn spawn_orphaning(sim: Arc<Sim>, owner_rt: ResourceType, owner: Value) {
    tokio::spawn(async move {
        let gc = UserInfo::service_account("kube-system", "generic-garbage-collector");
        let uid = s(&owner, "/metadata/uid").to_string();
        for rt in unique_types(&sim) {
            for item in sim.store.list(&rt.storage_key(), None).0 {
                let Some(refs) = item
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                else {
                    continue;
                };
                if !refs.iter().any(|r| s(r, "/uid") == uid) {
                    continue;
                }
                let kept: Vec<Value> = refs
                    .iter()
                    .filter(|r| s(r, "/uid") != uid)
                    .cloned()
                    .collect();
                let req = ApiRequest::new(
                    Verb::Patch(PatchType::Merge),
                    &rt.api_version(),
                    &rt.resource,
                    gc.clone(),
                )
                .ns(s(&item, "/metadata/namespace"))
                .name(s(&item, "/metadata/name"))
                .body(&json!({"metadata": {"ownerReferences": kept}}));
                if let Err(e) = sim.call(req).await {
                    tracing::warn!(name = %s(&item, "/metadata/name"), error = %e, "failed to orphan dependent");
                }
            }
        }
        let ns = s(&owner, "/metadata/namespace").to_string();
        let name = s(&owner, "/metadata/name").to_string();
        let Some(current) = sim.store.get(&owner_rt.storage_key(), &ns, &name) else {
            return;
        };
        let fins: Vec<Value> = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|f| *f != "orphan").cloned().collect())
            .unwrap_or_default();
        let req = ApiRequest::new(
            Verb::Patch(PatchType::Merge),
            &owner_rt.api_version(),
            &owner_rt.resource,
            gc,
        )
        .ns(&ns)
        .name(&name)
        .body(&json!({"metadata": {"finalizers": fins}}));
        if let Err(e) = sim.call(req).await {
            tracing::warn!(namespace = %ns, name = %name, error = %e, "failed to remove orphan finalizer");
        }
    });
}

/// Deletes everything in a terminating namespace, then the namespace itself.
pub fn spawn_namespace_cleanup(sim: Arc<Sim>, namespace: String) {
    tokio::spawn(async move {
        let user = UserInfo::service_account("kube-system", "namespace-controller");
        loop {
            let mut remaining = 0;
            for rt in unique_types(&sim).into_iter().filter(|t| t.namespaced) {
                let (items, _) = sim.store.list(&rt.storage_key(), Some(&namespace));
                remaining += items.len();
                for item in items {
                    if item.pointer("/metadata/deletionTimestamp").is_some() {
                        continue;
                    }
                    let req = ApiRequest::new(
                        Verb::Delete,
                        &rt.api_version(),
                        &rt.resource,
                        user.clone(),
                    )
                    .ns(&namespace)
                    .name(s(&item, "/metadata/name"));
                    if let Err(e) = sim.call(req).await
                        && e.code != 404
                    {
                        tracing::warn!(namespace = %namespace, name = %s(&item, "/metadata/name"), resource = %rt.qualified(), error = %e, "failed to delete object of terminating namespace");
                    }
                }
            }
            if remaining == 0 {
                let key = StorageKey::new("", "namespaces");
                match sim.store.delete(&key, "", &namespace, None) {
                    Ok(_) => tracing::info!(namespace = %namespace, "namespace deleted"),
                    Err(e) => {
                        tracing::debug!(namespace = %namespace, error = %e, "namespace already gone")
                    }
                }
                return;
            }
            if !sleep_or_stop(&sim, NAMESPACE_RETRY).await {
                return;
            }
        }
    });
}

/// Nodes whose heartbeats are stopped: by [`crate::KubeSim::fail_node`] or the annotation.
fn failed_set(sim: &Sim, nodes: &[Value]) -> std::collections::HashSet<String> {
    let mut failed = sim
        .failed_nodes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for n in nodes {
        let ann = n
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(crate::HEARTBEAT_ANNOTATION))
            .and_then(Value::as_str);
        if ann == Some("stopped") {
            failed.insert(s(n, "/metadata/name").to_string());
        }
    }
    failed
}

fn is_ready(node: &Value) -> bool {
    condition(node, "Ready") == Some("True")
}

fn node_taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn tolerates(pod: &Value, taint: &Value) -> bool {
    let key = s(taint, "/key");
    let effect = s(taint, "/effect");
    let value = s(taint, "/value");
    pod.pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .is_some_and(|tols| {
            tols.iter().any(|t| {
                let tk = s(t, "/key");
                let op = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                let te = s(t, "/effect");
                let key_ok = (tk.is_empty() && op == "Exists") || tk == key;
                let val_ok = op == "Exists" || s(t, "/value") == value;
                let eff_ok = te.is_empty() || te == effect;
                key_ok && val_ok && eff_ok
            })
        })
}

/// Where the scheduler would put a pod (pure): the fitting node with the fewest pods.
pub fn pick_node(pod: &Value, nodes: &[Value], pods: &[Value]) -> Option<String> {
    let selector = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    nodes
        .iter()
        .filter(|n| is_ready(n) && n.pointer("/spec/unschedulable") != Some(&json!(true)))
        .filter(|n| {
            node_taints(n)
                .iter()
                .filter(|t| matches!(s(t, "/effect"), "NoSchedule" | "NoExecute"))
                .all(|t| tolerates(pod, t))
        })
        .filter(|n| {
            selector
                .iter()
                .all(|(k, v)| n.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        })
        .min_by_key(|n| {
            let name = s(n, "/metadata/name");
            let count = pods
                .iter()
                .filter(|p| s(p, "/spec/nodeName") == name)
                .count();
            (count, name.to_string())
        })
        .map(|n| s(n, "/metadata/name").to_string())
}

/// Set on a WaitForFirstConsumer claim by the scheduler once it picked a node for its pod.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// What a pending pod's claims allow the scheduler to do (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum VolumePlan {
    /// Every claim is bound: schedule, on this node when a claim's node was selected.
    Ready(Option<String>),
    /// WaitForFirstConsumer claims without a node: pick one and write it on them.
    Select(Vec<String>),
    /// A claim is not bound yet: try again later.
    Wait,
    /// A claim does not exist.
    Missing(String),
}

pub fn volume_plan(pod: &Value, pvcs: &[Value], classes: &[Value]) -> VolumePlan {
    let ns = s(pod, "/metadata/namespace");
    let claims: Vec<&str> = pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    v.pointer("/persistentVolumeClaim/claimName")
                        .and_then(Value::as_str)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut select = Vec::new();
    let mut wait = false;
    let mut hint = None;
    for claim in claims {
        let Some(pvc) = pvcs
            .iter()
            .find(|c| s(c, "/metadata/namespace") == ns && s(c, "/metadata/name") == claim)
        else {
            return VolumePlan::Missing(claim.to_string());
        };
        let selected = pvc
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ANN_SELECTED_NODE))
            .and_then(Value::as_str);
        if let Some(node) = selected {
            hint = Some(node.to_string());
        }
        if s(pvc, "/status/phase") == "Bound" {
            continue;
        }
        let class = s(pvc, "/spec/storageClassName");
        let wffc = classes.iter().any(|c| {
            s(c, "/metadata/name") == class && s(c, "/volumeBindingMode") == "WaitForFirstConsumer"
        });
        if wffc && selected.is_none() {
            select.push(claim.to_string());
        } else {
            wait = true;
        }
    }
    if !select.is_empty() {
        VolumePlan::Select(select)
    } else if wait {
        VolumePlan::Wait
    } else {
        VolumePlan::Ready(hint)
    }
}

pub fn spawn_scheduler(sim: Arc<Sim>) {
    tokio::spawn(async move {
        let user = UserInfo::new("system:kube-scheduler", &[]);
        let mut reported: HashMap<String, ()> = HashMap::new();
        while sleep_or_stop(&sim, TICK).await {
            let nodes = list(&sim, "", "nodes");
            let pods = list(&sim, "", "pods");
            let pvcs = list(&sim, "", "persistentvolumeclaims");
            let classes = list(&sim, "storage.k8s.io", "storageclasses");
            for pod in &pods {
                if !s(pod, "/spec/nodeName").is_empty()
                    || pod.pointer("/metadata/deletionTimestamp").is_some()
                    || s(pod, "/spec/schedulerName") != "default-scheduler"
                {
                    continue;
                }
                let ns = s(pod, "/metadata/namespace");
                let name = s(pod, "/metadata/name");
                let uid = s(pod, "/metadata/uid").to_string();
                let candidates: Vec<Value> = match volume_plan(pod, &pvcs, &classes) {
                    VolumePlan::Wait => continue,
                    VolumePlan::Missing(claim) => {
                        if reported.insert(uid, ()).is_none() {
                            tracing::info!(namespace = %ns, name = %name, claim = %claim, "pod unschedulable: claim not found");
                        }
                        continue;
                    }
                    VolumePlan::Select(claims) => {
                        let Some(node) = pick_node(pod, &nodes, &pods) else {
                            continue;
                        };
                        for claim in claims {
                            let patch =
                                json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
                            let req = ApiRequest::new(
                                Verb::Patch(PatchType::Merge),
                                "v1",
                                "persistentvolumeclaims",
                                user.clone(),
                            )
                            .ns(ns)
                            .name(&claim)
                            .body(&patch);
                            match sim.call(req).await {
                                Ok(_) => {
                                    tracing::info!(namespace = %ns, name = %claim, node = %node, "claim's node selected for WaitForFirstConsumer")
                                }
                                Err(e) => {
                                    tracing::warn!(namespace = %ns, name = %claim, error = %e, "failed to select a node for a claim")
                                }
                            }
                        }
                        continue;
                    }
                    VolumePlan::Ready(Some(node)) => nodes
                        .iter()
                        .filter(|n| s(n, "/metadata/name") == node)
                        .cloned()
                        .collect(),
                    VolumePlan::Ready(None) => nodes.clone(),
                };
                match pick_node(pod, &candidates, &pods) {
                    Some(node) => {
                        let binding = json!({"apiVersion": "v1", "kind": "Binding",
                            "metadata": {"name": name, "namespace": ns},
                            "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                        let req = ApiRequest::new(Verb::Create, "v1", "pods", user.clone())
                            .ns(ns)
                            .name(name)
                            .subresource("binding")
                            .body(&binding);
                        match sim.call(req).await {
                            Ok(_) => {
                                tracing::info!(namespace = %ns, name = %name, node = %node, "pod scheduled")
                            }
                            Err(e) => {
                                tracing::warn!(namespace = %ns, name = %name, error = %e, "failed to bind pod")
                            }
                        }
                    }
                    None if !reported.contains_key(&uid) => {
                        reported.insert(uid, ());
                        let mut updated = pod.clone();
                        set_condition(
                            &mut updated,
                            "PodScheduled",
                            "False",
                            Some("Unschedulable"),
                            Some(&format!("0/{} nodes are available", nodes.len())),
                        );
                        let req = ApiRequest::new(Verb::Update, "v1", "pods", user.clone())
                            .ns(ns)
                            .name(name)
                            .subresource("status")
                            .body(&updated);
                        if let Err(e) = sim.call(req).await {
                            tracing::debug!(namespace = %ns, name = %name, error = %e, "failed to report unschedulable pod");
                        }
                    }
                    None => {}
                }
            }
        }
    });
}

fn pod_ip(name: &str) -> String {
    let h = name
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    format!("10.244.{}.{}", (h >> 8) % 250 + 1, h % 250 + 2)
}

fn running_status(pod: &Value, node: &Value) -> Value {
    let t = now();
    let mut out = pod.clone();
    let host_ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|x| s(x, "/type") == "InternalIP"))
        .map(|x| s(x, "/address").to_string())
        .unwrap_or_else(|| "10.0.0.1".into());
    let ip = pod_ip(&format!(
        "{}/{}",
        s(pod, "/metadata/namespace"),
        s(pod, "/metadata/name")
    ));
    let statuses: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({"name": c.get("name"), "image": c.get("image"), "imageID": "",
                           "containerID": format!("containerd://{}", uuid::Uuid::new_v4().simple()),
                           "ready": true, "started": true, "restartCount": 0,
                           "state": {"running": {"startedAt": t}}})
                })
                .collect()
        })
        .unwrap_or_default();
    out["status"]["phase"] = json!("Running");
    out["status"]["hostIP"] = json!(host_ip);
    out["status"]["hostIPs"] = json!([{"ip": host_ip}]);
    out["status"]["podIP"] = json!(ip);
    out["status"]["podIPs"] = json!([{"ip": ip}]);
    if out.pointer("/status/startTime").is_none() {
        out["status"]["startTime"] = json!(t);
    }
    out["status"]["containerStatuses"] = json!(statuses);
    for c in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodScheduled",
    ] {
        set_condition(&mut out, c, "True", None, None);
    }
    out
}

pub fn spawn_kubelets(sim: Arc<Sim>) {
    tokio::spawn(async move {
        while sleep_or_stop(&sim, TICK).await {
            let nodes = list(&sim, "", "nodes");
            let failed_nodes = failed_set(&sim, &nodes);
            for pod in list(&sim, "", "pods") {
                let node_name = s(&pod, "/spec/nodeName");
                if node_name.is_empty() || pod.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let failed = failed_nodes.contains(node_name);
                let Some(node) = nodes.iter().find(|n| s(n, "/metadata/name") == node_name) else {
                    continue;
                };
                if failed || !is_ready(node) {
                    continue;
                }
                let phase = s(&pod, "/status/phase");
                let needs = phase == "Pending"
                    || (phase == "Running" && condition(&pod, "Ready") != Some("True"));
                if !needs {
                    continue;
                }
                let updated = running_status(&pod, node);
                let (ns, name) = (s(&pod, "/metadata/namespace"), s(&pod, "/metadata/name"));
                let req = ApiRequest::new(Verb::Update, "v1", "pods", UserInfo::node(node_name))
                    .ns(ns)
                    .name(name)
                    .subresource("status")
                    .body(&updated);
                match sim.call(req).await {
                    Ok(_) => {
                        tracing::info!(namespace = %ns, name = %name, node = %node_name, "pod running and ready")
                    }
                    Err(e) => {
                        tracing::debug!(namespace = %ns, name = %name, error = %e, "failed to post pod status")
                    }
                }
            }
        }
    });
}

/// Node lifecycle and, when `taint_eviction`, the taint eviction controller.
pub fn spawn_node_lifecycle(sim: Arc<Sim>, timings: NodeTimings, taint_eviction: bool) {
    if taint_eviction {
        taint_eviction::spawn(sim.clone(), timings.clone());
    }
    tokio::spawn(async move {
        let nc = UserInfo::service_account("kube-system", "node-controller");
        let mut failed_since: HashMap<String, Instant> = HashMap::new();
        let mut last_taint: HashMap<String, Instant> = HashMap::new();
        while sleep_or_stop(&sim, TICK).await {
            let nodes = list(&sim, "", "nodes");
            let failed = failed_set(&sim, &nodes);
            failed_since.retain(|n, _| failed.contains(n));
            for n in &failed {
                failed_since.entry(n.clone()).or_insert_with(Instant::now);
            }
            let zones = zone_counts(&nodes);
            let all_disrupted = !zones.is_empty()
                && zones.values().all(|(ready, not_ready)| {
                    zones::zone_state(*ready, *not_ready) == zones::ZoneState::FullDisruption
                });
            for node in nodes {
                let name = s(&node, "/metadata/name").to_string();
                let zone = s(&node, "/metadata/labels/topology.kubernetes.io~1zone").to_string();
                let down = failed_since
                    .get(&name)
                    .is_some_and(|t| t.elapsed() >= timings.grace);
                let unknown = condition(&node, "Ready") == Some("Unknown");
                let has_taint = node_taints(&node)
                    .iter()
                    .any(|t| s(t, "/key") == TAINT_UNREACHABLE);
                if down && !unknown {
                    mark_node_unknown(&sim, &nc, &node).await;
                } else if down && !has_taint {
                    let (ready, not_ready) = zones.get(&zone).copied().unwrap_or_default();
                    let interval = zones::taint_interval(
                        zones::zone_state(ready, not_ready),
                        ready + not_ready,
                        all_disrupted,
                        timings.taint_interval,
                    );
                    let due = interval
                        .is_some_and(|i| last_taint.get(&zone).is_none_or(|t| t.elapsed() >= i));
                    if due {
                        taint_node(&sim, &nc, &name).await;
                        last_taint.insert(zone, Instant::now());
                    }
                } else if down && has_taint && all_disrupted {
                    tracing::info!(node = %name, "every zone fully disrupted: evictions stop");
                    untaint_node(&sim, &nc, &name).await;
                } else if !failed.contains(&name) && (unknown || has_taint) {
                    restore_node(&sim, &nc, &node).await;
                }
            }
        }
    });
}

/// Ready and NotReady node counts per zone (`""` for nodes without a zone label).
fn zone_counts(nodes: &[Value]) -> HashMap<String, (usize, usize)> {
    let mut out: HashMap<String, (usize, usize)> = HashMap::new();
    for n in nodes {
        let zone = s(n, "/metadata/labels/topology.kubernetes.io~1zone").to_string();
        let entry = out.entry(zone).or_default();
        if is_ready(n) {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    out
}

async fn mark_node_unknown(sim: &Arc<Sim>, nc: &UserInfo, node: &Value) {
    let name = s(node, "/metadata/name");
    let mut updated = node.clone();
    for c in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        set_condition(
            &mut updated,
            c,
            "Unknown",
            Some("NodeStatusUnknown"),
            Some("Kubelet stopped posting node status."),
        );
    }
    let req = ApiRequest::new(Verb::Update, "v1", "nodes", nc.clone())
        .name(name)
        .subresource("status")
        .body(&updated);
    match sim.call(req).await {
        Ok(_) => tracing::info!(node = %name, "node stopped heartbeating: Ready=Unknown"),
        Err(e) => {
            tracing::warn!(node = %name, error = %e, "failed to mark node unknown");
            return;
        }
    }
    for pod in list(sim, "", "pods") {
        if s(&pod, "/spec/nodeName") != name || condition(&pod, "Ready") == Some("False") {
            continue;
        }
        let mut p = pod.clone();
        set_condition(&mut p, "Ready", "False", None, None);
        let (ns, pname) = (s(&pod, "/metadata/namespace"), s(&pod, "/metadata/name"));
        let req = ApiRequest::new(Verb::Update, "v1", "pods", nc.clone())
            .ns(ns)
            .name(pname)
            .subresource("status")
            .body(&p);
        match sim.call(req).await {
            Ok(_) => {
                tracing::info!(namespace = %ns, name = %pname, node = %name, "pod marked not ready")
            }
            Err(e) => {
                tracing::warn!(namespace = %ns, name = %pname, error = %e, "failed to mark pod not ready")
            }
        }
    }
}

async fn taint_node(sim: &Arc<Sim>, nc: &UserInfo, name: &str) {
    let Some(node) = sim.store.get(&StorageKey::new("", "nodes"), "", name) else {
        return;
    };
    let mut taints = node_taints(&node);
    for effect in ["NoSchedule", "NoExecute"] {
        if !taints
            .iter()
            .any(|t| s(t, "/key") == TAINT_UNREACHABLE && s(t, "/effect") == effect)
        {
            let mut t = json!({"key": TAINT_UNREACHABLE, "effect": effect});
            if effect == "NoExecute" {
                t["timeAdded"] = json!(now());
            }
            taints.push(t);
        }
    }
    let mut updated = node.clone();
    updated["spec"]["taints"] = json!(taints);
    let req = ApiRequest::new(Verb::Update, "v1", "nodes", nc.clone())
        .name(name)
        .body(&updated);
    match sim.call(req).await {
        Ok(_) => tracing::info!(node = %name, "node tainted unreachable"),
        Err(e) => tracing::warn!(node = %name, error = %e, "failed to taint node"),
    }
}

async fn restore_node(sim: &Arc<Sim>, nc: &UserInfo, node: &Value) {
    let name = s(node, "/metadata/name");
    if condition(node, "Ready") != Some("True") {
        let mut updated = node.clone();
        set_condition(
            &mut updated,
            "Ready",
            "True",
            Some("KubeletReady"),
            Some("kubelet is posting ready status"),
        );
        for c in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            set_condition(
                &mut updated,
                c,
                "False",
                Some("KubeletHasSufficientResources"),
                None,
            );
        }
        let req = ApiRequest::new(Verb::Update, "v1", "nodes", UserInfo::node(name))
            .name(name)
            .subresource("status")
            .body(&updated);
        if let Err(e) = sim.call(req).await {
            tracing::warn!(node = %name, error = %e, "failed to post node ready");
            return;
        }
    }
    if untaint_node(sim, nc, name).await {
        tracing::info!(node = %name, "node heartbeating again: Ready, taints removed");
    }
}

/// Removes the unreachable and not-ready taints; whether that worked.
async fn untaint_node(sim: &Arc<Sim>, nc: &UserInfo, name: &str) -> bool {
    let Some(current) = sim.store.get(&StorageKey::new("", "nodes"), "", name) else {
        return false;
    };
    let kept: Vec<Value> = node_taints(&current)
        .into_iter()
        .filter(|t| !matches!(s(t, "/key"), TAINT_UNREACHABLE | TAINT_NOT_READY))
        .collect();
    let mut updated = current.clone();
    updated["spec"]["taints"] = json!(kept);
    if kept.is_empty()
        && let Some(spec) = updated.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.remove("taints");
    }
    let req = ApiRequest::new(Verb::Update, "v1", "nodes", nc.clone())
        .name(name)
        .body(&updated);
    match sim.call(req).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(node = %name, error = %e, "failed to untaint node");
            false
        }
    }
}

/// A simulated worker (or control-plane) node, Ready.
pub fn node_object(name: &str, index: usize, control_plane: bool) -> Value {
    let t = now();
    let zone = format!("zone-{}", (b'a' + (index % 3) as u8) as char);
    let mut labels = json!({"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "topology.kubernetes.io/zone": zone,
        "topology.kubernetes.io/region": "sim"});
    let mut spec = json!({});
    if control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        spec["taints"] =
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    }
    let cond = |kind: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": msg,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": format!("10.0.0.{}", index + 10)},
                          {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "nodeInfo": {"kubeletVersion": "v1.36.0", "containerRuntimeVersion": "containerd://2.0.0",
                         "operatingSystem": "linux", "architecture": "amd64", "osImage": "kube-sim",
                         "kernelVersion": "6.0.0", "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_prefers_the_least_loaded_fitting_node() {
        let mut n1 = node_object("node-1", 0, false);
        let n2 = node_object("node-2", 1, false);
        let cp = node_object("cp", 2, true);
        let pod = json!({"spec": {}});
        let busy = json!({"spec": {"nodeName": "node-2"}});
        assert_eq!(
            pick_node(&pod, &[n1.clone(), n2.clone(), cp.clone()], &[busy]).as_deref(),
            Some("node-1")
        );
        set_condition(&mut n1, "Ready", "Unknown", None, None);
        assert_eq!(
            pick_node(&pod, &[n1.clone(), cp.clone()], &[]),
            None,
            "not-ready and tainted nodes never fit"
        );
        let selective =
            json!({"spec": {"nodeSelector": {"topology.kubernetes.io/zone": "zone-b"}}});
        assert_eq!(
            pick_node(&selective, &[node_object("node-1", 0, false), n2], &[]).as_deref(),
            Some("node-2")
        );
    }

    #[test]
    fn pods_with_claims_wait_for_binding_and_select_a_node_for_wait_for_first_consumer() {
        let pod = json!({"metadata": {"namespace": "ns"}, "spec": {"volumes": [
            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}});
        let classes = [
            json!({"metadata": {"name": "wffc"}, "volumeBindingMode": "WaitForFirstConsumer"}),
            json!({"metadata": {"name": "now"}, "volumeBindingMode": "Immediate"}),
        ];
        let pvc = |class: &str, ann: Value, phase: &str| {
            json!({"metadata": {"namespace": "ns", "name": "data", "annotations": ann},
            "spec": {"storageClassName": class}, "status": {"phase": phase}})
        };
        assert_eq!(
            volume_plan(&pod, &[], &classes),
            VolumePlan::Missing("data".into())
        );
        assert_eq!(
            volume_plan(&pod, &[pvc("wffc", json!({}), "Pending")], &classes),
            VolumePlan::Select(vec!["data".into()])
        );
        let selected = json!({ANN_SELECTED_NODE: "node-2"});
        assert_eq!(
            volume_plan(&pod, &[pvc("wffc", selected.clone(), "Pending")], &classes),
            VolumePlan::Wait
        );
        assert_eq!(
            volume_plan(&pod, &[pvc("wffc", selected, "Bound")], &classes),
            VolumePlan::Ready(Some("node-2".into()))
        );
        assert_eq!(
            volume_plan(&pod, &[pvc("now", json!({}), "Pending")], &classes),
            VolumePlan::Wait
        );
        assert_eq!(
            volume_plan(&json!({"spec": {}}), &[], &classes),
            VolumePlan::Ready(None)
        );
    }

    #[test]
    fn tolerations_match_taints_by_key_value_and_effect() {
        let taint = json!({"key": "k", "value": "v", "effect": "NoSchedule"});
        let pod = |t: Value| json!({"spec": {"tolerations": [t]}});
        assert!(tolerates(
            &pod(json!({"key": "k", "operator": "Exists"})),
            &taint
        ));
        assert!(tolerates(&pod(json!({"key": "k", "value": "v"})), &taint));
        assert!(tolerates(&pod(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(&pod(json!({"key": "k", "value": "w"})), &taint));
        assert!(!tolerates(
            &pod(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
    }
}
