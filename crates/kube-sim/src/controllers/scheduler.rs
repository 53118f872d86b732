//! The scheduler (`system:kube-scheduler`): binds pending pods to Ready nodes whose taints they
//! tolerate and whose labels match their nodeSelector. For WaitForFirstConsumer claims still to
//! be provisioned it picks only nodes that kube-scheduler's VolumeBinding plugin would let
//! through: in the class's `allowedTopologies`, and with enough storage capacity when the
//! class's provisioner has a CSIDriver with `storageCapacity: true` ([`provision_fits`]).

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

/// Whether a volume for `claim` may be provisioned for `node`, as kube-scheduler's VolumeBinding
/// plugin decides it (`checkVolumeProvisions`, `hasEnoughCapacity`): the node satisfies the
/// class's `allowedTopologies`; and when a CSIDriver named like the class's provisioner has
/// `storageCapacity: true` (any provisioner, CSI or not: only the name is looked up), some
/// CSIStorageCapacity of the class, in any namespace, has a `maximumVolumeSize` (else a
/// `capacity`) of at least the request and a `nodeTopology` selecting the node. A claim without
/// a storage request, or whose class is not found, is not checked here.
pub fn provision_fits(
    claim: &Value,
    classes: &[Value],
    drivers: &[Value],
    capacities: &[Value],
    node: &Value,
) -> bool {
    let class_name = s(claim, "/spec/storageClassName");
    let Some(class) = classes
        .iter()
        .find(|c| s(c, "/metadata/name") == class_name)
    else {
        return true;
    };
    let labels = crate::selectors::labels_of(node);
    let terms = class
        .get("allowedTopologies")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let in_topology = terms.is_empty()
        || terms.iter().any(|term| {
            term.get("matchLabelExpressions")
                .and_then(Value::as_array)
                .is_some_and(|exprs| {
                    exprs.iter().all(|e| {
                        let values = e.get("values").and_then(Value::as_array);
                        labels.get(s(e, "/key")).is_some_and(|l| {
                            values.is_some_and(|vs| vs.iter().any(|v| v.as_str() == Some(l)))
                        })
                    })
                })
        });
    if !in_topology {
        return false;
    }
    let Some(request) = claim
        .pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(super::pv::quantity_bytes)
    else {
        return true;
    };
    let provisioner = s(class, "/provisioner");
    let tracked = drivers.iter().any(|d| {
        s(d, "/metadata/name") == provisioner
            && d.pointer("/spec/storageCapacity") == Some(&json!(true))
    });
    if !tracked {
        return true;
    }
    capacities.iter().any(|c| {
        let limit = c
            .get("maximumVolumeSize")
            .or_else(|| c.get("capacity"))
            .and_then(Value::as_str)
            .and_then(super::pv::quantity_bytes);
        // A capacity without a topology is available nowhere.
        let reaches = c
            .get("nodeTopology")
            .filter(|t| !t.is_null())
            .and_then(|t| crate::selectors::LabelSelector::from_json(Some(t)).ok())
            .is_some_and(|sel| sel.matches_labels(&labels));
        s(c, "/storageClassName") == class_name && limit.is_some_and(|l| l >= request) && reaches
    })
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
            let drivers = list(&sim, "storage.k8s.io", "csidrivers");
            let capacities = list(&sim, "storage.k8s.io", "csistoragecapacities");
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
                        let to_provision: Vec<&Value> = pvcs
                            .iter()
                            .filter(|c| {
                                s(c, "/metadata/namespace") == ns
                                    && claims.iter().any(|n| n == s(c, "/metadata/name"))
                            })
                            .collect();
                        let fitting: Vec<Value> = nodes
                            .iter()
                            .filter(|n| {
                                to_provision
                                    .iter()
                                    .all(|c| provision_fits(c, &classes, &drivers, &capacities, n))
                            })
                            .cloned()
                            .collect();
                        let Some(node) = pick_node(pod, &fitting, &pods) else {
                            if reported.insert(uid, ()).is_none() {
                                tracing::info!(namespace = %ns, name = %name, "pod unschedulable: no node fits its claims' storage");
                            }
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
    fn claims_to_provision_go_only_where_capacity_is_published_for_tracked_drivers() {
        let node = |name: &str, zone: &str| {
            json!({"metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}}})
        };
        let (n1, n2) = (node("node-1", "a"), node("node-2", "b"));
        let claim = |class: &str, request: &str| {
            json!({"spec": {"storageClassName": class,
                            "resources": {"requests": {"storage": request}}}})
        };
        let classes = [
            json!({"metadata": {"name": "local"}, "provisioner": "hostpath.example.com"}),
            json!({"metadata": {"name": "other"}, "provisioner": "other.example.com"}),
            json!({"metadata": {"name": "zoned"}, "provisioner": "other.example.com",
                   "allowedTopologies": [{"matchLabelExpressions": [
                       {"key": "topology.kubernetes.io/zone", "values": ["b"]}]}]}),
        ];
        let driver = |capacity: bool| {
            [json!({"metadata": {"name": "hostpath.example.com"},
                    "spec": {"storageCapacity": capacity}})]
        };
        let capacity = |class: &str, host: &str, bytes: &str| {
            json!({"metadata": {"namespace": "anywhere", "name": format!("{class}-{host}")},
                   "storageClassName": class, "capacity": bytes,
                   "nodeTopology": {"matchLabels": {"kubernetes.io/hostname": host}}})
        };
        let caps = [
            capacity("local", "node-1", "1Gi"),
            capacity("other", "node-2", "0"),
        ];
        let fits = |c: &Value, drivers: &[Value], n: &Value| {
            provision_fits(c, &classes, drivers, &caps, n)
        };
        let small = claim("local", "512Mi");
        assert!(fits(&small, &driver(true), &n1));
        assert!(
            !fits(&small, &driver(true), &n2),
            "no capacity object selects node-2"
        );
        assert!(
            !fits(&claim("local", "2Gi"), &driver(true), &n1),
            "not enough"
        );
        assert!(
            fits(&small, &driver(false), &n2),
            "storageCapacity off: not checked"
        );
        assert!(fits(&small, &[], &n2), "no CSIDriver: not checked");
        assert!(
            fits(&claim("other", "1Gi"), &driver(true), &n1),
            "another provisioner"
        );
        assert!(
            !fits(&claim("zoned", "1Gi"), &[], &n1),
            "outside allowedTopologies"
        );
        assert!(fits(&claim("zoned", "1Gi"), &[], &n2));
        let mut bounded = caps[0].clone();
        bounded["maximumVolumeSize"] = json!("256Mi");
        assert!(
            !provision_fits(&small, &classes, &driver(true), &[bounded], &n1),
            "maximumVolumeSize wins over capacity"
        );
        let mut nowhere = caps[0].clone();
        nowhere.as_object_mut().unwrap().remove("nodeTopology");
        assert!(!provision_fits(
            &small,
            &classes,
            &driver(true),
            &[nowhere],
            &n1
        ));
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
