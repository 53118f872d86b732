//! Watches: the Nodes (the only cache the guard keeps) and the mode ConfigMap (so every replica
//! follows a change made through any of them). Both feed the [`Guard`].

use std::collections::BTreeMap;
use std::sync::Arc;

use ballast_runtime::admin::Readiness;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, NodeCondition, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::{Deserialize, Deserializer};
use tokio_util::sync::CancellationToken;

use crate::guard::{Guard, error_chain};
use crate::mode::{ModeRecord, ModeStore};
use crate::storm::{NodeState, Selector, is_worker};

/// Readiness check: the node cache has synced.
pub const NODES_SYNCED: &str = "nodes-synced";
/// Readiness check: the stored mode has been read.
pub const MODE_LOADED: &str = "mode-loaded";

/// Runs the Node watch until `shutdown`.
pub async fn watch_nodes(
    client: kube::Client,
    selector: Selector,
    guard: Arc<Guard>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let api: Api<WatchedNode> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default())
        .backoff(ballast_runtime::watch::backoff());
    futures::pin_mut!(stream);
    let mut initial: Vec<NodeState> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        let event = match event {
            None => return,
            Some(Err(e)) => {
                let error = error_chain(&e);
                tracing::warn!(%error, "node watch failed; retrying with backoff");
                guard.node_watch_failed(error);
                continue;
            }
            Some(Ok(event)) => {
                guard.node_watch_ok();
                event
            }
        };
        match event {
            Event::Init => initial.clear(),
            Event::InitApply(WatchedNode(node)) => {
                if is_worker(&node, &selector) {
                    initial.push(NodeState::from_node(&node));
                }
            }
            Event::InitDone => {
                let workers = std::mem::take(&mut initial);
                tracing::info!(workers = workers.len(), "node cache synced");
                guard.replace_workers(workers);
                readiness.set(NODES_SYNCED, true);
            }
            Event::Apply(WatchedNode(node)) => {
                if is_worker(&node, &selector) {
                    guard.upsert_worker(NodeState::from_node(&node));
                } else if let Some(name) = &node.metadata.name {
                    guard.remove_worker(name);
                }
            }
            Event::Delete(WatchedNode(node)) => {
                if let Some(name) = &node.metadata.name {
                    tracing::info!(node = %name, "node deleted");
                    guard.remove_worker(name);
                }
            }
        }
    }
}

/// Shortest wait of [`settle_timer`].
const SETTLE_TIMER_FLOOR: std::time::Duration = std::time::Duration::from_millis(100);

/// Re-evaluates the protection when an ending storm's settle period runs out (nothing else
/// changes then), until `shutdown`.
pub async fn settle_timer(guard: Arc<Guard>, shutdown: CancellationToken) {
    let mut snapshots = guard.subscribe();
    loop {
        // never a busy loop, whatever the clock does
        let wait = guard.next_change().map(|at| {
            (at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                .max(SETTLE_TIMER_FLOOR)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
            () = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => guard.reevaluate(),
        }
    }
}

/// A Node as the guard watches it: only what a decision reads (name, labels, taints,
/// conditions) and what the watch needs (resourceVersion, uid) is decoded; the rest of the
/// object (the image list, managed fields, annotations, addresses, node info: most of a
/// kubelet-registered Node's 10-15 KB) is skipped by the decoder, never allocated.
#[derive(Clone, Debug)]
pub struct WatchedNode(pub Node);

impl k8s_openapi::Resource for WatchedNode {
    const API_VERSION: &'static str = <Node as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Node as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Node as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Node as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Node as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Node as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for WatchedNode {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.0.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.0.metadata
    }
}

impl<'de> Deserialize<'de> for WatchedNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct Meta {
            name: Option<String>,
            uid: Option<String>,
            resource_version: Option<String>,
            labels: Option<BTreeMap<String, String>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Spec {
            taints: Option<Vec<Taint>>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Status {
            conditions: Option<Vec<NodeCondition>>,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: Meta,
            #[serde(default)]
            spec: Option<Spec>,
            #[serde(default)]
            status: Option<Status>,
        }
        let w = Wire::deserialize(d)?;
        Ok(WatchedNode(Node {
            metadata: ObjectMeta {
                name: w.metadata.name,
                uid: w.metadata.uid,
                resource_version: w.metadata.resource_version,
                labels: w.metadata.labels,
                ..ObjectMeta::default()
            },
            spec: w.spec.map(|s| NodeSpec {
                taints: s.taints,
                ..NodeSpec::default()
            }),
            status: w.status.map(|s| NodeStatus {
                conditions: s.conditions,
                ..NodeStatus::default()
            }),
        }))
    }
}

/// Runs the mode ConfigMap watch until `shutdown`.
pub async fn watch_mode(
    store: ModeStore,
    guard: Arc<Guard>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", store.name()));
    let stream =
        watcher::watcher(store.api().clone(), cfg).backoff(ballast_runtime::watch::backoff());
    futures::pin_mut!(stream);
    let mut initial: Option<ModeRecord> = None;
    let record_of = |cm: &ConfigMap| {
        cm.data
            .as_ref()
            .map(ModeRecord::from_data)
            .unwrap_or_default()
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %error_chain(&e), "mode ConfigMap watch failed; retrying with backoff");
            }
            Some(Ok(Event::Init)) => initial = None,
            Some(Ok(Event::InitApply(cm))) => initial = Some(record_of(&cm)),
            Some(Ok(Event::InitDone)) => {
                guard.apply_stored_mode(initial.take().unwrap_or_default());
                readiness.set(MODE_LOADED, true);
            }
            Some(Ok(Event::Apply(cm))) => guard.apply_stored_mode(record_of(&cm)),
            Some(Ok(Event::Delete(_))) => guard.apply_stored_mode(ModeRecord::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn watched_nodes_keep_what_decisions_read_and_drop_the_rest() {
        let full = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": "node-a", "uid": "u-1", "resourceVersion": "42",
                "labels": {"topology.kubernetes.io/zone": "zone-a", "kubernetes.io/os": "linux"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                "managedFields": [{"manager": "kubelet", "operation": "Update"}],
            },
            "spec": {"providerID": "aws:///x", "taints": [
                {"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]},
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                "lastTransitionTime": "2026-11-28T10:00:00Z"}],
                "images": [{"names": ["registry.example.com/app:1"], "sizeBytes": 1}],
                "nodeInfo": {"kubeletVersion": "v1.36.0", "machineID": "m", "systemUUID": "s",
                    "bootID": "b", "kernelVersion": "k", "osImage": "o",
                    "containerRuntimeVersion": "c", "kubeProxyVersion": "", "operatingSystem": "linux",
                    "architecture": "amd64"},
            },
        });
        let WatchedNode(lean) = serde_json::from_value(full.clone()).unwrap();
        let node: Node = serde_json::from_value(full).unwrap();
        // Every decision reads the same from the lean and the full object.
        assert_eq!(NodeState::from_node(&lean), NodeState::from_node(&node));
        let sel: Selector = "kubernetes.io/os=linux".parse().unwrap();
        assert_eq!(is_worker(&lean, &sel), is_worker(&node, &sel));
        assert!(NodeState::from_node(&lean).out_of_service);
        assert_eq!(lean.metadata.resource_version.as_deref(), Some("42"));
        // And the bulk is gone.
        assert!(lean.metadata.annotations.is_none());
        assert!(lean.metadata.managed_fields.is_none());
        let status = lean.status.unwrap();
        assert!(status.images.is_none());
        assert!(status.node_info.is_none());
        assert!(lean.spec.unwrap().provider_id.is_none());
    }

    #[test]
    fn a_node_without_spec_or_status_decodes() {
        let WatchedNode(n) = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(n.metadata.name.as_deref(), Some("n"));
        assert!(n.spec.is_none() && n.status.is_none());
    }
}
