//! kube-sim: a Kubernetes API simulator — a test double, not a Kubernetes.
//!
//! In: REST calls over HTTPS on loopback (kube-rs, kubectl, the Ballast services), authenticated
//! by bearer tokens. Out: JSON objects, watch streams, `metav1.Status` errors, and AdmissionReview
//! calls to the webhooks registered in it. It keeps everything in memory with one global
//! resourceVersion, and can simulate a scheduler, kubelets, node heartbeats with the node
//! lifecycle controller, taint-based eviction and a PV binder (see [`controllers`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_sim::Error> {
//! let sim = kube_sim::KubeSim::start(kube_sim::SimConfig::default().nodes(3).scheduler(true).kubelet(true)).await?;
//! let client = sim.client();
//! sim.fail_node("node-1");
//! # sim.shutdown().await; Ok(()) }
//! ```
//!
//! Known simplifications (on top of those listed in [`admission`] and [`patch`]): pods are deleted
//! at once (no kubelet-confirmed graceful termination); PodDisruptionBudgets are not evaluated
//! for evictions; list `continue`
//! tokens are positions, not snapshots; protection finalizers (pvc-protection) are added only
//! while the PV controller runs.
//! Custom resources are pruned, defaulted and validated by their structural schemas and converted
//! between versions ([`schema`], [`crd`]), with the gaps listed there.

pub mod admission;
pub mod apiserver;
pub mod auth;
pub mod control_plane;
pub mod controllers;
pub mod crd;
pub mod defaults;
pub mod discovery;
pub mod errors;
pub mod events;
pub mod kubeconfig;
pub mod kubelets;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod settings;
pub mod store;
pub mod table;
pub mod validation;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::apiserver::{ApiRequest, Settings, Sim, Verb};
use crate::auth::UserInfo;
use crate::controllers::NodeTimings;

pub use crate::controllers::HEARTBEAT_ANNOTATION;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to generate the simulator's certificates")]
    Certs(#[source] ballast_runtime::Error),
    #[error("failed to load the simulator's certificates")]
    Tls(#[source] ballast_runtime::Error),
    #[error("failed to bind 127.0.0.1:{port}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build a client for the simulator")]
    Client(#[source] kube::Error),
    #[error("failed to load the simulator's kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("failed to create the simulator's initial objects: {0}")]
    Seed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to simulate. The default: no nodes, every simulated behaviour off, a random port.
#[derive(Debug, Clone)]
pub struct SimConfig {
    nodes: usize,
    control_plane_node: bool,
    scheduler: bool,
    kubelet: bool,
    taint_eviction: bool,
    pv_binder: bool,
    port: u16,
    kubeconfig_path: Option<PathBuf>,
    node_grace: Duration,
    default_toleration_seconds: u64,
    eviction_retry: Duration,
    taint_interval: Duration,
    bookmark_interval: Duration,
    watch_history: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 0,
            control_plane_node: false,
            scheduler: false,
            kubelet: false,
            taint_eviction: false,
            pv_binder: false,
            port: 0,
            kubeconfig_path: None,
            node_grace: Duration::from_secs(1),
            default_toleration_seconds: 2,
            eviction_retry: Duration::from_millis(10),
            taint_interval: Duration::from_millis(100),
            bookmark_interval: Duration::from_secs(5),
            watch_history: store::DEFAULT_HISTORY,
        }
    }
}

impl SimConfig {
    /// Worker nodes `node-1`..`node-n`, Ready, labelled with zones `zone-a`..`zone-c` in turn.
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }
    /// Also a `control-plane` node, tainted NoSchedule.
    pub fn control_plane_node(mut self, yes: bool) -> Self {
        self.control_plane_node = yes;
        self
    }
    /// Bind pending pods to Ready nodes.
    pub fn scheduler(mut self, on: bool) -> Self {
        self.scheduler = on;
        self
    }
    /// Mark pods on Ready nodes Running and Ready.
    pub fn kubelet(mut self, on: bool) -> Self {
        self.kubelet = on;
        self
    }
    /// Run the taint eviction controller: pods on nodes with NoExecute taints are deleted once
    /// their toleration expires; five refused attempts and it leaves a pod alone until the
    /// node's NoExecute taints change, as in Kubernetes.
    pub fn taint_eviction(mut self, on: bool) -> Self {
        self.taint_eviction = on;
        self
    }
    /// Run the PV controller (Available PVs, binding of pre-bound and matching PVs).
    pub fn pv_binder(mut self, on: bool) -> Self {
        self.pv_binder = on;
        self
    }
    /// Listen on this port (0: any free port).
    pub fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    /// Write the kubeconfig here (default: a file in a temporary directory).
    pub fn kubeconfig_path(mut self, p: PathBuf) -> Self {
        self.kubeconfig_path = Some(p);
        self
    }
    /// How long after heartbeats stop a node goes Ready=Unknown (default 1s; 40s in Kubernetes).
    pub fn node_grace(mut self, d: Duration) -> Self {
        self.node_grace = d;
        self
    }
    /// tolerationSeconds of the default unreachable/not-ready tolerations (default 2; 300 in
    /// Kubernetes). Explicit tolerations on a pod are kept.
    pub fn default_toleration_seconds(mut self, s: u64) -> Self {
        self.default_toleration_seconds = s;
        self
    }
    /// Pause between the taint eviction controller's five attempts on a pod (default 10ms, as
    /// in Kubernetes).
    pub fn eviction_retry(mut self, d: Duration) -> Self {
        self.eviction_retry = d;
        self
    }
    /// Pause between two nodes the node lifecycle controller taints in one zone (default 100ms;
    /// 10s in Kubernetes, `--node-eviction-rate` 0.1).
    pub fn taint_interval(mut self, d: Duration) -> Self {
        self.taint_interval = d;
        self
    }
    /// How many past events of each resource type watches can resume from before getting 410
    /// Gone (default 102400, the API server's watch cache bound).
    pub fn watch_history(mut self, events: usize) -> Self {
        self.watch_history = events;
        self
    }
    /// How often watches asking for bookmarks get one (default 5s).
    pub fn bookmark_interval(mut self, d: Duration) -> Self {
        self.bookmark_interval = d;
        self
    }

    /// The number of worker nodes asked for.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Whether pods on Ready nodes are run.
    pub fn runs_pods(&self) -> bool {
        self.kubelet
    }

    /// How long after heartbeats stop a node goes Ready=Unknown.
    pub fn grace(&self) -> Duration {
        self.node_grace
    }

    /// The pause between two nodes tainted in one zone.
    pub fn taint_pause(&self) -> Duration {
        self.taint_interval
    }

    /// tolerationSeconds of the default unreachable/not-ready tolerations.
    pub fn toleration_seconds(&self) -> u64 {
        self.default_toleration_seconds
    }
}

/// A running simulator. Dropping it stops it; [`KubeSim::shutdown`] also waits for the server.
pub struct KubeSim {
    sim: Arc<Sim>,
    addr: SocketAddr,
    ca_pem: String,
    kubeconfig_path: PathBuf,
    client: kube::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub(crate) fn random_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..32)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

pub(crate) async fn client_for(kubeconfig_yaml: &str) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml).map_err(Error::Kubeconfig)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(Error::Kubeconfig)?;
    // Tests assert on 429 answers (webhook denials of evictions); kube's default retry of 429s
    // (15 attempts, exponential backoff) would hide them for minutes.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(Error::Client)
}

impl KubeSim {
    /// Starts the simulator on 127.0.0.1 and writes its kubeconfig.
    pub async fn start(cfg: SimConfig) -> Result<KubeSim> {
        ballast_runtime::tls::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix("kube-sim-")
            .tempdir()
            .map_err(|source| Error::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        let certs = ballast_runtime::tls::generate(&["localhost", "127.0.0.1", "::1"])
            .map_err(Error::Certs)?;
        let (cert, key) = certs.write_to(dir.path()).map_err(Error::Certs)?;
        let tls = ballast_runtime::tls::ReloadingTls::load(&cert, &key).map_err(Error::Tls)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", cfg.port))
            .await
            .map_err(|source| Error::Bind {
                port: cfg.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            port: cfg.port,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let settings = Settings {
            default_toleration_seconds: cfg.default_toleration_seconds,
            bookmark_interval: cfg.bookmark_interval,
            pv_binder: cfg.pv_binder,
        };
        let sim = Arc::new(Sim::new(
            settings,
            shutdown.clone(),
            cfg.watch_history,
            controllers::DELETION_HOOKS,
        ));
        let admin_token = random_token();
        sim.auth.add_token(&admin_token, UserInfo::admin());
        seed(&sim, &cfg).await?;

        let router = server::router(sim.clone());
        let token = shutdown.clone();
        let server = tokio::spawn(async move {
            if let Err(e) = ballast_runtime::http::serve(listener, router, Some(tls), token).await {
                tracing::error!(error = %e, "kube-sim server stopped");
            }
        });
        controllers::spawn_node_lifecycle(
            sim.clone(),
            NodeTimings {
                grace: cfg.node_grace,
                eviction_retry: cfg.eviction_retry,
                taint_interval: cfg.taint_interval,
            },
            cfg.taint_eviction,
        );
        if cfg.scheduler {
            controllers::spawn_scheduler(sim.clone());
        }
        if cfg.kubelet {
            controllers::spawn_kubelets(sim.clone());
        }
        if cfg.pv_binder {
            controllers::spawn_pv_binder(sim.clone());
        }

        let url = format!("https://{addr}");
        let yaml = kubeconfig::render(&url, &certs.ca_pem, "kube-sim-admin", &admin_token);
        let kubeconfig_path = cfg
            .kubeconfig_path
            .clone()
            .unwrap_or_else(|| dir.path().join("kubeconfig"));
        if let Some(parent) = kubeconfig_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(&kubeconfig_path, &yaml).map_err(|source| Error::Write {
            path: kubeconfig_path.clone(),
            source,
        })?;
        let client = client_for(&yaml).await?;
        tracing::info!(url = %url, kubeconfig = %kubeconfig_path.display(), nodes = cfg.nodes, "kube-sim started");
        Ok(KubeSim {
            sim,
            addr,
            ca_pem: certs.ca_pem,
            kubeconfig_path,
            client,
            shutdown,
            server: Some(server),
            _dir: dir,
        })
    }

    /// A client acting as the cluster admin (`system:masters`). Like every client this crate
    /// builds, it does not retry 429/503/504 answers (kube's `default_retry` is off), so tests see
    /// them; services built from the kubeconfig keep kube's default.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A client acting as `username` in `groups` (a token is registered for it). Unless the
    /// identity is in a built-in privileged group, grant it access with [`KubeSim::allow`].
    pub async fn client_as(&self, username: &str, groups: &[&str]) -> kube::Client {
        let token = random_token();
        self.add_token(&token, username, groups);
        let yaml = kubeconfig::render(&self.url(), &self.ca_pem, username, &token);
        match client_for(&yaml).await {
            Ok(c) => c,
            Err(e) => panic!("failed to build a kube-sim client for {username}: {e}"),
        }
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The CA that signed the simulator's serving certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Stops a node's heartbeats: after the grace it goes Ready=Unknown and gets tainted.
    pub fn fail_node(&self, name: &str) {
        tracing::info!(node = %name, "heartbeats stopped");
        self.sim
            .failed_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
    }

    /// Makes every watch unresumable from before now, as etcd compacted behind a restarted API
    /// server does: open watches go on; a client whose watch broke gets `410 Gone` on resuming
    /// and must list again. Returns the resourceVersion from which watches resume.
    pub fn expire_watches(&self) -> u64 {
        let rv = self.sim.store.compact();
        tracing::info!(resource_version = rv, "watch history compacted");
        rv
    }

    /// Resumes a node's heartbeats: it goes Ready again and its taints are removed.
    pub fn restore_node(&self, name: &str) {
        tracing::info!(node = %name, "heartbeats resumed");
        self.sim
            .failed_nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Makes TokenReviews (and the simulator itself) accept `token` as this identity.
    pub fn add_token(&self, token: &str, username: &str, groups: &[&str]) {
        self.sim
            .auth
            .add_token(token, UserInfo::new(username, groups));
    }

    /// Grants `subject` (user or group) `verb` on `group`/`resource` ("*" wildcards;
    /// "pods/eviction" for a subresource), for SubjectAccessReviews and the simulator's own
    /// authorization. `system:masters`, kube-system service accounts and nodes may do anything.
    pub fn allow(&self, subject: &str, verb: &str, group: &str, resource: &str) {
        self.sim.auth.allow(subject, verb, group, resource);
    }

    /// Stops serving and every simulated controller.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Namespaces every cluster has, and the simulated nodes.
async fn seed(sim: &Arc<Sim>, cfg: &SimConfig) -> Result<()> {
    let admin = UserInfo::admin();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let req = ApiRequest::new(Verb::Create, "v1", "namespaces", admin.clone())
            .body(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        sim.call(req)
            .await
            .map_err(|e| Error::Seed(e.to_string()))?;
    }
    let mut nodes: Vec<serde_json::Value> = (1..=cfg.nodes)
        .map(|i| controllers::node_object(&format!("node-{i}"), i - 1, false))
        .collect();
    if cfg.control_plane_node {
        nodes.push(controllers::node_object("control-plane", cfg.nodes, true));
    }
    for node in nodes {
        let req = ApiRequest::new(Verb::Create, "v1", "nodes", admin.clone()).body(&node);
        sim.call(req)
            .await
            .map_err(|e| Error::Seed(e.to_string()))?;
    }
    Ok(())
}
