//! The scheduler (`system:kube-scheduler`): binds pending pods to Ready nodes whose taints they
//! tolerate and whose labels match their nodeSelector.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::apiserver::{ApiRequest, Sim, Verb};
use crate::auth::UserInfo;
use crate::defaults::set_condition;
use crate::patch::PatchType;

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

/// A pod the default scheduler still has to place.
fn waits_for_scheduling(pod: &Value) -> bool {
    s(pod, "/spec/nodeName").is_empty()
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && s(pod, "/spec/schedulerName") == "default-scheduler"
}

pub fn spawn_scheduler(sim: Arc<Sim>) {
    tokio::spawn(async move {
        let user = UserInfo::new("system:kube-scheduler", &[]);
        let mut reported: HashMap<String, ()> = HashMap::new();
        while sleep_or_stop(&sim, TICK).await {
            let pods = list(&sim, "", "pods");
            // Claims and nodes are read only when a pod waits: thousands of claims are not
            // copied ten times a second for nothing.
            if !pods.iter().any(waits_for_scheduling) {
                continue;
            }
            let nodes = list(&sim, "", "nodes");
            let pvcs = list(&sim, "", "persistentvolumeclaims");
            let classes = list(&sim, "storage.k8s.io", "storageclasses");
            for pod in &pods {
                if !waits_for_scheduling(pod) {
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
