//! Node lifecycle (`node-controller`): nodes whose heartbeats stop go Ready=Unknown, their pods
//! Ready=False, and they get the unreachable taints at the rate [`super::zones`] allows;
//! heartbeats resuming undo it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::apiserver::{ApiRequest, Sim, Verb, now};
use crate::auth::UserInfo;
use crate::defaults::{TAINT_NOT_READY, TAINT_UNREACHABLE, condition, set_condition};
use crate::store::StorageKey;

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
            // Nodes whose kubelets run elsewhere (`kube-sim nodes`, the harness's simulated
            // kubelets) heartbeat through their Lease: one not renewed for the grace is down.
            let stale = stale_leases(&sim, timings.grace);
            let mut failed = failed_set(&sim, &nodes);
            failed.extend(stale.iter().cloned());
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
                let down = stale.contains(&name)
                    || failed_since
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

/// Nodes whose Lease in `kube-node-lease` has not been renewed for `grace`.
fn stale_leases(sim: &Sim, grace: Duration) -> std::collections::HashSet<String> {
    let leases = sim
        .store
        .list(
            &StorageKey::new("coordination.k8s.io", "leases"),
            Some("kube-node-lease"),
        )
        .0;
    let now = chrono::Utc::now();
    leases
        .iter()
        .filter(|l| {
            chrono::DateTime::parse_from_rfc3339(s(l, "/spec/renewTime")).is_ok_and(|t| {
                (now - t.with_timezone(&chrono::Utc))
                    .to_std()
                    .is_ok_and(|age| age >= grace)
            })
        })
        .map(|l| s(l, "/metadata/name").to_string())
        .collect()
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
