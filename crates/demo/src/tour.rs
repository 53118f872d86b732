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

const STEPS: usize = 6;
const SAMPLE: &str = include_str!("../../podmanager/config/samples/apps_v1_podmanager.yaml");
/// The nodes that fail in step 4: three of five is a storm at the default threshold of 3.
const FAILING: [&str; 3] = ["node-1", "node-2", "node-3"];
/// The taint-eviction controller's default toleration in the simulator (see `cluster`).
const TOLERATION: Duration = Duration::from_secs(2);
/// Refused taint-eviction attempts to see before calling the eviction refused: one per pod on
/// the three failed nodes at least.
const TAINT_REFUSALS: f64 = 3.0;
/// How long to wait for services to stop and the tour's clients to close.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Settings {
    pub no_wait: bool,
    pub step_timeout: Duration,
    pub kubeconfig: Option<PathBuf>,
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

    /// Step 1.
    async fn claims_step(&mut self) -> Result<Vec<ClaimReport>> {
        self.n.step(
            1,
            "PVCs provisioned on hostpath and NFS, with their pvc-timing history",
            "two claims go from Pending to Bound: the provisioner makes a directory and a PV for each, \
             and the pvc-timing webhook records when each phase began in the claim's annotation.",
            "the mutating webhook (called by the API server over TLS) and the provisioner work together \
             with no manual step; the annotation is the per-claim phase history no other tool keeps.",
        )?;
        let claims = self.claims();
        let nfs: PersistentVolumeClaim = object(
            "a claim",
            json!({"metadata": {"name": "shared"},
                   "spec": {"storageClassName": "nfs", "accessModes": ["ReadWriteMany"],
                            "resources": {"requests": {"storage": "1Gi"}}}}),
        )?;
        // hostpath is WaitForFirstConsumer: kube-scheduler writes the selected node on the claim
        // when it places the first pod using it. kube-sim's scheduler does not place volumes, so
        // the demo writes that annotation itself.
        let hostpath: PersistentVolumeClaim = object(
            "a claim",
            json!({"metadata": {"name": "data",
                                "annotations": {"volume.kubernetes.io/selected-node": AGENT_NODE}},
                   "spec": {"storageClassName": "hostpath", "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "64Mi"}}}}),
        )?;
        self.n.say(&format!(
            "hostpath is WaitForFirstConsumer; playing kube-scheduler's part, the claim names \
             {AGENT_NODE} in volume.kubernetes.io/selected-node."
        ))?;
        for (claim, size) in [(&nfs, "1Gi"), (&hostpath, "64Mi")] {
            let created = claims
                .create(&PostParams::default(), claim)
                .await
                .map_err(kube_err(format!("create claim {}", claim.name_any())))?;
            let class = created
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let timing = created
                .annotations()
                .get("pvc-timing")
                .cloned()
                .unwrap_or_else(|| "<none>".to_owned());
            self.n.say(&format!(
                "created claim {DEMO_NAMESPACE}/{} ({class}, {size}); as the API server stored it:",
                created.name_any()
            ))?;
            self.n.block(&format!("pvc-timing: {timing}"))?;
        }

        let bound = self
            .n
            .wait_for(
                "both claims Bound, with Bound recorded in pvc-timing",
                || async {
                    let mut out = Vec::new();
                    for name in ["shared", "data"] {
                        let c = claims.get(name).await.ok()?;
                        let timing = PvcTiming::parse(c.annotations().get("pvc-timing")?).ok()?;
                        if phase_of_claim(&c) != "Bound" || timing.current_phase != "Bound" {
                            return None;
                        }
                        out.push(c);
                    }
                    Some(out)
                },
            )
            .await?;

        let volumes: Api<PersistentVolume> = Api::all(self.c.client.clone());
        let mut reports = Vec::new();
        for claim in bound {
            let name = claim.name_any();
            let class = claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let volume = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            let raw = claim
                .annotations()
                .get("pvc-timing")
                .cloned()
                .unwrap_or_default();
            let pv = volumes
                .get(&volume)
                .await
                .map_err(kube_err(format!("get PersistentVolume {volume}")))?;
            let spec = pv.spec.unwrap_or_default();
            let (source, directory) = if let Some(nfs) = &spec.nfs {
                let sub = Path::new(&nfs.path)
                    .strip_prefix(NFS_EXPORT)
                    .unwrap_or(Path::new(&nfs.path))
                    .to_path_buf();
                (
                    format!("nfs {}:{}", nfs.server, nfs.path),
                    self.c.nfs_mount.join(sub),
                )
            } else if let Some(hp) = &spec.host_path {
                (
                    format!("hostPath {} pinned to node {AGENT_NODE}", hp.path),
                    PathBuf::from(&hp.path),
                )
            } else {
                return Err(Error::Unexpected {
                    what: "the provisioned volume",
                    detail: format!("PersistentVolume {volume} has neither nfs nor hostPath"),
                });
            };
            if !directory.is_dir() {
                return Err(Error::Unexpected {
                    what: "the volume's directory",
                    detail: format!("{} does not exist", directory.display()),
                });
            }
            self.n.say(&format!(
                "claim {DEMO_NAMESPACE}/{name} ({class}) Bound to {volume}"
            ))?;
            let mut lines = vec![format!("pvc-timing: {raw}")];
            if let Ok(timing) = PvcTiming::parse(&raw) {
                let first = timing.timings.first().and_then(|t| parse_time(&t.time));
                for t in &timing.timings {
                    let after = match (first, parse_time(&t.time)) {
                        (Some(a), Some(b)) => {
                            format!("  ({} after creation)", format::offset(a, b))
                        }
                        _ => String::new(),
                    };
                    lines.push(format!("  {:<8} {}{after}", t.phase, t.time));
                }
            }
            lines.push(format!("volume:     {source}"));
            lines.push(format!("on disk:    {}", directory.display()));
            self.n.block(&lines.join("\n"))?;
            reports.push(ClaimReport {
                name,
                class,
                volume,
                timing: raw,
                directory,
            });
        }
        for (what, base) in [
            ("hostPath base (node-1's agent)", &self.c.hostpath_base),
            ("NFS export (mounted here)", &self.c.nfs_mount),
        ] {
            let entries = std::fs::read_dir(base).map_err(|source| Error::ReadDir {
                path: base.display().to_string(),
                source,
            })?;
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            self.n
                .command(&format!("ls {}    # {what}", base.display()))?;
            self.n.block(&names.join("\n"))?;
        }
        self.n.step_done()?;
        Ok(reports)
    }

    /// Step 2.
    async fn inspect_step(&mut self) -> Result<(String, u8)> {
        self.n.step(
            2,
            "kubectl pvc inspect",
            "the kubectl-pvc plugin's view of claim `data` once a pod mounts it: \
             Provision / Bind / Attach / Mount, each with its status and evidence.",
            "the plugin reads only what the cluster records (PV, class, events, pod state); \
             its exit code tells scripts whether every phase succeeded.",
        )?;
        let pods = self.pods();
        pods.create(
            &PostParams::default(),
            &mk_pod("data-reader", Some(AGENT_NODE), Some("data"))?,
        )
        .await
        .map_err(kube_err("create pod data-reader"))?;
        self.n.say(&format!(
            "created pod {DEMO_NAMESPACE}/data-reader on {AGENT_NODE}, mounting claim data at /data"
        ))?;
        self.wait_running("data-reader Running and Ready", &["data-reader".to_owned()])
            .await?;
        let kubeconfig = self.c.kubeconfig().display().to_string();
        let args = kubectl_pvc::Args::try_parse_from([
            "kubectl-pvc",
            "inspect",
            "data",
            "-n",
            DEMO_NAMESPACE,
            "--kubeconfig",
            &kubeconfig,
        ])
        .map_err(|e| Error::Unexpected {
            what: "the kubectl pvc command line",
            detail: e.to_string(),
        })?;
        let mut table = Vec::new();
        let outcome = kubectl_pvc::run(args, &mut table)
            .await
            .map_err(Error::KubectlPvc)?;
        let code = kubectl_pvc::exit_code(outcome);
        let table = String::from_utf8_lossy(&table).into_owned();
        self.n.command(&format!(
            "kubectl pvc inspect data -n {DEMO_NAMESPACE} --kubeconfig {kubeconfig}"
        ))?;
        self.n.block(&table)?;
        let meaning = match code {
            0 => "every phase succeeded or does not apply",
            3 => "nothing failed, but a phase is still pending",
            4 => "a phase failed or partly failed",
            _ => "see kubectl pvc --help",
        };
        self.n.say(&format!("exit code {code}: {meaning}"))?;
        self.n.step_done()?;
        Ok((table, code))
    }

    async fn follow_podmanager(
        &mut self,
        pms: &Api<PodManager>,
        target: i32,
        seen: &mut Vec<PodManagerRow>,
    ) -> Result<()> {
        let timeout = self.n.timeout;
        self.n.say(&format!(
            "... following my-pod-manager until {target}/{target} ready (up to {}s):",
            timeout.as_secs()
        ))?;
        self.n.block(&format::podmanager_header())?;
        let start = Instant::now();
        let mut last = None;
        let pods = self.pods();
        loop {
            if let Ok(pm) = pms.get("my-pod-manager").await {
                let status = pm.status.clone().unwrap_or_default();
                let row = (
                    pm.spec.replicas,
                    status.current_replicas,
                    status.ready_replicas,
                );
                if last != Some(row) {
                    self.n.block(&format::podmanager_row(
                        "my-pod-manager",
                        row.0,
                        row.1,
                        row.2,
                        &pm.spec.image,
                    ))?;
                    seen.push(row);
                    last = Some(row);
                }
                let live = pods
                    .list(&ListParams::default().labels("podmanager=my-pod-manager"))
                    .await
                    .map(|l| {
                        l.items
                            .iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .count()
                    })
                    .unwrap_or(0);
                if row == (target, target, target) && live == target as usize {
                    self.n.say(&format!(
                        "settled at {target}/{target} in {:.1}s",
                        start.elapsed().as_secs_f64()
                    ))?;
                    return Ok(());
                }
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("my-pod-manager to settle at {target}/{target} ready"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Step 3.
    async fn podmanager_step(&mut self) -> Result<Vec<PodManagerRow>> {
        self.n.step(
            3,
            "A PodManager scaling 3 -> 5 -> 2",
            "the sample PodManager (crates/podmanager/config/samples/) creating its pods, then scaled \
             to 5 through the scale subresource and down to 2; lines as `kubectl get podmanager` prints them.",
            "the operator reconciles to the desired count, reports current and ready pods in status, \
             and removes the highest ordinals first when scaling down.",
        )?;
        let mut pm: PodManager =
            serde_yaml::from_str(SAMPLE).map_err(|source| Error::Manifest {
                what: "crates/podmanager/config/samples/apps_v1_podmanager.yaml",
                source,
            })?;
        pm.metadata.namespace = Some(DEMO_NAMESPACE.to_owned());
        let pms: Api<PodManager> = Api::namespaced(self.c.client.clone(), DEMO_NAMESPACE);
        pms.create(&PostParams::default(), &pm)
            .await
            .map_err(kube_err("create PodManager my-pod-manager"))?;
        self.n.command(&format!(
            "kubectl apply -n {DEMO_NAMESPACE} -f crates/podmanager/config/samples/apps_v1_podmanager.yaml"
        ))?;
        let mut seen = Vec::new();
        self.follow_podmanager(&pms, 3, &mut seen).await?;
        for replicas in [5, 2] {
            self.n.command(&format!(
                "kubectl scale podmanager/my-pod-manager -n {DEMO_NAMESPACE} --replicas={replicas}"
            ))?;
            pms.patch_scale(
                "my-pod-manager",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .map_err(kube_err(format!("scale my-pod-manager to {replicas}")))?;
            self.follow_podmanager(&pms, replicas, &mut seen).await?;
        }
        let list = self
            .pods()
            .list(&ListParams::default().labels("podmanager=my-pod-manager"))
            .await
            .map_err(kube_err("list my-pod-manager's pods"))?;
        let placed: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| format!("{} on {}", p.name_any(), pod_node(p)))
            .collect();
        self.n.say(&format!("pods left: {}", placed.join(", ")))?;
        self.n.step_done()?;
        Ok(seen)
    }

    /// Step 4.
    async fn storm_step(&mut self) -> Result<StormEvidence> {
        self.n.step(
            4,
            "Three of five worker nodes fail",
            "node-1..3 stop heartbeating; eviction-guard sees a storm and turns protection on; the \
             simulated taint-based eviction of their pods is refused; a drain's eviction of a pod on a \
             failed node gets 429, while a pod on a healthy node is evicted normally.",
            "a network partition or control-plane hiccup that makes many nodes NotReady at once does not \
             empty them: their pods stay until the nodes return or an operator lifts protection.",
        )?;
        let pods = self.pods();
        let names: Vec<String> = (1..=crate::cluster::NODES)
            .map(|i| format!("app-{i}"))
            .collect();
        for (i, name) in names.iter().enumerate() {
            let node = format!("node-{}", i + 1);
            pods.create(&PostParams::default(), &mk_pod(name, Some(&node), None)?)
                .await
                .map_err(kube_err(format!("create pod {name}")))?;
        }
        self.n
            .say("created pods app-1..app-5, one on each worker node")?;
        self.wait_running("app-1..app-5 Running and Ready", &names)
            .await?;

        for node in FAILING {
            self.c.sim.fail_node(node);
        }
        self.n.say(&format!(
            "kube-sim: heartbeats of {} stopped",
            FAILING.join(", ")
        ))?;
        let nodes = self.nodes();
        let notready_at = self
            .n
            .wait_for("three nodes NotReady in the API", || async {
                let list = nodes.list(&ListParams::default()).await.ok()?;
                let down = list
                    .items
                    .iter()
                    .filter(|n| node_ready(n) != "True")
                    .count();
                (down == FAILING.len()).then(Instant::now)
            })
            .await?;
        let control = &self.control;
        let state = self
            .n
            .wait_for("eviction-guard to turn protection on", || async {
                let s = control.get_status().await.ok()?;
                s.protecting.then_some(s)
            })
            .await?;
        self.n.say(&format!(
            "eviction-guard: protection ON, {:.1}s after the third node went NotReady",
            notready_at.elapsed().as_secs_f64()
        ))?;
        self.n.block(&format!("reason: {}", state.reason))?;

        // The taint eviction starts once the pods' toleration of the unreachable taint runs out.
        self.n.say(&format!(
            "the taint-eviction controller waits out the pods' tolerationSeconds ({}s here, 300s in \
             Kubernetes), then marks each pod DisruptionTarget and deletes it",
            TOLERATION.as_secs()
        ))?;
        let tainted_at = self
            .n
            .wait_for(
                "the node lifecycle controller to taint the failed nodes unreachable",
                || async {
                    let list = nodes.list(&ListParams::default()).await.ok()?;
                    let tainted = list
                        .items
                        .iter()
                        .filter(|n| node_taints(n).contains("node.kubernetes.io/unreachable"))
                        .count();
                    (tainted == FAILING.len()).then(Instant::now)
                },
            )
            .await?;
        // counted from here: the controller makes its five attempts per pod right when the
        // tolerations run out, then gives up
        let before = self.status_refusals().await?;
        self.print_nodes().await?;
        let expires = tainted_at + TOLERATION;
        self.n
            .wait_for("the tolerations to run out", || async {
                (Instant::now() >= expires).then_some(())
            })
            .await?;
        let http = self.http.clone();
        let metrics_url = format!("http://{}/metrics", self.c.addrs.guard_admin);
        let refused = self
            .n
            .wait_for(
                "the guard to refuse the taint eviction's DisruptionTarget updates",
                || async {
                    let text = get_text(&http, &metrics_url).await.ok()?;
                    let now = ballast_runtime::metrics::sample(
                        &text,
                        "eviction_intercepted_total",
                        &[("operation", "status")],
                    )?;
                    (now - before >= TAINT_REFUSALS).then_some(now - before)
                },
            )
            .await?;
        self.n.say(&format!(
            "eviction_intercepted_total{{operation=\"status\"}} rose by {refused} since the nodes were tainted"
        ))?;
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(kube_err("list pods"))?;
        let mut table = format!(
            "{:<20}{:<9}{:<9}{:<11}{}\n",
            "POD", "NODE", "PHASE", "DELETING", "DISRUPTION-TARGET"
        );
        let mut protected = Vec::new();
        for p in list.items.iter().filter(|p| FAILING.contains(&pod_node(p))) {
            let deleting = p.metadata.deletion_timestamp.is_some();
            let disrupted = pod_condition(p, "DisruptionTarget").unwrap_or_else(|| "-".into());
            table.push_str(&format!(
                "{:<20}{:<9}{:<9}{:<11}{}\n",
                p.name_any(),
                pod_node(p),
                pod_phase(p),
                if deleting { "yes" } else { "no" },
                disrupted
            ));
            if deleting || disrupted == "True" {
                return Err(Error::Unexpected {
                    what: "the protected pods",
                    detail: format!("pod {} on a failed node is being evicted", p.name_any()),
                });
            }
            protected.push(p.name_any());
        }
        self.n.say("pods on the failed nodes, still there:")?;
        self.n.block(&table)?;

        // podmanager reads node health from the control service: its pods on failed nodes no
        // longer count as ready, so it starts replacements on healthy nodes and deletes nothing.
        let pms: Api<PodManager> = Api::namespaced(self.c.client.clone(), DEMO_NAMESPACE);
        let failing_pm_pods = protected
            .iter()
            .filter(|p| p.starts_with("my-pod-manager-"))
            .count();
        if failing_pm_pods > 0 {
            let (row, placed) = self
                .n
                .wait_for(
                    "podmanager to replace its pods on failed nodes with ready pods elsewhere",
                    || async {
                        let pm = pms.get("my-pod-manager").await.ok()?;
                        let status = pm.status.clone()?;
                        if status.ready_replicas < pm.spec.replicas {
                            return None;
                        }
                        let list = pods
                            .list(&ListParams::default().labels("podmanager=my-pod-manager"))
                            .await
                            .ok()?;
                        let live: Vec<&Pod> = list
                            .items
                            .iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .collect();
                        let ready_elsewhere = live
                            .iter()
                            .filter(|p| !FAILING.contains(&pod_node(p)))
                            .filter(|p| pod_condition(p, "Ready").as_deref() == Some("True"))
                            .count();
                        if ready_elsewhere < usize::try_from(pm.spec.replicas).ok()? {
                            return None;
                        }
                        let placed: Vec<String> = live
                            .iter()
                            .map(|p| format!("{} on {}", p.name_any(), pod_node(p)))
                            .collect();
                        let row = format::podmanager_row(
                            "my-pod-manager",
                            pm.spec.replicas,
                            status.current_replicas,
                            status.ready_replicas,
                            &pm.spec.image,
                        );
                        Some((row, placed))
                    },
                )
                .await?;
            self.n
                .block(&format!("{}\n{row}", format::podmanager_header()))?;
            self.n
                .say(&format!("its pods now: {}", placed.join(", ")))?;
        }

        // A drain: the Eviction API, refused with 429 so kubectl drain retries.
        self.n.say(&format!(
            "what `kubectl drain node-1` sends for app-1: POST /api/v1/namespaces/{DEMO_NAMESPACE}/pods/app-1/eviction"
        ))?;
        let drain: Api<Pod> = Api::namespaced(self.c.no_retry_client.clone(), DEMO_NAMESPACE);
        let refusal = match drain.evict("app-1", &EvictParams::default()).await {
            Err(kube::Error::Api(status)) => Refusal {
                pod: "app-1".into(),
                node: "node-1".into(),
                code: status.code,
                message: status.message,
            },
            Err(e) => {
                return Err(Error::Kube {
                    what: "evict app-1".into(),
                    source: e,
                });
            }
            Ok(_) => {
                return Err(Error::Unexpected {
                    what: "the refused eviction",
                    detail: "the eviction of app-1 on failed node-1 was allowed".into(),
                });
            }
        };
        self.n.block(&format!(
            "HTTP {} {}\n{}",
            refusal.code,
            reason_phrase(refusal.code),
            refusal.message
        ))?;
        if refusal.code != 429 || !refusal.message.contains("node-1") {
            return Err(Error::Unexpected {
                what: "the refused eviction",
                detail: format!("got {} {}", refusal.code, refusal.message),
            });
        }

        self.n.say(&format!(
            "the same for app-4, on healthy node-4: POST /api/v1/namespaces/{DEMO_NAMESPACE}/pods/app-4/eviction"
        ))?;
        let allowed = drain
            .evict("app-4", &EvictParams::default())
            .await
            .map_err(kube_err("evict app-4 on a healthy node"))?;
        let code = if allowed.code == 0 { 201 } else { allowed.code };
        self.n
            .block(&format!("HTTP {code} {}", reason_phrase(code)))?;
        self.n
            .wait_for("app-4 gone", || async {
                pods.get_opt("app-4").await.ok()?.is_none().then_some(())
            })
            .await?;
        self.n.say(
            "app-4 on node-4 (Ready) was evicted as usual: protection never covers healthy nodes",
        )?;
        self.n.step_done()?;
        Ok(StormEvidence {
            reason: state.reason,
            protected,
            refused,
            refusal,
            evicted: "app-4".into(),
        })
    }

    /// Step 5.
    async fn grpc_step(&mut self) -> Result<serde_json::Value> {
        self.n.step(
            5,
            "The control service over gRPC",
            "the interception state as any client of the Ballast control API sees it (GetStatus), \
             here through ballast-control's client, printed the way grpcurl prints it.",
            "other services (provisioner, podmanager) and operators read the same state the guard \
             acts on: mode, whether it protects, why, since when, and which nodes.",
        )?;
        let state = self.get_status().await?;
        let json = format::grpcurl_json(&state);
        self.n.command(&format!(
            "grpcurl -plaintext {} ballast.control.v1.ControlService/GetStatus",
            self.c.addrs.grpc
        ))?;
        self.n.block(&format::render_get_status_response(&state))?;
        self.n.step_done()?;
        Ok(json)
    }

    /// Step 6.
    async fn recovery_step(&mut self) -> Result<RecoveryEvidence> {
        self.n.step(
            6,
            "Recovery",
            "node-1..3 heartbeat again; protection ends by itself; the guard's counters on /metrics.",
            "protection needs no operator to end it, and every refusal and allowance is counted \
             under the seed's metric names.",
        )?;
        for node in FAILING {
            self.c.sim.restore_node(node);
        }
        self.n.say(&format!(
            "kube-sim: heartbeats of {} resumed",
            FAILING.join(", ")
        ))?;
        let control = &self.control;
        let state = self
            .n
            .wait_for("eviction-guard to turn protection off", || async {
                let s = control.get_status().await.ok()?;
                (!s.protecting).then_some(s)
            })
            .await?;
        self.n.say("eviction-guard: protection OFF")?;
        self.n.block(&format!("reason: {}", state.reason))?;
        let nodes = self.nodes();
        self.n
            .wait_for("every node Ready", || async {
                let list = nodes.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .all(|n| node_ready(n) == "True")
                    .then_some(())
            })
            .await?;
        self.print_nodes().await?;
        self.n.say(
            "with the nodes back, podmanager removes the surplus and returns to the desired count:",
        )?;
        let pms: Api<PodManager> = Api::namespaced(self.c.client.clone(), DEMO_NAMESPACE);
        let mut seen = Vec::new();
        self.follow_podmanager(&pms, 2, &mut seen).await?;
        let state = self.get_status().await?;
        let metrics = self.guard_metrics().await?;
        self.n.command(&format!(
            "curl -s http://{}/metrics | grep -E '^(eviction_intercepted_total|eviction_allowed_total|node_notready_count)'",
            self.c.addrs.guard_admin
        ))?;
        let mut lines = Vec::new();
        for name in [
            "eviction_intercepted_total",
            "eviction_allowed_total",
            "node_notready_count",
        ] {
            lines.extend(format::metric_lines(&metrics, name));
        }
        self.n.block(&lines.join("\n"))?;
        self.n.step_done()?;
        Ok(RecoveryEvidence {
            reason: state.reason,
            protecting: state.protecting,
            intercepted: format::metric_sum(&metrics, "eviction_intercepted_total"),
            allowed: format::metric_sum(&metrics, "eviction_allowed_total"),
            notready: format::metric_sum(&metrics, "node_notready_count"),
        })
    }
}

struct StormEvidence {
    reason: String,
    protected: Vec<String>,
    refused: f64,
    refusal: Refusal,
    evicted: String,
}

struct RecoveryEvidence {
    reason: String,
    protecting: bool,
    intercepted: f64,
    allowed: f64,
    notready: f64,
}

/// Starts the cluster, plays the steps, optionally stays up, and always stops the cluster.
pub async fn play(settings: Settings, out: &mut (dyn std::io::Write + Send)) -> Result<Summary> {
    let Settings {
        no_wait,
        step_timeout,
        kubeconfig,
    } = settings;
    let mut n = Narrator::new(out, STEPS, step_timeout);
    n.section("Ballast demo: starting a simulated cluster and the four services")?;
    n.say("kube-sim is a Kubernetes API simulator (a test double, not a Kubernetes): five worker nodes, a scheduler, kubelets, node heartbeats and taint-based eviction.")?;
    // Interactive runs stop cleanly on Ctrl-C at any point; unattended ones leave signals alone.
    let signals = if no_wait {
        CancellationToken::new()
    } else {
        ballast_runtime::shutdown::on_signals()
    };
    n.say("A `$` line is the command you would type for what the demo does at that point through the same API or library code; what follows it is the real answer.")?;
    let cluster = tokio::select! {
        started = Cluster::start(kubeconfig) => started?,
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
        "kube-sim",
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
    n.say("webhooks are registered in the simulator with their https://127.0.0.1 URLs and the demo CA as caBundle.")?;
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
    let (inspect_table, inspect_exit_code) = t.inspect_step().await?;
    let scaling = t.podmanager_step().await?;
    let storm = t.storm_step().await?;
    let grpc_status = t.grpc_step().await?;
    let recovery = t.recovery_step().await?;

    let summary = Summary {
        claims,
        inspect_table,
        inspect_exit_code,
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
