//! Simulated cluster behaviour. Every controller acts through [`Sim::call`] under the identity the
//! real one uses, so its writes go through admission like in a real cluster:
//! - garbage collector (`generic-garbage-collector`, [`gc`]): ownerReference cascade and orphaning;
//! - namespace controller (`namespace-controller`, [`namespace`]): empties a deleted namespace,
//!   then removes it;
//! - node lifecycle (`node-controller`, [`node_lifecycle`]): nodes whose heartbeats stop go Ready=Unknown, their pods
//!   Ready=False, and they get the unreachable taints at the rate [`zones`] allows; heartbeats
//!   resuming undo it;
//! - taint eviction (`node-controller`, see [`taint_eviction`]): pods on NoExecute-tainted nodes
//!   are marked DisruptionTarget and deleted once their toleration runs out; refused five times,
//!   a pod is left alone until the node's NoExecute taints change;
//! - scheduler (`system:kube-scheduler`, [`scheduler`]): binds pending pods to Ready nodes whose taints they
//!   tolerate and whose labels match their nodeSelector (no affinity, no resources); a pod waits
//!   until its claims are Bound, and for WaitForFirstConsumer claims the scheduler first writes
//!   `volume.kubernetes.io/selected-node` on them, choosing only nodes its class's
//!   `allowedTopologies` admit and, for a provisioner with a CSIDriver asking for capacity
//!   checks, nodes a CSIStorageCapacity says have room (a bound volume's node affinity is not
//!   checked);
//! - kubelets (`system:node:<node>`, [`kubelet`]): pods on Ready nodes go Running and Ready;
//! - PV controller (`persistent-volume-binder`) and PVC/PV protection, see [`pv`].
//!
//! Controllers are clients of the API layer ([`crate::apiserver`]); the API layer reaches the
//! garbage collector and namespace controller only through the [`DELETION_HOOKS`] it is given.

use std::time::Duration;

use serde_json::Value;

use crate::apiserver::{DeletionHooks, Sim};
use crate::defaults::condition;
use crate::resources::ResourceType;
use crate::store::StorageKey;

pub mod gc;
pub mod kubelet;
pub mod namespace;
pub mod node_lifecycle;
pub mod pv;
pub mod scheduler;
pub mod taint_eviction;
pub mod zones;

pub use gc::{spawn_cascade, spawn_orphaning};
pub use kubelet::{node_object, spawn_kubelets};
pub use namespace::spawn_namespace_cleanup;
pub use node_lifecycle::{NodeTimings, spawn_node_lifecycle};
pub use pv::spawn_pv_binder;
pub use scheduler::{ANN_SELECTED_NODE, VolumePlan, pick_node, spawn_scheduler, volume_plan};

/// The garbage collector and namespace controller, as the API server's deletions call them.
pub const DELETION_HOOKS: DeletionHooks = DeletionHooks {
    deleted: spawn_cascade,
    orphan: spawn_orphaning,
    namespace_terminating: spawn_namespace_cleanup,
};

/// How often the simulated controllers look at the store.
pub const TICK: Duration = Duration::from_millis(100);

/// Annotation on a Node that stops (value `stopped`) its simulated heartbeats; what
/// `kube-sim node fail` sets from outside the process.
pub const HEARTBEAT_ANNOTATION: &str = "kube-sim.ballast.dev/heartbeat";

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
            .and_then(|a| a.get(HEARTBEAT_ANNOTATION))
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
