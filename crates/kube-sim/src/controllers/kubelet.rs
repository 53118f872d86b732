//! Kubelets (`system:node:<node>`): pods on Ready nodes go Running and Ready; the Node object a
//! kubelet registers.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::apiserver::{ApiRequest, Sim, Verb, now};
use crate::auth::UserInfo;
use crate::defaults::{condition, set_condition};

fn pod_ip(name: &str) -> String {
    let h = name
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    format!("10.244.{}.{}", (h >> 8) % 250 + 1, h % 250 + 2)
}

/// The pod as its kubelet reports it once its containers run: Running, IPs, container
/// statuses, every condition True.
pub fn running_status(pod: &Value, node: &Value) -> Value {
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
