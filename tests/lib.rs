//! End-to-end harness: a [`TestEnv`] per scenario, on one of two backends, written once:
//!
//! - **kube-sim** (default): a simulator started in-process for the scenario, with its own
//!   simulated scheduler, kubelets and controllers ([`SimConfig`]).
//! - **a real cluster** (`E2E_KUBECONFIG`): the control plane `kube-sim control-plane` starts
//!   from Kubernetes binaries (`scripts/test` does when `E2E_K8S_BINARIES` names them), or any
//!   cluster. The scenario gets a fresh namespace, and the nodes its [`SimConfig`] asks for are
//!   simulated kubelets ([`kube_sim::kubelets`]) registered for it alone, named after the
//!   namespace (`e2e-x7k2pq-node-1`, zones `e2e-x7k2pq-zone-a`..`c`); the real scheduler,
//!   controller manager and API server do the rest.
//!
//! What differs between backends lives here, not in the scenarios: node names ([`TestEnv::node`]),
//! failing a node ([`TestEnv::fail_node`]), identities ([`TestEnv::client_as`],
//! [`TestEnv::allow`]), timings ([`TestEnv::node_grace`]), and cleanup. On a real cluster a
//! scenario touches only what it made: cluster-scoped objects carry the namespace's name in
//! theirs and webhooks select only its namespace ([`TestEnv::namespace_selector`]); at the end
//! (passed, failed or panicked) [`harness::cleanup`] removes the namespace, those objects and the
//! nodes, and [`TestEnv::shutdown`] fails the scenario if anything is left.
//!
//! Tests in one file run in parallel; every scenario has its own namespace, nodes and ports.
//! Webhooks served in-process listen where [`TestEnv::webhook_host_or_skip`] says: loopback on
//! kube-sim; on a real cluster the address named by `E2E_WEBHOOK_HOST` (one the API server can
//! reach), or the scenario skips with a message when it is unset.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_sim::kubelets::{KubeletOptions, Kubelets, NodeSpec};
use serde_json::json;

pub use kube_sim::{KubeSim, SimConfig};

pub mod harness {
    //! The parts of the harness scenarios may call directly.
    #[path = "cleanup.rs"]
    pub mod cleanup;
    #[path = "crd.rs"]
    pub mod crd;
    #[path = "lock.rs"]
    pub mod lock;
    #[path = "proxy.rs"]
    pub mod proxy;
}

/// Environment variable naming a real cluster's kubeconfig; unset means kube-sim.
pub const E2E_KUBECONFIG: &str = "E2E_KUBECONFIG";
/// Environment variable naming the address (IP or DNS name of this host) a real cluster's API
/// server calls to reach webhooks the scenarios serve in-process, e.g. `127.0.0.1` when the API
/// server runs on this machine. Ignored on kube-sim, which always calls loopback.
pub const E2E_WEBHOOK_HOST: &str = "E2E_WEBHOOK_HOST";
/// Set to `control-plane` by `kube-sim control-plane`: the cluster is the suite's own (no other
/// workloads), so simulated nodes need no taint and namespaces pin their pods to their nodes.
pub const E2E_BACKEND: &str = "E2E_BACKEND";
/// The cluster's node grace (`--node-monitor-grace-period` plus its monitor period), e.g. `7s`;
/// unset: Kubernetes' default of 50s plus 5s.
pub const E2E_NODE_GRACE: &str = "E2E_NODE_GRACE";
/// The node lifecycle controller's `--node-eviction-rate` (nodes/s); unset: 0.1.
pub const E2E_NODE_EVICTION_RATE: &str = "E2E_NODE_EVICTION_RATE";
/// The API server's default not-ready/unreachable tolerationSeconds; unset: 300.
pub const E2E_DEFAULT_TOLERATION_SECONDS: &str = "E2E_DEFAULT_TOLERATION_SECONDS";
/// A file each skip is appended to (`backend<TAB>scenario<TAB>reason`), for the run's summary.
pub const E2E_SKIP_LOG: &str = "E2E_SKIP_LOG";
/// Label on every node and namespace of a scenario: the namespace's name.
pub const SCENARIO_LABEL: &str = "ballast.dev/e2e-namespace";
/// Poll period of [`wait_for`]: short, the simulator reacts in about 100ms.
const POLL: Duration = Duration::from_millis(50);
/// How often simulated kubelets of a real cluster renew their Leases: the node grace of the
/// suite's control plane is 6s.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Name of the probe webhook a scenario adds to the webhook configurations it registers
/// ([`TestEnv::webhook_probe`]).
pub const WEBHOOK_PROBE: &str = "probe.e2e.ballast.dev";
/// Label of the dry-run ConfigMaps that probe whether a webhook configuration is in effect.
pub const WEBHOOK_PROBE_LABEL: &str = "e2e.ballast.dev/webhook-probe";
/// Longest wait for the API server to put a webhook configuration in effect (or out of it).
const WEBHOOK_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The only scenarios that may skip on a real cluster, each because it tests kube-sim itself
/// (the simulator's internals, not API behaviour), with the reason.
pub const SIM_ONLY: &[(&str, &str)] = &[
    (
        "watch_from_a_compacted_version_is_410_gone",
        "expires a watch by shrinking kube-sim's watch history; a real API server's watch cache \
         keeps at least 75s of events (up to 102 400) and serves older versions from etcd",
    ),
    (
        "a_burst_of_another_kind_does_not_expire_a_watch",
        "its last step expires a watch of the burst's own kind by shrinking kube-sim's watch \
         history, which a real API server's watch cache cannot be made to do",
    ),
];

/// One scenario's cluster and namespace.
pub struct TestEnv {
    /// Admin client for the cluster.
    pub client: Client,
    /// A namespace created for this scenario (`e2e-xxxxxx`).
    pub namespace: String,
    /// Kubeconfig of the cluster (for kubectl and services started in-process).
    pub kubeconfig: PathBuf,
    /// The simulator, unless running against a real cluster.
    pub sim: Option<KubeSim>,
    real: Option<Real>,
    nodes: Vec<String>,
    cfg: SimConfig,
    grants: AtomicUsize,
    cleaned: bool,
}

/// A real cluster's part of a [`TestEnv`].
struct Real {
    kubelets: Option<Kubelets>,
    /// The suite's own control plane (`E2E_BACKEND=control-plane`), or one of the scenario's.
    owned: bool,
    /// The scenario's own control plane ([`TestEnv::start_private`]).
    private: Option<kube_sim::control_plane::ControlPlane>,
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rng.random_range(0..27)]))
        .collect()
}

/// The client configuration of the kubeconfig at `path`.
async fn config_from(path: &Path) -> kube::Config {
    let kc = kube::config::Kubeconfig::read_from(path)
        .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("failed to load {}: {e}", path.display()))
}

/// A client from `path`; like kube-sim's clients, it does not retry 429s (tests assert on them).
pub(crate) async fn client_from(path: &Path, impersonate: Option<(&str, &[&str])>) -> Client {
    let mut config = config_from(path).await;
    config.default_retry = false;
    if let Some((user, groups)) = impersonate {
        config.auth_info.impersonate = Some(user.to_owned());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_owned()).collect());
    }
    Client::try_from(config)
        .unwrap_or_else(|e| panic!("failed to build a client for {}: {e}", path.display()))
}

fn zone_letter(i: usize) -> char {
    char::from(b'a' + (i % 3) as u8)
}

impl TestEnv {
    /// Starts kube-sim with `cfg` — or, with `E2E_KUBECONFIG`, registers `cfg`'s nodes as
    /// simulated kubelets of that cluster — and creates a fresh namespace. Panics with the
    /// reason when the environment cannot be set up.
    pub async fn start(cfg: SimConfig) -> TestEnv {
        let namespace = format!("e2e-{}", random_suffix());
        let mut labels = serde_json::Map::new();
        labels.insert("ballast.dev/e2e".into(), json!("true"));
        labels.insert(SCENARIO_LABEL.into(), json!(namespace));
        let mut env = match std::env::var_os(E2E_KUBECONFIG) {
            Some(path) => {
                let path = PathBuf::from(path);
                let client = client_from(&path, None).await;
                let owned = std::env::var(E2E_BACKEND).is_ok_and(|b| b == "control-plane");
                TestEnv {
                    client,
                    namespace: namespace.clone(),
                    kubeconfig: path,
                    sim: None,
                    real: Some(Real {
                        kubelets: None,
                        owned,
                        private: None,
                    }),
                    nodes: Vec::new(),
                    cfg: cfg.clone(),
                    grants: AtomicUsize::new(0),
                    cleaned: false,
                }
            }
            None => {
                let sim = KubeSim::start(cfg.clone())
                    .await
                    .unwrap_or_else(|e| panic!("failed to start kube-sim: {e}"));
                TestEnv {
                    client: sim.client(),
                    namespace: namespace.clone(),
                    kubeconfig: sim.kubeconfig_path().to_path_buf(),
                    sim: Some(sim),
                    real: None,
                    nodes: Vec::new(),
                    cfg: cfg.clone(),
                    grants: AtomicUsize::new(0),
                    cleaned: false,
                }
            }
        };
        env.prepare(labels).await;
        env
    }

    /// A scenario with a control plane of its own — etcd, kube-apiserver,
    /// kube-controller-manager and kube-scheduler from `E2E_K8S_BINARIES` — for the fault
    /// scenarios, which stop, stall and restart its components ([`TestEnv::control_plane`]);
    /// `None` after recording the skip when no binaries are given (kube-sim cannot do that).
    pub async fn start_private(cfg: SimConfig) -> Option<TestEnv> {
        let Some(config) = kube_sim::control_plane::ControlPlaneConfig::from_env() else {
            let backend = match std::env::var(E2E_BACKEND) {
                Ok(b) if b == "control-plane" => "control-plane",
                _ if std::env::var_os(E2E_KUBECONFIG).is_some() => "cluster",
                _ => "kube-sim",
            };
            record_skip(
                backend,
                "needs a control plane of its own to stop and restart (set E2E_K8S_BINARIES)",
            );
            return None;
        };
        let cp = kube_sim::control_plane::ControlPlane::start(config)
            .await
            .unwrap_or_else(|e| panic!("failed to start a control plane: {e}"));
        let namespace = format!("e2e-{}", random_suffix());
        let mut labels = serde_json::Map::new();
        labels.insert("ballast.dev/e2e".into(), json!("true"));
        labels.insert(SCENARIO_LABEL.into(), json!(namespace));
        let mut env = TestEnv {
            client: cp.client(),
            namespace,
            kubeconfig: cp.kubeconfig_path().to_path_buf(),
            sim: None,
            real: Some(Real {
                kubelets: None,
                owned: true,
                private: Some(cp),
            }),
            nodes: Vec::new(),
            cfg,
            grants: AtomicUsize::new(0),
            cleaned: false,
        };
        env.prepare(labels).await;
        Some(env)
    }

    /// The scenario's own control plane (see [`TestEnv::start_private`]).
    pub fn control_plane(&mut self) -> Option<&mut kube_sim::control_plane::ControlPlane> {
        self.real.as_mut().and_then(|r| r.private.as_mut())
    }

    /// [`TestEnv::control_plane`] to look at or signal (SIGSTOP/SIGCONT) while the scenario
    /// goes on using the cluster.
    pub fn control_plane_ref(&self) -> Option<&kube_sim::control_plane::ControlPlane> {
        self.real.as_ref().and_then(|r| r.private.as_ref())
    }

    /// A scenario with a cluster of its own: kube-sim, or on a real backend a control plane of
    /// its own ([`TestEnv::start_private`]; `None` after recording the skip without binaries) —
    /// for faults that hit the whole cluster ([`TestEnv::expire_watches`]) and for counting in
    /// the control plane's own logs.
    pub async fn start_isolated(cfg: SimConfig) -> Option<TestEnv> {
        if std::env::var_os(E2E_KUBECONFIG).is_none() {
            return Some(TestEnv::start(cfg).await);
        }
        TestEnv::start_private(cfg).await
    }

    /// Makes every watch of the cluster unresumable, as a long outage does: etcd compacted to
    /// its current revision and the API server restarted, so its watch cache begins there and a
    /// watch resumed from an older resourceVersion is answered `410 Expired` (the client must
    /// list again); on kube-sim, its watch history dropped. Returns the revision watches may
    /// resume from. Needs [`TestEnv::start_isolated`].
    pub async fn expire_watches(&mut self) -> i64 {
        use kube_sim::control_plane::Component;
        if let Some(sim) = &self.sim {
            return i64::try_from(sim.expire_watches()).expect("a resourceVersion fits i64");
        }
        let cp = self.control_plane().expect("a control plane of its own");
        let etcd = cp.etcd_url();
        let http = reqwest::Client::new();
        // etcd's JSON gateway: any range read answers with the store's current revision
        let range: serde_json::Value = http
            .post(format!("{etcd}/v3/kv/range"))
            .json(&json!({"key": "AA==", "limit": 1}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("etcd answers a range read")
            .json()
            .await
            .expect("etcd's range answer is JSON");
        let revision: i64 = range["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in etcd's answer {range}"));
        http.post(format!("{etcd}/v3/kv/compaction"))
            .json(&json!({"revision": revision.to_string(), "physical": true}))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .expect("etcd compacts");
        cp.kill(Component::ApiServer);
        cp.start_component(Component::ApiServer)
            .await
            .unwrap_or_else(|e| panic!("the API server did not come back: {e}"));
        revision
    }

    /// Creates the scenario's namespace and starts its nodes.
    async fn prepare(&mut self, labels: serde_json::Map<String, serde_json::Value>) {
        let env = self;
        let namespace = env.namespace.clone();
        let mut annotations = serde_json::Map::new();
        if env.real.as_ref().is_some_and(|r| r.owned) {
            // The suite's control plane runs the PodNodeSelector admission plugin: pods the
            // scheduler places go to this scenario's nodes only.
            annotations.insert(
                "scheduler.alpha.kubernetes.io/node-selector".into(),
                json!(format!("{SCENARIO_LABEL}={namespace}")),
            );
        }
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": namespace, "labels": labels, "annotations": annotations}
        }))
        .expect("a namespace");
        Api::<Namespace>::all(env.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("failed to create namespace {namespace}: {e}"));
        env.start_nodes().await;
    }

    /// The scenario's nodes: the simulator's, labelled; or simulated kubelets on a real cluster.
    async fn start_nodes(&mut self) {
        let count = self.cfg.node_count();
        let ns = self.namespace.clone();
        let nodes: Api<Node> = Api::all(self.client.clone());
        match &mut self.real {
            None => {
                let patch = json!({"metadata": {"labels": {SCENARIO_LABEL: ns}}});
                for i in 1..=count {
                    let name = format!("node-{i}");
                    nodes
                        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .unwrap_or_else(|e| panic!("failed to label {name}: {e}"));
                    self.nodes.push(name);
                }
            }
            Some(real) if count > 0 => {
                let opts = KubeletOptions {
                    heartbeat: HEARTBEAT,
                    run_pods: self.cfg.runs_pods(),
                    ..KubeletOptions::default()
                };
                // Each node's kubelet writes as the node (system:node:NAME), as a real one does.
                let kubelets = Kubelets::start_as_nodes(config_from(&self.kubeconfig).await, opts)
                    .unwrap_or_else(|e| panic!("failed to start the simulated kubelets: {e}"));
                for i in 1..=count {
                    let name = format!("{ns}-node-{i}");
                    let mut spec =
                        NodeSpec::worker(&name, &format!("{ns}-zone-{}", zone_letter(i - 1)))
                            .label(SCENARIO_LABEL, &ns);
                    if !real.owned {
                        // Another cluster's workloads must not land on a node that goes away.
                        spec.taints.push(
                            json!({"key": SCENARIO_LABEL, "value": ns, "effect": "NoSchedule"}),
                        );
                    }
                    kubelets
                        .add_node(&spec)
                        .await
                        .unwrap_or_else(|e| panic!("failed to register node {name}: {e}"));
                    self.nodes.push(name);
                }
                real.kubelets = Some(kubelets);
                let names = self.nodes.clone();
                wait_for(
                    "the scenario's nodes to be Ready",
                    Duration::from_secs(30),
                    || {
                        let nodes = nodes.clone();
                        let names = names.clone();
                        async move {
                            for n in &names {
                                let node = nodes.get(n).await.ok()?;
                                let ready = node
                                    .status?
                                    .conditions?
                                    .iter()
                                    .any(|c| c.type_ == "Ready" && c.status == "True");
                                if !ready {
                                    return None;
                                }
                            }
                            Some(())
                        }
                    },
                )
                .await;
            }
            Some(_) => {}
        }
    }

    /// Whether this runs on kube-sim.
    pub fn on_sim(&self) -> bool {
        self.sim.is_some()
    }

    /// The backend's name for messages and the skip log: `kube-sim`, `control-plane` (the
    /// suite's own) or `cluster`.
    pub fn backend(&self) -> &'static str {
        match &self.real {
            None => "kube-sim",
            Some(r) if r.owned => "control-plane",
            Some(_) => "cluster",
        }
    }

    /// The name of worker node `i` (1-based) of this scenario.
    pub fn node(&self, i: usize) -> String {
        self.nodes
            .get(i.wrapping_sub(1))
            .cloned()
            .unwrap_or_else(|| panic!("the scenario has {} nodes, not {i}", self.nodes.len()))
    }

    /// Every node of this scenario.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The zone of node `i` (1-based): three zones in turn, as kube-sim lays them out.
    pub fn zone(&self, i: usize) -> String {
        let letter = zone_letter(i.wrapping_sub(1));
        match self.real {
            None => format!("zone-{letter}"),
            Some(_) => format!("{}-zone-{letter}", self.namespace),
        }
    }

    /// A label selector matching exactly this scenario's nodes (for a service's worker
    /// selector on a cluster other scenarios share).
    pub fn node_selector(&self) -> String {
        format!("{SCENARIO_LABEL}={}", self.namespace)
    }

    /// A namespace selector matching only this scenario's namespace, for the webhook
    /// configurations it registers.
    pub fn namespace_selector(&self) -> LabelSelector {
        serde_json::from_value(
            json!({"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}),
        )
        .expect("a selector")
    }

    /// `config` (a Validating- or MutatingWebhookConfiguration) with every webhook narrowed to
    /// this scenario's namespace, so it reviews nothing of other scenarios on a shared cluster.
    pub fn scoped<T>(&self, config: T) -> T
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        scoped_to(config, &self.namespace)
    }

    /// A webhook to add to a Mutating- or ValidatingWebhookConfiguration the scenario registers,
    /// to tell when the API server has it in effect: a real one calls the webhooks of a
    /// configuration created, changed or deleted a moment after it is stored (its informer),
    /// kube-sim at once. The probe reviews only creates of this namespace's ConfigMaps labelled
    /// [`WEBHOOK_PROBE_LABEL`]`=token` (`token` tells the scenario's configurations apart), and
    /// fails closed calling an address where nothing listens: the scenario's own webhooks never
    /// see a probe. See [`TestEnv::wait_for_webhook_probe`].
    pub fn webhook_probe(&self, token: &str) -> serde_json::Value {
        json!({
            "name": WEBHOOK_PROBE,
            "clientConfig": {"url": "https://127.0.0.1:1/webhook-probe"},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}},
            "objectSelector": {"matchLabels": {WEBHOOK_PROBE_LABEL: token}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["configmaps"]}],
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": "Fail",
            "timeoutSeconds": 1,
        })
    }

    /// Whether the API server has the configuration holding [`TestEnv::webhook_probe`]`(token)`
    /// in effect: a dry-run create (nothing is stored) of a ConfigMap labelled `token` is
    /// refused for the probe's failed call. `None` when the answer tells neither.
    pub async fn webhook_probe_in_effect(&self, token: &str) -> Option<bool> {
        let probe: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "webhook-probe", "labels": {WEBHOOK_PROBE_LABEL: token}}
        }))
        .expect("a ConfigMap");
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let failed_call = format!("failed calling webhook \"{WEBHOOK_PROBE}\"");
        match self.api::<ConfigMap>().create(&dry_run, &probe).await {
            Ok(_) => Some(false),
            Err(kube::Error::Api(s)) if s.code == 500 && s.message.contains(&failed_call) => {
                Some(true)
            }
            Err(kube::Error::Api(s)) => panic!(
                "a dry-run create of webhook probe {token} was refused by something else: {} {}",
                s.code, s.message
            ),
            Err(_) => None,
        }
    }

    /// Waits until the API server has the configuration holding
    /// [`TestEnv::webhook_probe`]`(token)` in effect (`in_effect`), or no longer (after its
    /// deletion).
    pub async fn wait_for_webhook_probe(&self, token: &str, in_effect: bool) {
        let what = if in_effect {
            format!("the API server to call the webhooks of the configuration probed by {token}")
        } else {
            format!("the API server to stop calling the webhooks probed by {token}")
        };
        wait_for(&what, WEBHOOK_PROBE_TIMEOUT, || async {
            (self.webhook_probe_in_effect(token).await? == in_effect).then_some(())
        })
        .await
    }

    /// Cuts node `name` off: its heartbeats stop, so the node controller marks it NotReady after
    /// [`TestEnv::node_grace`] and taints it.
    pub fn fail_node(&self, name: &str) {
        match (&self.sim, &self.real) {
            (Some(sim), _) => sim.fail_node(name),
            (
                None,
                Some(Real {
                    kubelets: Some(k), ..
                }),
            ) => k
                .fail(name)
                .unwrap_or_else(|e| panic!("failed to fail {name}: {e}")),
            _ => panic!("node {name} is not one of the scenario's"),
        }
    }

    /// Brings node `name` back: heartbeats resume, it goes Ready and its taints are removed.
    pub fn restore_node(&self, name: &str) {
        match (&self.sim, &self.real) {
            (Some(sim), _) => sim.restore_node(name),
            (
                None,
                Some(Real {
                    kubelets: Some(k), ..
                }),
            ) => k
                .recover(name)
                .unwrap_or_else(|e| panic!("failed to restore {name}: {e}")),
            _ => panic!("node {name} is not one of the scenario's"),
        }
    }

    /// How long after its heartbeats stop a node goes NotReady here, at most.
    pub fn node_grace(&self) -> Duration {
        match &self.real {
            None => self.cfg.grace() + kube_sim::controllers::TICK,
            Some(Real {
                private: Some(cp), ..
            }) => cp.config().node_monitor_grace + cp.config().node_monitor_period,
            Some(_) => std::env::var(E2E_NODE_GRACE)
                .ok()
                .and_then(|v| humantime::parse_duration(&v).ok())
                .unwrap_or(Duration::from_secs(55)),
        }
    }

    /// The node lifecycle controller's pause between two nodes it taints in one healthy zone
    /// (10s in Kubernetes, its `--node-eviction-rate` of 0.1 node/s).
    pub fn taint_interval(&self) -> Duration {
        match self.real {
            None => self.cfg.taint_pause(),
            Some(_) => std::env::var(E2E_NODE_EVICTION_RATE)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|r| *r > 0.0)
                .map_or(Duration::from_secs(10), |r| {
                    Duration::from_secs_f64(1.0 / r)
                }),
        }
    }

    /// tolerationSeconds the API server gives pods for the not-ready/unreachable taints.
    pub fn default_toleration_seconds(&self) -> u64 {
        match &self.real {
            None => self.cfg.toleration_seconds(),
            Some(Real {
                private: Some(cp), ..
            }) => cp.config().default_toleration_seconds,
            Some(_) => std::env::var(E2E_DEFAULT_TOLERATION_SECONDS)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(300),
        }
    }

    /// Prints why `step` is skipped here and records it in the skip log.
    pub fn skip(&self, step: &str) {
        record_skip(self.backend(), step);
    }

    /// The simulator, for a scenario that tests kube-sim itself and is listed in [`SIM_ONLY`];
    /// `None` after recording the skip on a real cluster. Panics for an unlisted scenario.
    pub fn sim_only(&self) -> Option<&KubeSim> {
        if self.sim.is_none() {
            let scenario = scenario_name();
            let Some((_, reason)) = SIM_ONLY.iter().find(|(s, _)| scenario.ends_with(s)) else {
                panic!("{scenario} asks for the simulator but is not in SIM_ONLY");
            };
            self.skip(reason);
        }
        self.sim.as_ref()
    }

    /// Where to serve a webhook the API server must call, or `None` after recording why `step`
    /// is skipped (a real cluster and no `E2E_WEBHOOK_HOST`).
    pub fn webhook_host_or_skip(&self, step: &str) -> Option<WebhookHost> {
        let from_env = std::env::var(E2E_WEBHOOK_HOST).ok();
        let host = webhook_host(!self.on_sim(), from_env.as_deref());
        if host.is_none() {
            self.skip(&format!(
                "{step}: serves a webhook in-process; set {E2E_WEBHOOK_HOST} to an address of \
                 this host the cluster's API server can reach"
            ));
        }
        host
    }

    /// An API in this scenario's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// A client acting as `username` in `groups`: a token of its own on kube-sim,
    /// impersonation by the admin on a real cluster. Grant it access with [`TestEnv::allow`].
    pub async fn client_as(&self, username: &str, groups: &[&str]) -> Client {
        match &self.sim {
            Some(sim) => sim.client_as(username, groups).await,
            None => client_from(&self.kubeconfig, Some((username, groups))).await,
        }
    }

    /// Grants `subject` (a user, a group, or `system:serviceaccount:NS:NAME`) `verb` on
    /// `group`/`resource` ("*" wildcards; "pods/eviction" for a subresource): the simulator's
    /// rules, or a ClusterRole and binding named after the scenario on a real cluster (removed
    /// with it). Returns once the authorizer agrees.
    pub async fn allow(&self, subject: &str, verb: &str, group: &str, resource: &str) {
        if let Some(sim) = &self.sim {
            sim.allow(subject, verb, group, resource);
            return;
        }
        let n = self.grants.fetch_add(1, Ordering::Relaxed);
        let name = format!("e2e-{}-grant-{n}", self.namespace);
        let subjects = match subject.strip_prefix("system:serviceaccount:") {
            Some(sa) => {
                let (ns, name) = sa.split_once(':').unwrap_or(("default", sa));
                json!([{"kind": "ServiceAccount", "namespace": ns, "name": name}])
            }
            None => json!([
                {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": subject},
                {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": subject}
            ]),
        };
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {SCENARIO_LABEL: self.namespace}},
            "rules": [{"apiGroups": [group], "resources": [resource], "verbs": [verb]}]
        }))
        .expect("a ClusterRole");
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {SCENARIO_LABEL: self.namespace}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": subjects
        }))
        .expect("a ClusterRoleBinding");
        Api::<ClusterRole>::all(self.client.clone())
            .create(&PostParams::default(), &role)
            .await
            .unwrap_or_else(|e| panic!("failed to create ClusterRole {name}: {e}"));
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .unwrap_or_else(|e| panic!("failed to create ClusterRoleBinding {name}: {e}"));
        let (group, resource) = (group.to_owned(), resource.to_owned());
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r.to_owned(), s.to_owned()),
            None => (resource, String::new()),
        };
        let (user, groups) = match subject.strip_prefix("system:serviceaccount:") {
            Some(_) => (subject.to_owned(), vec![]),
            None => (subject.to_owned(), vec![subject.to_owned()]),
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review: SubjectAccessReview = serde_json::from_value(json!({
            "spec": {"user": user, "groups": groups, "resourceAttributes": {
                "verb": if verb == "*" { "get" } else { verb }, "group": if group == "*" { "" } else { &group },
                "resource": if resource == "*" { "pods" } else { &resource },
                "subresource": subresource, "namespace": self.namespace}}
        }))
        .expect("a SubjectAccessReview");
        wait_for(
            "the grant to reach the authorizer",
            Duration::from_secs(20),
            || {
                let (reviews, review) = (reviews.clone(), review.clone());
                async move {
                    let answer = reviews.create(&PostParams::default(), &review).await.ok()?;
                    answer.status?.allowed.then_some(())
                }
            },
        )
        .await;
    }

    /// A service account `name` of the scenario (created if missing) and a token minted for it
    /// by a TokenRequest, for `audiences` (empty: the API server's own) — what `kubectl create
    /// token` does. Returns its username (`system:serviceaccount:NS:NAME`) and the token.
    pub async fn service_account_token(&self, name: &str, audiences: &[&str]) -> (String, String) {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        let accounts: Api<ServiceAccount> = self.api();
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("a ServiceAccount");
        match accounts.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("failed to create service account {name}: {e}"),
        }
        let mut spec = json!({"expirationSeconds": 3600});
        if !audiences.is_empty() {
            spec["audiences"] = json!(audiences);
        }
        let request: TokenRequest =
            serde_json::from_value(json!({"spec": spec})).expect("a TokenRequest");
        let answer = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("failed to mint a token for {name}: {e}"));
        let token = answer.status.and_then(|s| s.token).unwrap_or_default();
        (
            format!("system:serviceaccount:{}:{name}", self.namespace),
            token,
        )
    }

    /// Takes lock `name` across the scenarios of this cluster (see [`harness::lock`]); on
    /// kube-sim, where the scenario is alone, it is granted at once.
    pub async fn lock(&self, name: &str) -> Option<harness::lock::ClusterLock> {
        match self.real {
            None => None,
            Some(_) => Some(
                harness::lock::acquire(&self.client, &self.kubeconfig, name, &self.namespace).await,
            ),
        }
    }

    /// Ends the scenario: stops the simulator, or on a real cluster removes the scenario's nodes,
    /// namespace and cluster-scoped objects — and fails if any of them is still there a minute
    /// later.
    pub async fn shutdown(mut self) {
        self.cleaned = true;
        if let Some(sim) = self.sim.take() {
            sim.shutdown().await;
            return;
        }
        if let Some(cp) = self.real.as_mut().and_then(|r| r.private.take()) {
            // A control plane of its own: everything goes with it.
            if let Some(kubelets) = self.real.as_mut().and_then(|r| r.kubelets.take()) {
                kubelets.stop().await;
            }
            let _ = tokio::task::spawn_blocking(move || cp.stop()).await;
            return;
        }
        // The namespace goes while the scenario's kubelets still run, so they finish its pods
        // as a cluster's would; then the kubelets stop and their nodes go with the rest.
        harness::cleanup::sweep_namespace(&self.client, &self.namespace).await;
        if let Some(kubelets) = self.real.as_mut().and_then(|r| r.kubelets.take()) {
            kubelets.stop().await;
        }
        let had_nodes = !self.nodes.is_empty();
        let left = harness::cleanup::sweep_cluster(&self.client, &self.namespace, had_nodes).await;
        assert!(
            left.is_empty(),
            "scenario {} left behind: {}",
            self.namespace,
            left.join(", ")
        );
    }
}

impl Drop for TestEnv {
    /// A scenario that failed or panicked before [`TestEnv::shutdown`] still cleans up on a real
    /// cluster, from a thread of its own (the test's runtime may be unwinding).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(kubectl_cache());
        let private = self.real.as_ref().is_some_and(|r| r.private.is_some());
        if self.cleaned || self.real.is_none() || private {
            // a control plane of its own is killed when it is dropped
            return;
        }
        if let Some(k) = self.real.as_mut().and_then(|r| r.kubelets.take()) {
            drop(k);
        }
        let (kubeconfig, ns) = (self.kubeconfig.clone(), self.namespace.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                eprintln!("failed to clean up {ns}: no runtime");
                return;
            };
            rt.block_on(async {
                let client = client_from(&kubeconfig, None).await;
                let left = harness::cleanup::sweep(&client, &ns).await;
                if !left.is_empty() {
                    eprintln!("scenario {ns} left behind: {}", left.join(", "));
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A cluster of a scenario's own, for scenarios that install cluster-wide objects with fixed
/// names (the shipped manifests: their webhooks match every namespace, so they must not reach a
/// cluster other scenarios share): kube-sim; or, on the real-control-plane pass
/// (`E2E_K8S_BINARIES` set), an etcd and kube-apiserver of its own, started for it and stopped
/// with it.
pub enum PrivateCluster {
    Sim(KubeSim),
    Real(kube_sim::control_plane::ControlPlane),
}

impl PrivateCluster {
    /// Starts one; panics with the reason when it cannot.
    pub async fn start() -> PrivateCluster {
        match kube_sim::control_plane::ControlPlaneConfig::from_env() {
            Some(cfg) => PrivateCluster::Real(
                kube_sim::control_plane::ControlPlane::start(cfg.api_only())
                    .await
                    .unwrap_or_else(|e| panic!("failed to start an API server: {e}")),
            ),
            None => PrivateCluster::Sim(
                KubeSim::start(SimConfig::default())
                    .await
                    .unwrap_or_else(|e| panic!("failed to start kube-sim: {e}")),
            ),
        }
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        match self {
            PrivateCluster::Sim(s) => s.client(),
            PrivateCluster::Real(c) => c.client(),
        }
    }

    /// Its kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        match self {
            PrivateCluster::Sim(s) => s.kubeconfig_path(),
            PrivateCluster::Real(c) => c.kubeconfig_path(),
        }
    }
}

/// The running scenario's name (the test thread's, as cargo test and nextest name it).
pub fn scenario_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unknown scenario")
        .to_owned()
}

/// Prints a `SKIPPED:` line for `reason` and appends it to the skip log.
pub fn record_skip(backend: &str, reason: &str) {
    eprintln!("SKIPPED: {reason} ({backend})");
    if let Some(path) = std::env::var_os(E2E_SKIP_LOG) {
        use std::io::Write;
        let line = format!(
            "{backend}\t{}\t{}\n",
            scenario_name(),
            reason.replace(['\t', '\n'], " ")
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// `config` (a webhook configuration) with every webhook's namespaceSelector matching only
/// `namespace`.
pub fn scoped_to<T>(config: T, namespace: &str) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut value = serde_json::to_value(&config).expect("a webhook configuration");
    if let Some(hooks) = value.get_mut("webhooks").and_then(|w| w.as_array_mut()) {
        for hook in hooks {
            hook["namespaceSelector"] =
                json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}});
        }
    }
    serde_json::from_value(value).expect("a webhook configuration")
}

/// Where a scenario's in-process webhook listens and the host the API server calls it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHost {
    /// Host put in webhook URLs and in the serving certificate's SANs.
    pub host: String,
    /// Local address to listen on: the host itself when it is an IP, every interface otherwise.
    pub bind: IpAddr,
}

impl WebhookHost {
    /// Loopback, for kube-sim.
    pub fn loopback() -> Self {
        Self::named("127.0.0.1")
    }

    /// The webhook host `host` (an IP address or a DNS name of this machine).
    pub fn named(host: &str) -> Self {
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let bind = host
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Self {
            host: host.to_owned(),
            bind,
        }
    }

    /// A listening address on `port` (0: any free port).
    pub fn bind_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.bind, port)
    }

    /// `https://host:port/path`, brackets around an IPv6 address.
    pub fn url(&self, port: u16, path: &str) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("https://[{}]:{port}{path}", self.host),
            _ => format!("https://{}:{port}{path}", self.host),
        }
    }

    /// Names for a serving certificate: the host, plus loopback names for local clients.
    pub fn cert_names(&self) -> Vec<&str> {
        let mut names = vec![self.host.as_str()];
        for n in ["127.0.0.1", "localhost"] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }
}

/// The webhook host for a run: loopback on kube-sim (`real_cluster` false); on a real cluster
/// the value of `E2E_WEBHOOK_HOST`, or `None` when unset or empty.
pub fn webhook_host(real_cluster: bool, e2e_webhook_host: Option<&str>) -> Option<WebhookHost> {
    if !real_cluster {
        return Some(WebhookHost::loopback());
    }
    e2e_webhook_host
        .filter(|h| !h.trim().is_empty())
        .map(WebhookHost::named)
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A discovery cache of the running scenario's own: kubectl's shared one (`~/.kube/cache`)
/// would keep serving the API versions a CRD another scenario replaced had.
fn kubectl_cache() -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    scenario_name().hash(&mut h);
    std::process::id().hash(&mut h);
    std::env::temp_dir().join(format!("ballast-e2e-kubectl-cache-{:016x}", h.finish()))
}

/// Runs the installed `kubectl` against `kubeconfig`; `None` (after saying so) when kubectl is
/// not installed.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Option<Output> {
    kubectl_with_input(kubeconfig, args, None)
}

/// [`kubectl`] with `stdin` piped in (for `-f -`).
pub fn kubectl_with_input(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Option<Output> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(kubectl_cache())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            record_skip("any", "kubectl is not installed");
            return None;
        }
        Err(e) => panic!("failed to run kubectl: {e}"),
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("failed to write kubectl's stdin: {e}"));
    }
    Some(
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("failed to wait for kubectl: {e}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_listen_on_loopback_for_kube_sim_whatever_the_environment_says() {
        assert_eq!(
            webhook_host(false, Some("10.1.2.3")),
            Some(WebhookHost::loopback())
        );
    }

    #[test]
    fn scoped_webhooks_select_only_the_scenarios_namespace() {
        use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
        let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": "guard"},
            "webhooks": [
                {"name": "a.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                 "clientConfig": {"url": "https://127.0.0.1:1/a"},
                 "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                     "operator": "NotIn", "values": ["kube-system"]}]}},
                {"name": "b.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
                 "clientConfig": {"url": "https://127.0.0.1:1/b"}}
            ]
        }))
        .unwrap();
        let scoped = scoped_to(config, "e2e-abc");
        for hook in scoped.webhooks.unwrap() {
            let selector = hook.namespace_selector.unwrap();
            assert_eq!(selector.match_expressions, None, "{}", hook.name);
            assert_eq!(
                selector.match_labels.unwrap()["kubernetes.io/metadata.name"],
                "e2e-abc"
            );
        }
    }

    #[test]
    fn zones_come_in_turn_as_kube_sim_lays_them_out() {
        assert_eq!((0..4).map(zone_letter).collect::<String>(), "abca");
    }

    #[test]
    fn only_kube_sim_internals_may_skip_on_a_real_cluster() {
        for (scenario, reason) in SIM_ONLY {
            assert!(
                !scenario.contains("::"),
                "{scenario}: a test name, not a path"
            );
            assert!(
                reason.contains("kube-sim"),
                "{scenario}: say what of kube-sim it tests"
            );
        }
    }

    #[test]
    fn a_real_cluster_needs_e2e_webhook_host() {
        assert_eq!(webhook_host(true, None), None);
        assert_eq!(webhook_host(true, Some(" ")), None);
        let ip = webhook_host(true, Some("172.18.0.1")).unwrap();
        assert_eq!(ip.bind_addr(0).to_string(), "172.18.0.1:0");
        assert_eq!(ip.url(8443, "/review"), "https://172.18.0.1:8443/review");
        assert_eq!(ip.cert_names(), ["172.18.0.1", "127.0.0.1", "localhost"]);
        let name = webhook_host(true, Some("host.docker.internal")).unwrap();
        assert_eq!(name.bind_addr(9).to_string(), "0.0.0.0:9");
        let v6 = webhook_host(true, Some("[fd00::1]")).unwrap();
        assert_eq!(v6.url(1, "/x"), "https://[fd00::1]:1/x");
    }
}
