//! The operator's view of the pods it manages: a lean pod ([`CachedPod`], only what the plan
//! reads) and a cache of them indexed by owning PodManager ([`PodCache`]), fed by the same pod
//! watch that triggers reconciles. Reconciles read their pods from it, as the ReplicaSet
//! controller reads from its informer, instead of listing them from the API server each time.
//!
//! The cache can lag the API by a watch event. The plan tolerates that: pod names are
//! deterministic, so a stale view can only re-create a name that exists (AlreadyExists) or
//! delete a pod already gone (NotFound, or a uid precondition that fails), both harmless.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::runtime::watcher;
use serde::Deserialize;
use tokio::sync::watch;

use crate::LABEL_NAME;
use crate::plan::{CONTAINER_NAME, PodView};
use crate::template::LABEL_TEMPLATE_HASH;

/// A pod as cached: its identity, owner references, the two labels read, where it runs, its
/// image and whether it is ready.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Pod")]
pub struct CachedPod {
    /// Name, namespace, uid, resourceVersion, deletion timestamp and owner references.
    pub metadata: ObjectMeta,
    /// The `podmanager` label: the name of the PodManager it belongs to.
    pub owner_label: Option<String>,
    /// The template hash label.
    pub template_hash: Option<String>,
    /// `spec.nodeName`.
    pub node_name: Option<String>,
    /// The image of the operator's container (or of the first container).
    pub image: Option<String>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// The Ready condition's status is `True`.
    pub ready_condition: bool,
}

ballast_runtime::core_v1_resource!(CachedPod, "Pod", "pods", NamespaceResourceScope);

impl PodView for CachedPod {
    fn pod_name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }
    fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }
    fn phase(&self) -> Option<&str> {
        self.phase.as_deref()
    }
    fn is_terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
    fn ready_condition(&self) -> bool {
        self.ready_condition
    }
    fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }
    fn template_hash(&self) -> Option<&str> {
        self.template_hash.as_deref()
    }
}

impl From<&Pod> for CachedPod {
    /// The same pod as the watch would decode it (tests build pods with k8s-openapi's types).
    fn from(pod: &Pod) -> Self {
        let m = &pod.metadata;
        let label = |k: &str| m.labels.as_ref().and_then(|l| l.get(k)).cloned();
        CachedPod {
            metadata: ObjectMeta {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                uid: m.uid.clone(),
                resource_version: m.resource_version.clone(),
                deletion_timestamp: m.deletion_timestamp.clone(),
                owner_references: m.owner_references.clone(),
                ..ObjectMeta::default()
            },
            owner_label: label(LABEL_NAME),
            template_hash: label(LABEL_TEMPLATE_HASH),
            node_name: PodView::node_name(pod).map(str::to_string),
            image: PodView::image(pod).map(str::to_string),
            phase: PodView::phase(pod).map(str::to_string),
            ready_condition: PodView::ready_condition(pod),
        }
    }
}

/// The JSON shape decoded: only the fields read, every other one skipped by serde.
mod wire {
    use super::*;

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub struct Pod {
        metadata: Meta,
        spec: Spec,
        status: Status,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Meta {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        deletion_timestamp: Option<Time>,
        owner_references: Option<Vec<OwnerReference>>,
        #[serde(deserialize_with = "kept_labels")]
        labels: Option<BTreeMap<String, String>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Spec {
        node_name: Option<String>,
        containers: Vec<Container>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Container {
        name: String,
        image: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Status {
        phase: Option<String>,
        conditions: Vec<Condition>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Condition {
        #[serde(rename = "type")]
        type_: String,
        status: String,
    }

    fn kept_labels<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeMap<String, String>>, D::Error> {
        ballast_runtime::lean::kept(d, &[LABEL_NAME, LABEL_TEMPLATE_HASH])
    }

    impl From<Pod> for CachedPod {
        fn from(p: Pod) -> Self {
            let Meta {
                name,
                namespace,
                uid,
                resource_version,
                deletion_timestamp,
                owner_references,
                labels,
            } = p.metadata;
            let mut labels = labels.unwrap_or_default();
            let mut containers = p.spec.containers;
            let pick = containers
                .iter()
                .position(|c| c.name == CONTAINER_NAME)
                .unwrap_or(0);
            let image = (pick < containers.len())
                .then(|| containers.swap_remove(pick).image)
                .flatten();
            CachedPod {
                metadata: ObjectMeta {
                    name,
                    namespace,
                    uid,
                    resource_version,
                    deletion_timestamp,
                    owner_references,
                    ..ObjectMeta::default()
                },
                owner_label: labels.remove(LABEL_NAME),
                template_hash: labels.remove(LABEL_TEMPLATE_HASH),
                node_name: p.spec.node_name,
                image,
                phase: p.status.phase,
                ready_condition: p
                    .status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True"),
            }
        }
    }
}

/// `(namespace, name)`.
type Key = (String, String);

/// The pods, and their names by `(namespace, podmanager label)`.
#[derive(Default)]
struct Index {
    pods: HashMap<Key, Arc<CachedPod>>,
    by_owner: HashMap<Key, BTreeSet<String>>,
}

impl Index {
    fn key(pod: &CachedPod) -> Key {
        (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        )
    }

    fn owner_key(namespace: &str, pod: &CachedPod) -> Key {
        (
            namespace.to_string(),
            pod.owner_label.clone().unwrap_or_default(),
        )
    }

    fn upsert(&mut self, pod: &CachedPod) {
        let key = Self::key(pod);
        let owner = Self::owner_key(&key.0, pod);
        if let Some(old) = self.pods.get(&key) {
            // The label may have changed: leave the old owner's set.
            if old.owner_label != pod.owner_label {
                self.unlink(&Self::owner_key(&key.0, old), &key.1);
            }
        }
        self.by_owner
            .entry(owner)
            .or_default()
            .insert(key.1.clone());
        self.pods.insert(key, Arc::new(pod.clone()));
    }

    fn remove(&mut self, pod: &CachedPod) {
        let key = Self::key(pod);
        if let Some(old) = self.pods.remove(&key) {
            self.unlink(&Self::owner_key(&key.0, &old), &key.1);
        }
    }

    fn unlink(&mut self, owner: &Key, name: &str) {
        if let Some(names) = self.by_owner.get_mut(owner) {
            names.remove(name);
            if names.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    fn labelled(&self, namespace: &str, podmanager: &str) -> Vec<Arc<CachedPod>> {
        let owner = (namespace.to_string(), podmanager.to_string());
        self.by_owner
            .get(&owner)
            .into_iter()
            .flatten()
            .filter_map(|name| self.pods.get(&(namespace.to_string(), name.clone())))
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct State {
    index: Index,
    /// A relist in progress: its pods, swapped in when it is complete.
    relist: Option<Index>,
}

/// The pods carrying the `podmanager` label, as the watch last delivered them, by namespace and
/// label value. Cheap to read; written only by the watch.
pub struct PodCache {
    state: RwLock<State>,
    synced: watch::Sender<bool>,
}

impl Default for PodCache {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            synced: watch::Sender::new(false),
        }
    }
}

impl PodCache {
    /// Applies one watch event. A relist (`Init` … `InitDone`) is built aside and swapped in
    /// whole, so readers never see it half done; the first one completing marks the cache
    /// synced.
    pub fn apply(&self, event: &watcher::Event<CachedPod>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Apply(pod) => state.index.upsert(pod),
            watcher::Event::Delete(pod) => state.index.remove(pod),
            watcher::Event::Init => state.relist = Some(Index::default()),
            watcher::Event::InitApply(pod) => {
                state.relist.get_or_insert_with(Index::default).upsert(pod);
            }
            watcher::Event::InitDone => {
                if let Some(index) = state.relist.take() {
                    state.index = index;
                }
                drop(state);
                self.synced.send_replace(true);
            }
        }
    }

    /// The pods labelled as belonging to PodManager `podmanager` in `namespace`, by name.
    /// Ownership (the controller reference) is for the caller to check.
    pub fn labelled(&self, namespace: &str, podmanager: &str) -> Vec<Arc<CachedPod>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.index.labelled(namespace, podmanager)
    }

    /// Whether a first full list has arrived.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until a first full list has arrived.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives as long as `self`: the wait ends only when synced.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Forgets everything, for a new watch (a new leadership term).
    pub fn reset(&self) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = State::default();
        self.synced.send_replace(false);
    }

    /// Pods held (for tests and metrics).
    pub fn len(&self) -> usize {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.index.pods.len()
    }

    /// Whether no pod is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
