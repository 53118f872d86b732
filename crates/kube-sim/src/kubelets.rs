//! Simulated kubelets for any API server — kube-sim or a real kube-apiserver — as KWOK does
//! them: a separate client that registers Nodes, renews their Leases in `kube-node-lease`,
//! posts their `Ready` condition, reports the pods bound to them Running and Ready through
//! `/status`, and finishes the deletion of terminating pods (the final DELETE with grace period
//! 0 and a uid precondition). A node can fail (everything stops, as when its kubelet is cut off)
//! and recover on demand. One [`Kubelets`] drives hundreds of nodes.
//!
//! In: a kube client and the nodes to run. Out: Node, Lease and pod status writes — as the
//! client's identity, or, started with [`Kubelets::start_as_nodes`], as each node's own
//! (`system:node:<name>` in `system:nodes`, through impersonation), as a real kubelet writes:
//! webhooks and the Node authorizer then see them as kubelets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::controllers::HEARTBEAT_ANNOTATION;

mod spec;
use crate::controllers::kubelet::running_status;
use crate::defaults::condition;
pub use spec::{NodeSpec, workers};

/// Namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Writes in flight at once per tick: enough for hundreds of nodes, gentle on one API server.
const CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to register node {node}")]
    Register {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to remove node {node}")]
    Remove {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {0} is not run by these kubelets")]
    Unknown(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the simulated kubelets behave.
#[derive(Debug, Clone)]
pub struct KubeletOptions {
    /// How often a live node renews its Lease and the kubelets look at their pods (a real
    /// kubelet renews every 10s, a quarter of its 40s Lease).
    pub heartbeat: Duration,
    /// A live node re-posts its status at least this often even when nothing changed (a real
    /// kubelet's `nodeStatusReportFrequency`, 5m); a status the node controller changed (Ready
    /// Unknown while the node is live) is corrected at the next heartbeat.
    pub status_report: Duration,
    /// `spec.leaseDurationSeconds` of the node Leases (40 on a real kubelet).
    pub lease_duration_seconds: i32,
    /// Report pods bound to the nodes Running and Ready, and finish their deletion. Off: the
    /// nodes heartbeat but their pods stay Pending (a kubelet that never starts containers).
    pub run_pods: bool,
}

impl Default for KubeletOptions {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(1),
            status_report: Duration::from_secs(10),
            lease_duration_seconds: 40,
            run_pods: true,
        }
    }
}

/// The running kubelets. Dropping them stops every heartbeat (the nodes stay; see
/// [`Kubelets::remove_all`]).
pub struct Kubelets {
    inner: Arc<Inner>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

struct Inner {
    client: Client,
    /// To write as each node (impersonating it); None writes as `client`.
    node_config: Option<kube::Config>,
    /// The nodes' own clients, made on first use.
    node_clients: Mutex<HashMap<String, Client>>,
    opts: KubeletOptions,
    nodes: Mutex<HashMap<String, NodeState>>,
    /// Numbers nodes for their addresses.
    next_index: AtomicUsize,
}

#[derive(Debug, Clone)]
struct NodeState {
    failed: bool,
    /// When this node last posted its status; `None`: post at the next heartbeat.
    status_posted: Option<Instant>,
}

impl Kubelets {
    /// Starts the heartbeat and pod loops; nodes come with [`Kubelets::add_node`]. Every write
    /// is made as `client`.
    pub fn start(client: Client, opts: KubeletOptions) -> Kubelets {
        Self::start_with(client, None, opts)
    }

    /// Like [`Kubelets::start`], but each node's status, Lease and pod writes are made as the node
    /// itself, impersonated with `config` (an identity allowed to impersonate: an admin's).
    pub fn start_as_nodes(
        config: kube::Config,
        opts: KubeletOptions,
    ) -> Result<Kubelets, kube::Error> {
        let client = Client::try_from(config.clone())?;
        Ok(Self::start_with(client, Some(config), opts))
    }

    fn start_with(
        client: Client,
        node_config: Option<kube::Config>,
        opts: KubeletOptions,
    ) -> Kubelets {
        let inner = Arc::new(Inner {
            client: client.clone(),
            node_config,
            node_clients: Mutex::new(HashMap::new()),
            opts,
            nodes: Mutex::new(HashMap::new()),
            next_index: AtomicUsize::new(0),
        });
        let stop = CancellationToken::new();
        let (node_store, node_writer) = reflector::store::<Node>();
        let node_watch = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .backoff(ballast_runtime::watch::backoff())
            .reflect(node_writer)
            .touched_objects()
            .for_each(|_| async {});
        let (pod_store, pod_writer) = reflector::store::<Pod>();
        let pod_watch = watcher(
            Api::<Pod>::all(client),
            watcher::Config::default().fields("spec.nodeName!="),
        )
        .backoff(ballast_runtime::watch::backoff())
        .reflect(pod_writer)
        .touched_objects()
        .for_each(|_| async {});
        let mut tasks = Vec::new();
        for watch in [node_watch.boxed(), pod_watch.boxed()] {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = watch => {}
                }
            }));
        }
        let (i, s) = (inner.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            i.run(node_store, pod_store, s).await;
        }));
        Kubelets { inner, stop, tasks }
    }

    /// Registers `node` (creating the Node, or adopting an existing one of that name) and its
    /// Lease, and starts heartbeating it.
    pub async fn add_node(&self, node: &NodeSpec) -> Result<()> {
        let index = self.inner.next_index.fetch_add(1, Ordering::Relaxed);
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        let object: Node =
            serde_json::from_value(node.object(index)).map_err(|e| Error::Register {
                node: node.name.clone(),
                source: kube::Error::SerdeError(e),
            })?;
        let created = match nodes.create(&PostParams::default(), &object).await {
            Ok(n) => n,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                nodes
                    .get(&node.name)
                    .await
                    .map_err(|source| Error::Register {
                        node: node.name.clone(),
                        source,
                    })?
            }
            Err(source) => {
                return Err(Error::Register {
                    node: node.name.clone(),
                    source,
                });
            }
        };
        // The Lease before the heartbeats start, so it is made owned by the Node.
        self.inner
            .renew_lease(&node.name, created.metadata.uid.as_deref())
            .await;
        self.inner.lock().insert(
            node.name.clone(),
            NodeState {
                failed: false,
                status_posted: None,
            },
        );
        self.inner.post_status(&node.name).await;
        tracing::info!(node = %node.name, "simulated kubelet registered its node");
        Ok(())
    }

    /// Cuts the node off: no more Lease renewals, status or pod updates, as when its kubelet
    /// loses the network. The node controller marks it NotReady after its grace period.
    pub fn fail(&self, name: &str) -> Result<()> {
        let mut nodes = self.inner.lock();
        let state = nodes
            .get_mut(name)
            .ok_or_else(|| Error::Unknown(name.to_owned()))?;
        state.failed = true;
        tracing::info!(node = %name, "simulated kubelet cut off");
        Ok(())
    }

    /// Brings a failed node back: it posts Ready at the next heartbeat and renews its Lease.
    pub fn recover(&self, name: &str) -> Result<()> {
        let mut nodes = self.inner.lock();
        let state = nodes
            .get_mut(name)
            .ok_or_else(|| Error::Unknown(name.to_owned()))?;
        state.failed = false;
        state.status_posted = None;
        tracing::info!(node = %name, "simulated kubelet back");
        Ok(())
    }

    /// Whether `name` is run here and currently failed.
    pub fn is_failed(&self, name: &str) -> Option<bool> {
        self.inner.lock().get(name).map(|s| s.failed)
    }

    /// Names of the nodes run here.
    pub fn node_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Stops running `name` and deletes its Node and Lease.
    pub async fn remove_node(&self, name: &str) -> Result<()> {
        self.inner.lock().remove(name);
        let nodes: Api<Node> = Api::all(self.inner.client.clone());
        match nodes.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::Remove {
                    node: name.to_owned(),
                    source,
                });
            }
        }
        let leases: Api<Lease> = Api::namespaced(self.inner.client.clone(), LEASE_NAMESPACE);
        match leases.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(Error::Remove {
                node: name.to_owned(),
                source,
            }),
        }
    }

    /// Removes every node run here; the first error, after trying them all.
    pub async fn remove_all(&self) -> Result<()> {
        let mut first = None;
        for name in self.node_names() {
            if let Err(e) = self.remove_node(&name).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Stops the loops and waits for them.
    pub async fn stop(mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Kubelets {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeState>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client `node`'s kubelet writes with.
    fn as_node(&self, node: &str) -> Client {
        let Some(config) = &self.node_config else {
            return self.client.clone();
        };
        let mut clients = self.node_clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(node) {
            return c.clone();
        }
        let mut config = config.clone();
        config.auth_info.impersonate = Some(format!("system:node:{node}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:nodes".to_owned(),
            "system:authenticated".to_owned(),
        ]);
        match Client::try_from(config) {
            Ok(c) => {
                clients.insert(node.to_owned(), c.clone());
                c
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "failed to build the node's client; writing as the admin");
                self.client.clone()
            }
        }
    }

    /// Live nodes: run here, not failed, not stopped by the heartbeat annotation that
    /// `kube-sim node fail` sets.
    fn live(&self, node_store: &Store<Node>) -> Vec<(String, NodeState)> {
        let stopped: Vec<String> = node_store
            .state()
            .iter()
            .filter(|n| {
                n.annotations()
                    .get(HEARTBEAT_ANNOTATION)
                    .map(String::as_str)
                    == Some("stopped")
            })
            .map(|n| n.name_any())
            .collect();
        self.lock()
            .iter()
            .filter(|(name, s)| !s.failed && !stopped.contains(name))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    async fn run(
        self: Arc<Self>,
        node_store: Store<Node>,
        pod_store: Store<Pod>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.opts.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let live = self.live(&node_store);
            let this = &self;
            let store = &node_store;
            futures::stream::iter(live.iter())
                .for_each_concurrent(CONCURRENCY, |(name, state)| async move {
                    let cached = store.get(&reflector::ObjectRef::new(name));
                    let uid = cached.as_ref().and_then(|n| n.metadata.uid.clone());
                    this.renew_lease(name, uid.as_deref()).await;
                    let not_ready = cached.as_ref().is_some_and(|n| !node_ready(n));
                    let due = state
                        .status_posted
                        .is_none_or(|t| t.elapsed() >= this.opts.status_report);
                    if not_ready || due {
                        this.post_status(name).await;
                    }
                })
                .await;
            if self.opts.run_pods {
                self.sync_pods(&live, &node_store, &pod_store).await;
            }
        }
    }

    /// Creates or renews the node's Lease (owned by the Node, as a kubelet makes it).
    async fn renew_lease(&self, name: &str, node_uid: Option<&str>) {
        let leases: Api<Lease> = Api::namespaced(self.as_node(name), LEASE_NAMESPACE);
        let now = micro_time_now();
        let patch = json!({"spec": {"renewTime": now}});
        match leases
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::debug!(node = %name, error = %e, "failed to renew the node lease");
                return;
            }
        }
        let mut lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": self.opts.lease_duration_seconds,
                     "renewTime": now},
        });
        if let Some(uid) = node_uid {
            lease["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node",
                "name": name, "uid": uid}]);
        }
        let Ok(lease) = serde_json::from_value::<Lease>(lease) else {
            return;
        };
        if let Err(e) = leases.create(&PostParams::default(), &lease).await {
            tracing::debug!(node = %name, error = %e, "failed to create the node lease");
        }
    }

    /// Posts Ready (and no pressure) with a fresh heartbeat time, as a kubelet's status sync.
    async fn post_status(&self, name: &str) {
        let nodes: Api<Node> = Api::all(self.as_node(name));
        let Ok(node) = nodes.get(name).await else {
            return;
        };
        let Ok(mut value) = serde_json::to_value(&node) else {
            return;
        };
        set_node_conditions(&mut value, &micro_time_now_seconds());
        let Ok(body) = serde_json::from_value::<Node>(value) else {
            return;
        };
        match nodes
            .replace_status(name, &PostParams::default(), &body)
            .await
        {
            Ok(_) => {
                if let Some(s) = self.lock().get_mut(name) {
                    s.status_posted = Some(Instant::now());
                }
            }
            Err(e) => tracing::debug!(node = %name, error = %e, "failed to post node status"),
        }
    }

    /// Pods on live nodes: Pending or not Ready → Running and Ready; terminating → deleted.
    async fn sync_pods(
        &self,
        live: &[(String, NodeState)],
        nodes: &Store<Node>,
        pods: &Store<Pod>,
    ) {
        let live: HashMap<&str, Arc<Node>> = live
            .iter()
            .filter_map(|(n, _)| Some((n.as_str(), nodes.get(&reflector::ObjectRef::new(n))?)))
            .collect();
        let work: Vec<(Arc<Pod>, Arc<Node>)> = pods
            .state()
            .into_iter()
            .filter_map(|p| {
                let node = live.get(p.spec.as_ref()?.node_name.as_deref()?)?.clone();
                Some((p, node))
            })
            .collect();
        futures::stream::iter(work)
            .for_each_concurrent(CONCURRENCY, |(pod, node)| async move {
                self.sync_pod(&pod, &node).await;
            })
            .await;
    }

    async fn sync_pod(&self, pod: &Pod, node: &Node) {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let api: Api<Pod> = Api::namespaced(self.as_node(&node.name_any()), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            // The containers are gone at once: finish the deletion as the kubelet does.
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => tracing::info!(namespace = %ns, name = %name, "pod terminated"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    tracing::debug!(namespace = %ns, name = %name, error = %e, "failed to finish a pod's deletion")
                }
            }
            return;
        }
        if !node_ready(node) {
            return;
        }
        let (Ok(pod_value), Ok(node_value)) =
            (serde_json::to_value(pod), serde_json::to_value(node))
        else {
            return;
        };
        let phase = pod_value
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Pending");
        let needs = phase == "Pending"
            || (phase == "Running" && condition(&pod_value, "Ready") != Some("True"));
        if !needs {
            return;
        }
        let updated = running_status(&pod_value, &node_value);
        let Ok(body) = serde_json::from_value::<Pod>(updated) else {
            return;
        };
        match api
            .replace_status(&name, &PostParams::default(), &body)
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %ns, name = %name, node = %node.name_any(), "pod running and ready")
            }
            Err(e) => {
                tracing::debug!(namespace = %ns, name = %name, error = %e, "failed to post pod status")
            }
        }
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Sets the kubelet's four conditions on a Node object: Ready True, no pressure, heartbeat
/// `now`, transition time kept unless the status changes.
fn set_node_conditions(node: &mut Value, now: &str) {
    let wanted = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        (
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ];
    let old: Vec<Value> = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let conditions: Vec<Value> = wanted
        .iter()
        .map(|(kind, status, reason, message)| {
            let previous = old
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
            let transition = previous
                .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": transition})
        })
        .collect();
    node["status"]["conditions"] = json!(conditions);
}

/// `metav1.MicroTime` now, as kubelets write Lease renew times.
fn micro_time_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `metav1.Time` now (seconds).
fn micro_time_now_seconds() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests;
