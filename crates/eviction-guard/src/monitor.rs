//! Watches: the Nodes (the only cache the guard keeps) and the mode ConfigMap (so every replica
//! follows a change made through any of them). Both feed the [`Guard`].

use std::sync::Arc;

use ballast_runtime::admin::Readiness;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
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
    let api: Api<Node> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
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
            Event::InitApply(node) => {
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
            Event::Apply(node) => {
                if is_worker(&node, &selector) {
                    guard.upsert_worker(NodeState::from_node(&node));
                } else if let Some(name) = &node.metadata.name {
                    guard.remove_worker(name);
                }
            }
            Event::Delete(node) => {
                if let Some(name) = &node.metadata.name {
                    tracing::info!(node = %name, "node deleted");
                    guard.remove_worker(name);
                }
            }
        }
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
    let stream = watcher::watcher(store.api().clone(), cfg).default_backoff();
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
