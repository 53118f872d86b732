//! Controllers on a real control plane (etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler from a directory of Kubernetes binaries; simulated kubelets for the pods):
//! claims to Bound through the real PV controller, pvc-timing on every claim, PodManagers
//! converged through the real scheduler. Each run gives our latency apart from the control
//! plane's, and the CPU and peak memory of every process, ours and theirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::apiserver;
use crate::areas::controllers::{
    NAMESPACE, claim_timed, count_done, cpu_cell, pm_converged, register_pvc_timing, storage_setup,
    wait_count,
};
use crate::cluster::{self, RealCluster};
use crate::fixtures;
use crate::kubeops::{self, create_all};
use crate::plan::{Plan, RealRun as RealRunKind};
use crate::procs::{Cores, Env, Proc, ProcStats};
use crate::report::{Section, Table};
use crate::services::{self, Cert, Service};
use crate::stats::{Summary, bucket_quantile, fmt_duration, fmt_mb, summarize};

/// The annotations with which the PV controller hands a claim to an external provisioner.
const HAND_OVER: [&str; 2] = [
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
];
/// Pods a simulated node takes (its `pods` allocatable is 110).
const PODS_PER_NODE: usize = 100;

/// One claim's milestones, as the benchmark's own watches saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Marks {
    pub seen: Option<Instant>,
    /// The PV controller handed the claim to an external provisioner (ours).
    pub handed_over: Option<Instant>,
    /// A PersistentVolume naming the claim exists (ours made it).
    pub volume: Option<Instant>,
    pub bound: Option<Instant>,
}

/// The stretches of the claims that went the whole way: created → handed over (the PV
/// controller), handed over → PV created (ours), PV created → Bound (the PV controller).
pub fn stretches(marks: &[Marks]) -> [Vec<Duration>; 3] {
    let mut out: [Vec<Duration>; 3] = Default::default();
    for m in marks {
        let (Some(s), Some(h), Some(v), Some(b)) = (m.seen, m.handed_over, m.volume, m.bound)
        else {
            continue;
        };
        out[0].push(h.saturating_duration_since(s));
        out[1].push(v.saturating_duration_since(h));
        out[2].push(b.saturating_duration_since(v));
    }
    out
}

/// What a watch of claims and volumes saw, and how many claims are Bound.
struct Timeline {
    marks: Arc<Mutex<HashMap<String, Marks>>>,
    bound: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

enum Seen {
    Claim(Box<PersistentVolumeClaim>),
    Volume(Box<PersistentVolume>),
}

/// Watches the claims of [`NAMESPACE`] and every volume, marking each claim's milestones.
fn timeline(client: &Client) -> Timeline {
    let marks: Arc<Mutex<HashMap<String, Marks>>> = Arc::default();
    let bound = Arc::new(AtomicUsize::new(0));
    let claims = watcher(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .map_ok(|c| Seen::Claim(Box::new(c)));
    let volumes = watcher(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .map_ok(|v| Seen::Volume(Box::new(v)));
    let (m, b) = (marks.clone(), bound.clone());
    let task = tokio::spawn(async move {
        let _ = futures::stream::select(claims, volumes)
            .try_for_each(|seen| {
                let now = Instant::now();
                let mut marks = m.lock().unwrap_or_else(|e| e.into_inner());
                match seen {
                    Seen::Claim(c) => {
                        let name = c.metadata.name.clone().unwrap_or_default();
                        let e = marks.entry(name).or_default();
                        e.seen.get_or_insert(now);
                        let ann = c.metadata.annotations.as_ref();
                        if HAND_OVER
                            .iter()
                            .any(|k| ann.is_some_and(|a| a.contains_key(*k)))
                        {
                            e.handed_over.get_or_insert(now);
                        }
                        if crate::areas::controllers::claim_bound(&c) && e.bound.is_none() {
                            e.bound = Some(now);
                            b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Seen::Volume(v) => {
                        let claim = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                        if let Some(r) = claim.filter(|r| r.namespace.as_deref() == Some(NAMESPACE))
                        {
                            let name = r.name.clone().unwrap_or_default();
                            marks.entry(name).or_default().volume.get_or_insert(now);
                        }
                    }
                }
                futures::future::ready(Ok(()))
            })
            .await;
    });
    Timeline { marks, bound, task }
}

/// Per pod of [`NAMESPACE`]: when it was first seen, seen scheduled, seen Ready.
type PodMarks = Arc<Mutex<HashMap<String, [Option<Instant>; 3]>>>;

/// Watches the pods of [`NAMESPACE`], marking when each was created, scheduled and Ready.
fn pod_timeline(client: &Client) -> (PodMarks, tokio::task::JoinHandle<()>) {
    let marks: PodMarks = Arc::default();
    let m = marks.clone();
    let pods = watcher(
        Api::<Pod>::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects();
    let task = tokio::spawn(async move {
        let _ = pods
            .try_for_each(|p| {
                let now = Instant::now();
                let mut marks = m.lock().unwrap_or_else(|e| e.into_inner());
                let e = marks
                    .entry(p.metadata.name.clone().unwrap_or_default())
                    .or_default();
                e[0].get_or_insert(now);
                if p.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                    e[1].get_or_insert(now);
                }
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready {
                    e[2].get_or_insert(now);
                }
                futures::future::ready(Ok(()))
            })
            .await;
    });
    (marks, task)
}

/// CPU and memory of one process over a run.
struct Spent {
    name: String,
    before: ProcStats,
    after: ProcStats,
}

/// A histogram's p50 and p99 as bucket bounds, with its count.
fn p50_p99(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<[(Duration, u64); 2]> {
    let q = |q| bucket_quantile(metrics, name, labels, q);
    q(0.5).zip(q(0.99)).map(|(a, b)| [a, b])
}

/// One run's figures.
struct RealRun {
    what: String,
    created_in: Duration,
    lag: Option<Duration>,
    /// Per claim stretch (claim runs only).
    stretches: Option<[Summary; 3]>,
    /// The provisioner's own `provisioner_provision_duration_seconds` (from taking up a claim
    /// to its PV created): p50 and p99 as bucket bounds, and the count.
    provision_call: Option<[(Duration, u64); 2]>,
    /// The provisioner's `provisioner_queue_wait_seconds{kind="claim"}` (a changed claim
    /// waiting for a worker): p50 and p99 as bucket bounds, and the count.
    queue_wait: Option<[(Duration, u64); 2]>,
    /// The service's `<service>_events_dropped_total` (the provisioner's, podmanager's).
    events_dropped: Option<f64>,
    /// When the last pod was created, scheduled, Ready (PodManager runs only), from the first
    /// create.
    pods: Option<[Option<Duration>; 3]>,
    spent: Vec<Spent>,
    /// What the API server served during the run, largest summed time first.
    requests: Vec<((String, String), (f64, f64))>,
}

/// Reads every process now: ours, the kubelets if any, the control plane's components.
fn read_all(ours: &[&Proc], cluster: &RealCluster) -> anyhow::Result<Vec<(String, ProcStats)>> {
    let mut out = Vec::new();
    for p in ours {
        out.push((short(&p.name).to_owned(), p.stats()?));
    }
    out.extend(cluster.stats()?);
    Ok(out)
}

fn spent(before: Vec<(String, ProcStats)>, after: Vec<(String, ProcStats)>) -> Vec<Spent> {
    before
        .into_iter()
        .zip(after)
        .map(|((name, before), (_, after))| Spent {
            name,
            before,
            after,
        })
        .collect()
}

/// `n` NFS claims to Bound through the real PV controller and the provisioner; with `timing`,
/// pvc-timing too and the wait is for its annotations on every claim.
async fn claims_run(
    env: &Env,
    plan: &Plan,
    binaries: &Path,
    n: usize,
    timing: bool,
) -> anyhow::Result<RealRun> {
    let tag = if timing { "timing" } else { "claims" };
    let cluster = RealCluster::start(
        env,
        &format!("cp-{tag}-{n}"),
        binaries,
        plan.real_kube_api_qps,
    )
    .await?;
    storage_setup(&cluster.client).await?;
    let export = env.work.join(format!("cp-{tag}-export-{n}"));
    std::fs::create_dir_all(&export)?;
    let mut ours: Vec<Service> = vec![
        services::provisioner(
            env,
            &format!("provisioner-cp-{tag}-{n}"),
            &cluster.kubeconfig,
            &export,
            Cores::Any,
        )
        .await?,
    ];
    if timing {
        let cert = Cert::generate(&env.work.join(format!("cp-{tag}-cert-{n}")))?;
        let t = services::pvc_timing(
            env,
            &format!("pvc-timing-cp-{n}"),
            &cluster.kubeconfig,
            &cert,
            Cores::Any,
        )
        .await?;
        register_pvc_timing(&cluster.client, &cert, t.webhook_port).await?;
        ours.push(t);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), NAMESPACE);
    let line = timeline(&cluster.client);
    let (timed, timed_watch) = count_done(claims.clone(), claim_timed);
    let procs: Vec<&Proc> = ours.iter().map(|s| &s.proc).collect();
    let before = read_all(&procs, &cluster)?;
    let served_before = apiserver::read(&cluster.client).await?;
    let started = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("c{i:05}")).collect();
    create_all(
        &claims,
        names
            .iter()
            .map(|name| fixtures::claim(name, "nfs"))
            .collect(),
    )
    .await?;
    let created = Instant::now();
    let done = if timing {
        wait_count(&timed, n, plan.real_limit).await
    } else {
        wait_count(&line.bound, n, plan.real_limit).await
    };
    let after = read_all(&procs, &cluster)?;
    let requests = apiserver::served(&served_before, &apiserver::read(&cluster.client).await?);
    line.task.abort();
    timed_watch.abort();
    let metrics = ours[0].metrics().await?;
    let provision_call = p50_p99(
        &metrics,
        "provisioner_provision_duration_seconds",
        &[("class", "nfs")],
    );
    let queue_wait = p50_p99(
        &metrics,
        "provisioner_queue_wait_seconds",
        &[("kind", "claim")],
    );
    let events_dropped =
        ballast_runtime::metrics::sample(&metrics, "provisioner_events_dropped_total", &[]);
    let marks: Vec<Marks> = line
        .marks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .copied()
        .collect();
    let [a, b, c] = stretches(&marks);
    drop(procs);
    for s in ours {
        s.proc.stop().await;
    }
    cluster.stop().await;
    Ok(RealRun {
        what: if timing {
            format!(
                "{n} claims → Bound, `pvc-timing` and `webhook-trigger` on each (provisioner, pvc-timing)"
            )
        } else {
            format!("{n} NFS claims → Bound (provisioner)")
        },
        created_in: created - started,
        lag: done.map(|d| d - created),
        stretches: Some([summarize(a), summarize(b), summarize(c)]),
        provision_call,
        queue_wait,
        events_dropped,
        pods: None,
        spent: spent(before, after),
        requests,
    })
}

/// `n` PodManagers of 3 pods to converged, through the real scheduler and simulated kubelets.
async fn podmanager_run(
    env: &Env,
    plan: &Plan,
    binaries: &Path,
    n: usize,
) -> anyhow::Result<RealRun> {
    let cluster =
        RealCluster::start(env, "cp-podmanager", binaries, plan.real_kube_api_qps).await?;
    let client = &cluster.client;
    services::namespace(client, services::SYSTEM_NAMESPACE).await?;
    services::namespace(client, NAMESPACE).await?;
    kubeops::wait_default_service_account(client, NAMESPACE).await?;
    kubeops::install_podmanager_crd(client, &env.bin("podmanager")).await?;
    let nodes = (n * 3).div_ceil(PODS_PER_NODE).max(3);
    let kubelets = cluster::kubelets(env, &cluster.kubeconfig, nodes).await?;
    let pm = services::podmanager(env, "podmanager-cp", &cluster.kubeconfig, Cores::Any).await?;
    let api = kubeops::podmanagers(client.clone(), NAMESPACE);
    let (count, watch) = count_done(api.clone(), pm_converged);
    let pod_marks = pod_timeline(client);
    let before = read_all(&[&pm.proc, &kubelets], &cluster)?;
    let served_before = apiserver::read(client).await?;
    let started = Instant::now();
    create_all(&api, fixtures::podmanagers(n)).await?;
    let created = Instant::now();
    let done = wait_count(&count, n, plan.real_limit).await;
    let after = read_all(&[&pm.proc, &kubelets], &cluster)?;
    let requests = apiserver::served(&served_before, &apiserver::read(client).await?);
    let metrics = pm.metrics().await?;
    let events_dropped =
        ballast_runtime::metrics::sample(&metrics, "podmanager_events_dropped_total", &[]);
    watch.abort();
    pod_marks.1.abort();
    let pods = {
        let marks = pod_marks.0.lock().unwrap_or_else(|e| e.into_inner());
        let last = |i: usize| -> Option<Duration> {
            let all: Option<Vec<Instant>> = marks.values().map(|m| m[i]).collect();
            let latest = all?.into_iter().max()?;
            (marks.len() >= n * 3).then(|| latest.saturating_duration_since(started))
        };
        [last(0), last(1), last(2)]
    };
    pm.proc.stop().await;
    kubelets.stop().await;
    cluster.stop().await;
    Ok(RealRun {
        what: format!("{n} PodManagers × 3 → all Ready (podmanager; {nodes} simulated nodes)"),
        created_in: created - started,
        lag: done.map(|d| d - created),
        stretches: None,
        provision_call: None,
        queue_wait: None,
        events_dropped,
        pods: Some(pods),
        spent: spent(before, after),
        requests,
    })
}

pub async fn run(env: &Env, plan: &Plan, binaries: &Path) -> anyhow::Result<Section> {
    let mut runs = Vec::new();
    for run in &plan.real_runs {
        runs.push(match run {
            RealRunKind::Claims => claims_run(env, plan, binaries, plan.real_claims, false).await?,
            RealRunKind::Timing => claims_run(env, plan, binaries, plan.real_claims, true).await?,
            RealRunKind::Podmanagers => {
                podmanager_run(env, plan, binaries, plan.podmanagers).await?
            }
        });
    }
    let qps = plan.real_kube_api_qps;
    let mut sec = Section::new("control-plane", "Controllers on a real control plane");
    sec.para(&format!(
        "The services' binaries against a real control plane started by `kube-sim \
         control-plane` from Kubernetes binaries ({}: etcd, kube-apiserver, \
         kube-controller-manager, kube-scheduler; no kubelet: `kube-sim nodes` simulates them for \
         the pods), a fresh one for each run, everything unpinned on this machine. The controller \
         manager and the scheduler run with `--kube-api-qps={qps} --kube-api-burst={}` (Kubernetes \
         defaults to 20/30 and 50/100; production clusters raise them). Objects are created {} at \
         a time; \"last create → done\" is the lag from the last create's answer until a watch sees \
         every object done.",
        version(binaries).await,
        qps * 2,
        kubeops::IN_FLIGHT,
    ));
    let mut t = Table::new(["run", "created in", "last create → done"]);
    for r in &runs {
        t.row([
            r.what.clone(),
            fmt_duration(r.created_in),
            r.lag
                .map_or(format!("not done in {:?}", plan.real_limit), fmt_duration),
        ]);
    }
    sec.table(&t);
    sec.para(
        "Each claim's way, from the benchmark's own watches of the claims and the volumes (the \
         same API server's watch delay on both ends): created → handed over is the PV \
         controller's (it annotates the claim `volume.kubernetes.io/storage-provisioner`), handed \
         over → PV created is the provisioner's, PV created → Bound the PV controller's again.",
    );
    let mut w = Table::new(["run", "stretch", "whose", "p50", "p99", "max", "claims"]);
    for r in &runs {
        let Some(s) = &r.stretches else { continue };
        let names = [
            ("created → handed over", "PV controller"),
            ("handed over → PV created", "provisioner"),
            ("PV created → Bound", "PV controller"),
        ];
        for ((stretch, whose), s) in names.iter().zip(s) {
            w.row([
                r.what.clone(),
                (*stretch).to_owned(),
                (*whose).to_owned(),
                fmt_duration(s.p50),
                fmt_duration(s.p99),
                fmt_duration(s.max),
                s.count.to_string(),
            ]);
        }
    }
    sec.table(&w);
    let calls: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let [(p50, n), (p99, _)] = r.provision_call?;
            let waited = r.queue_wait.map_or(String::new(), |[(w50, _), (w99, _)]| {
                format!(
                    ", after waiting for a worker p50 ≤ {}, p99 ≤ {}",
                    fmt_duration(w50),
                    fmt_duration(w99)
                )
            });
            let dropped = r
                .events_dropped
                .map_or(String::new(), |d| format!(", {d:.0} events dropped"));
            Some(format!(
                "{}: p50 ≤ {}, p99 ≤ {} ({n} volumes){waited}{dropped}",
                r.what,
                fmt_duration(p50),
                fmt_duration(p99)
            ))
        })
        .collect();
    if !calls.is_empty() {
        sec.para(&format!(
            "Of the provisioner's stretch, the part from taking the claim up to its PV created (its \
             own `provisioner_provision_duration_seconds`, as bucket bounds), and the claim's \
             wait in its work queue before that (`provisioner_queue_wait_seconds{{kind=\"claim\"}}`, \
             every change of every claim): {}. The rest is the claim's update reaching the \
             provisioner's watch.",
            calls.join("; ")
        ));
    }
    let mut pods = Table::new([
        "run",
        "last pod created",
        "last pod scheduled",
        "last pod Ready",
        "last PodManager converged",
    ]);
    for r in &runs {
        let Some(marks) = r.pods else { continue };
        let cell = |d: Option<Duration>| d.map_or("—".to_owned(), fmt_duration);
        pods.row([
            r.what.clone(),
            cell(marks[0]),
            cell(marks[1]),
            cell(marks[2]),
            cell(r.lag.map(|l| l + r.created_in)),
        ]);
    }
    if !pods.is_empty() {
        sec.para(
            "The PodManager run step by step, from the first PodManager's create, as a watch of \
             the pods saw them: created (podmanager), scheduled (kube-scheduler), Ready (the \
             simulated kubelets), and the last PodManager's status saying 3 of 3 (podmanager).",
        );
        sec.table(&pods);
        let dropped: Vec<String> = runs
            .iter()
            .filter(|r| r.pods.is_some())
            .filter_map(|r| Some(format!("{}: {:.0}", r.what, r.events_dropped?)))
            .collect();
        if !dropped.is_empty() {
            sec.para(&format!(
                "Events podmanager dropped (`podmanager_events_dropped_total`: more than 1,000 \
                 waited to be written): {}.",
                dropped.join("; ")
            ));
        }
    }
    sec.para(
        "Who spent what during each run (from the first create until done): CPU is user + system \
         time (`/proc/<pid>/stat`), the share is of all the processes listed; peak is the \
         process's RSS high-water mark (`VmHWM`) since it started.",
    );
    let mut p = Table::new(["run", "process", "CPU", "share", "RSS after", "RSS peak"]);
    for r in &runs {
        let total: f64 = r
            .spent
            .iter()
            .map(|s| s.after.cpu.saturating_sub(s.before.cpu).as_secs_f64())
            .sum();
        for s in &r.spent {
            let cpu = s.after.cpu.saturating_sub(s.before.cpu).as_secs_f64();
            p.row([
                r.what.clone(),
                s.name.clone(),
                cpu_cell(s.before, s.after),
                format!("{:.0} %", 100.0 * cpu / total.max(f64::EPSILON)),
                fmt_mb(s.after.rss_kib),
                fmt_mb(s.after.hwm_kib),
            ]);
        }
    }
    sec.table(&p);
    sec.para(&format!(
        "What the API server served during each run (from its own \
         `apiserver_request_duration_seconds`: every client's requests, watches left out, as their \
         time is how long they stayed open), the \
         {REQUEST_ROWS} largest by summed handling time."
    ));
    let mut q = Table::new(["run", "verb", "resource", "requests", "time summed"]);
    for r in &runs {
        for ((verb, resource), (n, secs)) in r.requests.iter().take(REQUEST_ROWS) {
            q.row([
                r.what.clone(),
                verb.clone(),
                resource.clone(),
                format!("{n:.0}"),
                format!("{secs:.1} s"),
            ]);
        }
    }
    sec.table(&q);
    Ok(sec)
}

/// Rows of the API server's requests shown per run.
const REQUEST_ROWS: usize = 6;

/// What `kube-apiserver --version` says (e.g. `Kubernetes v1.36.2`).
async fn version(binaries: &Path) -> String {
    let out = tokio::process::Command::new(binaries.join("kube-apiserver"))
        .arg("--version")
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => "Kubernetes of unknown version".to_owned(),
    }
}

fn short(name: &str) -> &str {
    ["provisioner", "pvc-timing", "podmanager", "kubelets"]
        .into_iter()
        .find(|s| name.starts_with(s))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claims_way_splits_into_whose_stretch_it_was() {
        let t0 = Instant::now();
        let at = |ms: u64| Some(t0 + Duration::from_millis(ms));
        let marks = [
            Marks {
                seen: at(0),
                handed_over: at(100),
                volume: at(130),
                bound: at(400),
            },
            // Not bound yet: left out of every stretch.
            Marks {
                seen: at(0),
                handed_over: at(50),
                volume: at(60),
                bound: None,
            },
        ];
        let [a, b, c] = stretches(&marks);
        assert_eq!(a, [Duration::from_millis(100)]);
        assert_eq!(b, [Duration::from_millis(30)]);
        assert_eq!(c, [Duration::from_millis(270)]);
    }

    #[test]
    fn process_names_lose_their_run_suffix() {
        assert_eq!(short("provisioner-cp-claims-200"), "provisioner");
        assert_eq!(short("pvc-timing-cp-200"), "pvc-timing");
        assert_eq!(short("kube-apiserver"), "kube-apiserver");
    }
}
