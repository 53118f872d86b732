//! The six steps of the tour, each printing what it shows and what it proves before it runs,
//! and collecting its evidence into the [`Summary`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_control::{ClientOptions, ControlClient, InterceptionState};
use clap::Parser;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use podmanager::PodManager;
use pvc_timing::timing::{PvcTiming, parse_time};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cluster::{AGENT_NODE, Cluster, DEMO_NAMESPACE, NFS_EXPORT};
use crate::error::{Error, Result};
use crate::format;
use crate::narrate::Narrator;

mod podmanager_steps;
mod storage;
mod storm;

const STEPS: usize = 6;
const SAMPLE: &str = include_str!("../../podmanager/config/samples/apps_v1_podmanager.yaml");
/// The nodes that fail in step 4: three of five is a storm at the default threshold of 3.
const FAILING: [&str; 3] = ["node-1", "node-2", "node-3"];
/// The default toleration of the unreachable taint on the demo's cluster (see `backend`).
const TOLERATION: Duration = Duration::from_secs(crate::backend::TOLERATION_SECONDS);
/// Refused taint-eviction attempts to see before calling the eviction refused: one per pod on
/// the three failed nodes at least.
const TAINT_REFUSALS: f64 = 3.0;
/// How long to wait for services to stop and the tour's clients to close.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Settings {
    pub no_wait: bool,
    pub step_timeout: Duration,
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes binaries to run the tour on instead of kube-sim.
    pub control_plane: Option<PathBuf>,
}

/// A claim as step 1 left it.
#[derive(Debug, Clone)]
pub struct ClaimReport {
    pub name: String,
    pub class: String,
    pub volume: String,
    /// The `pvc-timing` annotation, verbatim.
    pub timing: String,
    /// The volume's directory on this machine.
    pub directory: PathBuf,
}

/// A `kubectl get podmanager` line: (desired, current, ready).
pub type PodManagerRow = (i32, i32, i32);

/// A refused request: HTTP code and the API server's message.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub pod: String,
    pub node: String,
    pub code: u16,
    pub message: String,
}

/// The evidence every step collected, for tests and scripts.
#[derive(Debug, Clone)]
pub struct Summary {
    pub claims: Vec<ClaimReport>,
    /// `kubectl pvc inspect` table and exit code.
    pub inspect_table: String,
    pub inspect_exit_code: u8,
    /// `kubectl pvc timing data` and `kubectl pvc timing` of the demo namespace.
    pub timing_tables: String,
    /// Every distinct PodManager line seen while scaling 3 → 5 → 2.
    pub scaling: Vec<PodManagerRow>,
    /// The guard's reason sentence when protection turned on.
    pub protection_reason: String,
    /// Pods on failed nodes still there after the taint eviction was refused.
    pub protected_pods: Vec<String>,
    /// Taint-eviction status updates the guard refused.
    pub taint_refusals: f64,
    pub eviction_refusal: Refusal,
    /// The pod on a healthy node that was evicted.
    pub evicted_pod: String,
    /// GetStatus as grpcurl shows it.
    pub grpc_status: serde_json::Value,
    /// The guard's reason sentence after recovery, and whether it still protects.
    pub recovery_reason: String,
    pub protecting_after_recovery: bool,
    /// Sums over every series of the seed's three metrics.
    pub intercepted_total: f64,
    pub allowed_total: f64,
    pub notready_count: f64,
    pub elapsed: Duration,
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

fn object<T: serde::de::DeserializeOwned>(what: &'static str, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Unexpected {
        what,
        detail: e.to_string(),
    })
}

async fn get_text(http: &reqwest::Client, url: &str) -> Result<String> {
    let map = |source| Error::Http {
        url: url.to_owned(),
        source,
    };
    http.get(url)
        .send()
        .await
        .map_err(map)?
        .error_for_status()
        .map_err(map)?
        .text()
        .await
        .map_err(map)
}

/// `Too Many Requests` for 429: what curl and kubectl show after the code.
fn reason_phrase(code: u16) -> &'static str {
    reqwest::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("")
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn pod_node(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn pod_condition(p: &Pod, type_: &str) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn node_ready(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map_or_else(|| "Unknown".to_owned(), |c| c.status.clone())
}

fn node_taints(n: &Node) -> String {
    let taints: Vec<String> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default();
    if taints.is_empty() {
        "<none>".to_owned()
    } else {
        taints.join(",")
    }
}

/// A pod in the demo namespace, pinned to `node` when given, mounting `claim` when given.
fn mk_pod(name: &str, node: Option<&str>, claim: Option<&str>) -> Result<Pod> {
    let mut spec = json!({"containers": [{"name": "app", "image": "nginx:1.27"}]});
    if let Some(node) = node {
        spec["nodeName"] = json!(node);
    }
    if let Some(claim) = claim {
        spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        spec["volumes"] = json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
    }
    object(
        "a pod",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": DEMO_NAMESPACE, "labels": {"app": "demo"}},
               "spec": spec}),
    )
}

struct Tour<'a, 'o> {
    n: &'a mut Narrator<'o>,
    c: &'a Cluster,
    http: reqwest::Client,
    control: ControlClient,
}

impl Tour<'_, '_> {
    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.c.client.clone(), DEMO_NAMESPACE)
    }
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.c.client.clone(), DEMO_NAMESPACE)
    }
    fn nodes(&self) -> Api<Node> {
        Api::all(self.c.client.clone())
    }

    async fn guard_metrics(&self) -> Result<String> {
        get_text(
            &self.http,
            &format!("http://{}/metrics", self.c.addrs.guard_admin),
        )
        .await
    }

    async fn status_refusals(&self) -> Result<f64> {
        let text = self.guard_metrics().await?;
        Ok(ballast_runtime::metrics::sample(
            &text,
            "eviction_intercepted_total",
            &[("operation", "status")],
        )
        .unwrap_or(0.0))
    }

    async fn get_status(&self) -> Result<InterceptionState> {
        self.control
            .get_status()
            .await
            .map_err(|source| Error::ControlCall {
                what: "GetStatus",
                source,
            })
    }

    async fn wait_running(&mut self, what: &str, names: &[String]) -> Result<()> {
        let pods = self.pods();
        self.n
            .wait_for(what, || async {
                for name in names {
                    let p = pods.get_opt(name).await.ok()??;
                    if pod_phase(&p) != "Running" || pod_condition(&p, "Ready")? != "True" {
                        return None;
                    }
                }
                Some(())
            })
            .await
    }

    async fn print_nodes(&mut self) -> Result<()> {
        let nodes = self
            .nodes()
            .list(&ListParams::default())
            .await
            .map_err(kube_err("list nodes"))?;
        let mut table = format!("{:<10}{:<8}{}\n", "NODE", "READY", "TAINTS");
        for node in &nodes.items {
            table.push_str(&format!(
                "{:<10}{:<8}{}\n",
                node.name_any(),
                node_ready(node),
                node_taints(node)
            ));
        }
        self.n.block(&table)
    }
}

/// Starts the cluster, plays the steps, optionally stays up, and always stops the cluster.
pub async fn play(settings: Settings, out: &mut (dyn std::io::Write + Send)) -> Result<Summary> {
    let Settings {
        no_wait,
        step_timeout,
        kubeconfig,
        control_plane,
    } = settings;
    let mut n = Narrator::new(out, STEPS, step_timeout);
    if control_plane.is_some() {
        n.section("Ballast demo: starting a Kubernetes control plane and the four services")?;
        n.say("etcd, kube-apiserver, kube-controller-manager and kube-scheduler from the given binaries; five worker nodes whose kubelets are simulated (heartbeats, pod status), so nodes can fail on cue.")?;
    } else {
        n.section("Ballast demo: starting a simulated cluster and the four services")?;
        n.say("kube-sim is a Kubernetes API simulator (a test double, not a Kubernetes): five worker nodes, a scheduler, kubelets, node heartbeats and taint-based eviction.")?;
    }
    // Interactive runs stop cleanly on Ctrl-C at any point; unattended ones leave signals alone.
    let signals = if no_wait {
        CancellationToken::new()
    } else {
        ballast_runtime::shutdown::on_signals()
    };
    n.say("A `$` line is the command you would type for what the demo does at that point through the same API or library code; what follows it is the real answer.")?;
    let cluster = tokio::select! {
        started = Cluster::start(kubeconfig, control_plane.as_deref()) => started?,
        () = signals.cancelled() => return Err(Error::Interrupted),
    };
    let stop = CancellationToken::new();
    let result = tokio::select! {
        // The tour first: once it is exploring, a signal ends it normally.
        biased;
        result = tour(&mut n, &cluster, no_wait, &stop, &signals) => result,
        () = signals.cancelled() => Err(Error::Interrupted),
    };
    stop.cancel();
    cluster.stop().await;
    result
}

async fn tour(
    n: &mut Narrator<'_>,
    cluster: &Cluster,
    no_wait: bool,
    stop: &CancellationToken,
    signals: &CancellationToken,
) -> Result<Summary> {
    let a = &cluster.addrs;
    let mut started = String::new();
    started.push_str(&format!(
        "{:<16}{}  (kubeconfig {})\n",
        cluster.backend.name(),
        a.api,
        a.kubeconfig.display()
    ));
    started.push_str(&format!(
        "{:<16}webhook https://{}/validate, gRPC {}, admin http://{}\n",
        "eviction-guard", a.guard_webhook, a.grpc, a.guard_admin
    ));
    started.push_str(&format!(
        "{:<16}webhook https://{}/mutate, admin http://{}\n",
        "pvc-timing", a.pvc_timing_webhook, a.pvc_timing_admin
    ));
    started.push_str(&format!(
        "{:<16}controller + node-1 hostPath agent, admin http://{}\n",
        "provisioner", a.provisioner_admin
    ));
    started.push_str(&format!(
        "{:<16}operator for namespace {DEMO_NAMESPACE}, admin http://{}\n",
        "podmanager", a.podmanager_admin
    ));
    n.block(&started)?;
    n.say("webhooks are registered in the API server with their https://127.0.0.1 URLs and the demo CA as caBundle.")?;
    let http = reqwest::Client::builder()
        .timeout(CONTROL_TIMEOUT)
        .build()
        .map_err(|source| Error::Http {
            url: "(client)".into(),
            source,
        })?;
    let endpoints = cluster.admin_endpoints();
    n.wait_for("every service to report ready on /readyz", || async {
        for (_, addr) in endpoints {
            let r = http
                .get(format!("http://{addr}/readyz"))
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
        }
        Some(())
    })
    .await?;
    let control = ControlClient::start(
        ClientOptions::new(format!("http://{}", a.grpc)).watch(false),
        stop,
    )
    .map_err(Error::Control)?;

    let mut t = Tour {
        n,
        c: cluster,
        http,
        control,
    };
    let claims = t.claims_step().await?;
    let (inspect_table, inspect_exit_code, timing_tables) = t.inspect_step().await?;
    let scaling = t.podmanager_step().await?;
    let storm = t.storm_step().await?;
    let grpc_status = t.grpc_step().await?;
    let recovery = t.recovery_step().await?;

    let summary = Summary {
        claims,
        inspect_table,
        inspect_exit_code,
        timing_tables,
        scaling,
        protection_reason: storm.reason,
        protected_pods: storm.protected,
        taint_refusals: storm.refused,
        eviction_refusal: storm.refusal,
        evicted_pod: storm.evicted,
        grpc_status,
        recovery_reason: recovery.reason,
        protecting_after_recovery: recovery.protecting,
        intercepted_total: recovery.intercepted,
        allowed_total: recovery.allowed,
        notready_count: recovery.notready,
        elapsed: t.n.elapsed(),
    };
    t.n.section(&format!(
        "Tour finished in {:.1}s",
        summary.elapsed.as_secs_f64()
    ))?;
    explore(t.n, cluster, no_wait, signals).await?;
    Ok(summary)
}

/// Prints how to poke at the running cluster; then, unless `no_wait`, waits for Ctrl-C.
async fn explore(
    n: &mut Narrator<'_>,
    cluster: &Cluster,
    no_wait: bool,
    signals: &CancellationToken,
) -> Result<()> {
    let a = &cluster.addrs;
    let kc = a.kubeconfig.display();
    let mut lines: BTreeMap<&str, String> = BTreeMap::new();
    lines.insert("1 kubeconfig", format!("kubeconfig:      {kc}"));
    lines.insert("2 grpc", format!("gRPC control:    {} (plaintext)", a.grpc));
    lines.insert(
        "3 admin",
        format!(
            "admin/metrics:   eviction-guard http://{}  pvc-timing http://{}  provisioner http://{}  podmanager http://{}",
            a.guard_admin, a.pvc_timing_admin, a.provisioner_admin, a.podmanager_admin
        ),
    );
    for line in lines.values() {
        n.say(line)?;
    }
    n.say("try:")?;
    n.block(&format!(
        "kubectl --kubeconfig {kc} get pods -A\n\
         kubectl --kubeconfig {kc} get podmanager -n {DEMO_NAMESPACE}\n\
         kubectl --kubeconfig {kc} pvc inspect data -n {DEMO_NAMESPACE}   # kubectl-pvc on PATH: cargo install --path crates/kubectl-pvc\n\
         kubectl --kubeconfig {kc} pvc timing -A\n\
         grpcurl -plaintext {grpc} list\n\
         grpcurl -plaintext {grpc} ballast.control.v1.ControlService/GetStatus\n\
         curl -s http://{admin}/metrics",
        grpc = a.grpc,
        admin = a.guard_admin
    ))?;
    if no_wait {
        n.say("--no-wait: stopping everything now.")?;
        return Ok(());
    }
    n.say("Everything stays up until Ctrl-C.")?;
    signals.cancelled().await;
    n.say("stopping...")?;
    Ok(())
}
