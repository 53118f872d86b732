//! Controllers on kube-sim: claims to Bound (provisioner + the simulator's PV controller),
//! pvc-timing's annotations on every claim, PodManagers to converged; each with the
//! simulator's own CPU and memory beside ours, and each service's memory steady and while it
//! relists.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::areas::memory::{HISTORY_PUSH, relist, relist_cells};
use crate::fixtures;
use crate::kubeops::{self, create_all};
use crate::plan::Plan;
use crate::procs::{Cores, Env, ProcStats, settle};
use crate::report::{Section, Table};
use crate::services::{self, Cert, Service};
use crate::sim::{Proxy, Sim};
use crate::stats::{fmt_duration, fmt_mb};

pub(crate) const NAMESPACE: &str = "bench";
/// The provisioner's NFS provisioner name (its StorageClass `nfs`).
const NFS_PROVISIONER: &str = "ballast.dev/nfs";

/// Counts objects satisfying `done` from a watch; the count only goes up once all are seen.
pub(crate) fn count_done<K>(
    api: Api<K>,
    done: fn(&K) -> bool,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let task = tokio::spawn(async move {
        let mut names = HashSet::new();
        let _ = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .try_for_each(|o| {
                let name = o.meta().name.clone().unwrap_or_default();
                if done(&o) {
                    names.insert(name);
                } else {
                    names.remove(&name);
                }
                c.store(names.len(), Ordering::Relaxed);
                futures::future::ready(Ok(()))
            })
            .await;
    });
    (count, task)
}

/// Waits until `count` reaches `n`; the time it did, or None past `limit`. Samples the peak
/// RSS of `pids` meanwhile.
pub(crate) async fn wait_count(count: &AtomicUsize, n: usize, limit: Duration) -> Option<Instant> {
    let started = Instant::now();
    loop {
        if count.load(Ordering::Relaxed) >= n {
            return Some(Instant::now());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn claim_bound(c: &PersistentVolumeClaim) -> bool {
    c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
}

pub(crate) fn claim_timed(c: &PersistentVolumeClaim) -> bool {
    let ann = c.metadata.annotations.as_ref();
    let timing = ann.and_then(|a| a.get("pvc-timing"));
    let bound = timing
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .is_some_and(|v| v["currentPhase"] == "Bound");
    bound && ann.is_some_and(|a| a.contains_key("webhook-trigger"))
}

pub(crate) fn pm_converged(pm: &DynamicObject) -> bool {
    pm.data["status"]["readyReplicas"] == json!(3)
        && pm.data["status"]["currentReplicas"] == json!(3)
}

/// The namespaces and the `nfs` StorageClass of the provisioner's NFS backend.
pub(crate) async fn storage_setup(client: &kube::Client) -> anyhow::Result<()> {
    services::namespace(client, services::SYSTEM_NAMESPACE).await?;
    services::namespace(client, NAMESPACE).await?;
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "nfs"}, "provisioner": NFS_PROVISIONER, "reclaimPolicy": "Delete"}))?;
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await?;
    Ok(())
}

/// One controller run's figures.
struct Run {
    what: String,
    created_in: Duration,
    lag: Option<Duration>,
    ours: Vec<(String, ProcStats, ProcStats)>,
    sim_before: ProcStats,
    sim_after: ProcStats,
}

pub(crate) fn cpu_cell(before: ProcStats, after: ProcStats) -> String {
    format!(
        "{:.1} s",
        (after.cpu.saturating_sub(before.cpu)).as_secs_f64()
    )
}

struct MemRow {
    service: String,
    load: String,
    steady: ProcStats,
    relist: [String; 3],
}

/// Registers pvc-timing's webhook with the API server, as its manifests do (fail open).
pub(crate) async fn register_pvc_timing(
    client: &kube::Client,
    cert: &Cert,
    port: u16,
) -> anyhow::Result<()> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(&cert.ca_pem);
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "pvc-timing"},
        "webhooks": [{
            "name": "pvc-timing.ballast.dev",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "Never",
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                "operator": "NotIn", "values": ["kube-system", "ballast-system"]}]},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["persistentvolumeclaims", "persistentvolumeclaims/status"],
                       "scope": "Namespaced"}],
        }],
    }))?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mwc)
        .await?;
    Ok(())
}

/// N claims to Bound; with `timing`, pvc-timing too and the wait is for its annotations.
async fn claims_run(
    env: &Env,
    plan: &Plan,
    n: usize,
    timing: bool,
    mem: &mut Vec<MemRow>,
) -> anyhow::Result<Run> {
    let tag = if timing { "timing" } else { "claims" };
    let sim = Sim::start(
        env,
        &format!("{tag}-sim-{n}"),
        &["--nodes", "1", "--pv-binder"],
    )
    .await?;
    storage_setup(&sim.client).await?;
    // One proxy per service, so a relist's bytes are its own.
    let proxy = Proxy::start(sim.port).await?;
    let kc = sim.kubeconfig_via(proxy.port, &env.work.join(format!("{tag}-{n}.kubeconfig")))?;
    let timing_proxy = Proxy::start(sim.port).await?;
    let timing_kc = sim.kubeconfig_via(
        timing_proxy.port,
        &env.work.join(format!("{tag}-{n}-t.kubeconfig")),
    )?;
    let export = env.work.join(format!("{tag}-export-{n}"));
    std::fs::create_dir_all(&export)?;
    let mut ours: Vec<Service> = vec![
        services::provisioner(
            env,
            &format!("provisioner-{tag}-{n}"),
            &kc,
            &export,
            Cores::Any,
        )
        .await?,
    ];
    let cert = Cert::generate(&env.work.join(format!("{tag}-cert-{n}")))?;
    if timing {
        let t = services::pvc_timing(
            env,
            &format!("pvc-timing-{n}"),
            &timing_kc,
            &cert,
            Cores::Any,
        )
        .await?;
        register_pvc_timing(&sim.client, &cert, t.webhook_port).await?;
        ours.push(t);
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sim.client.clone(), NAMESPACE);
    let (count, watch) = count_done(
        claims.clone(),
        if timing { claim_timed } else { claim_bound },
    );
    let before: Vec<ProcStats> = ours
        .iter()
        .map(|s| s.proc.stats())
        .collect::<Result<_, _>>()?;
    let sim_before = sim.stats()?;
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
    let done = wait_count(&count, n, plan.converge_limit).await;
    watch.abort();
    let sim_after = sim.stats()?;
    let mut run_ours = Vec::new();
    for (s, b) in ours.iter().zip(before) {
        run_ours.push((s.proc.name.clone(), b, s.proc.stats()?));
    }
    // Memory with every claim Bound, then while relisting them (the provisioner's in the run
    // without pvc-timing).
    for (s, proxy) in ours.iter().zip([&proxy, &timing_proxy]) {
        if timing && short(&s.proc.name) == "provisioner" {
            continue;
        }
        let steady = settle(&s.proc, Duration::from_secs(10)).await?;
        let r = if done.is_some() {
            let push = kubeops::push_history(&claims, &names, HISTORY_PUSH);
            relist(proxy, &s.proc, push, n as u64 * 500).await?
        } else {
            None
        };
        mem.push(MemRow {
            service: short(&s.proc.name).to_owned(),
            load: format!("{n} claims Bound"),
            steady,
            relist: relist_cells(steady, &r),
        });
    }
    for s in ours {
        s.proc.stop().await;
    }
    sim.proc.stop().await;
    Ok(Run {
        what: if timing {
            format!(
                "{n} claims → `pvc-timing` shows Bound and `webhook-trigger` set (provisioner and pvc-timing)"
            )
        } else {
            format!("{n} NFS claims → all Bound (provisioner)")
        },
        created_in: created - started,
        lag: done.map(|d| d - created),
        ours: run_ours,
        sim_before,
        sim_after,
    })
}

async fn podmanager_run(
    env: &Env,
    plan: &Plan,
    n: usize,
    mem: &mut Vec<MemRow>,
) -> anyhow::Result<Run> {
    let sim = Sim::start(
        env,
        "podmanager-sim",
        &["--nodes", "3", "--scheduler", "--kubelet"],
    )
    .await?;
    services::namespace(&sim.client, services::SYSTEM_NAMESPACE).await?;
    services::namespace(&sim.client, NAMESPACE).await?;
    kubeops::install_podmanager_crd(&sim.client, &env.bin("podmanager")).await?;
    let proxy = Proxy::start(sim.port).await?;
    let kc = sim.kubeconfig_via(proxy.port, &env.work.join("podmanager.kubeconfig"))?;
    let pm = services::podmanager(env, "podmanager", &kc, Cores::Any).await?;
    let api = kubeops::podmanagers(sim.client.clone(), NAMESPACE);
    let (count, watch) = count_done(api.clone(), pm_converged);
    let before = pm.proc.stats()?;
    let sim_before = sim.stats()?;
    let started = Instant::now();
    create_all(&api, fixtures::podmanagers(n)).await?;
    let created = Instant::now();
    let done = wait_count(&count, n, plan.converge_limit).await;
    watch.abort();
    let sim_after = sim.stats()?;
    let after = pm.proc.stats()?;
    let steady = settle(&pm.proc, Duration::from_secs(10)).await?;
    let r = if done.is_some() {
        // the pods are most of what it lists
        let pods: Api<Pod> = Api::namespaced(sim.client.clone(), NAMESPACE);
        let some = pods.list(&ListParams::default().limit(256)).await?;
        let names: Vec<String> = some
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        let push = kubeops::push_history(&pods, &names, HISTORY_PUSH);
        relist(&proxy, &pm.proc, push, n as u64 * 4 * 500).await?
    } else {
        None
    };
    mem.push(MemRow {
        service: "podmanager".into(),
        load: format!("{n} PodManagers, {} pods", n * 3),
        steady,
        relist: relist_cells(steady, &r),
    });
    pm.proc.stop().await;
    sim.proc.stop().await;
    Ok(Run {
        what: format!(
            "{n} PodManagers × 3 → all Ready (podmanager; kube-sim scheduler and kubelets)"
        ),
        created_in: created - started,
        lag: done.map(|d| d - created),
        ours: vec![("podmanager".into(), before, after)],
        sim_before,
        sim_after,
    })
}

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let mut runs = Vec::new();
    let mut mem = Vec::new();
    for &n in &plan.claims {
        runs.push(claims_run(env, plan, n, false, &mut mem).await?);
    }
    runs.push(claims_run(env, plan, plan.timing_claims, true, &mut mem).await?);
    runs.push(podmanager_run(env, plan, plan.podmanagers, &mut mem).await?);

    let mut t = Table::new([
        "run",
        "created in",
        "last create → done",
        "our CPU",
        "our RSS after",
        "kube-sim CPU",
        "kube-sim RSS after",
    ]);
    for r in &runs {
        t.row([
            r.what.clone(),
            fmt_duration(r.created_in),
            r.lag.map_or(
                format!("not done in {:?}", plan.converge_limit),
                fmt_duration,
            ),
            r.ours
                .iter()
                .map(|(n, b, a)| format!("{}: {}", short(n), cpu_cell(*b, *a)))
                .collect::<Vec<_>>()
                .join(", "),
            r.ours
                .iter()
                .map(|(n, _, a)| format!("{}: {}", short(n), fmt_mb(a.rss_kib)))
                .collect::<Vec<_>>()
                .join(", "),
            cpu_cell(r.sim_before, r.sim_after),
            fmt_mb(r.sim_after.rss_kib),
        ]);
    }
    let mut m = Table::new([
        "service",
        "load",
        "RSS steady",
        "relist peak",
        "peak / steady",
        "relist read (from the API's return)",
    ]);
    for r in &mem {
        let [peak, ratio, read] = r.relist.clone();
        m.row([
            r.service.clone(),
            r.load.clone(),
            fmt_mb(r.steady.rss_kib),
            peak,
            ratio,
            read,
        ]);
    }
    let mut sec = Section::new("controllers", "Controllers on kube-sim");
    sec.para(&format!(
        "The services' binaries against `kube-sim` (its PV controller, scheduler and kubelets as each run \
         needs), unpinned, reached through a TCP proxy (for the relist). Objects are created {} at \
         a time; \"last create → done\" is the lag from the last create's answer until a watch sees \
         every object done. CPU is user + system time of the process during the run \
         (`/proc/<pid>/stat`); the simulator's is its own, beside ours. The claims are NFS claims of \
         class `nfs` (ReadWriteMany, 1Mi).",
        kubeops::IN_FLIGHT
    ));
    sec.table(&t);
    sec.para(
        "Memory of the controllers under that load: steady once every object is done and RSS \
         stopped moving; relist as in the Memory section (history pushed past the service's \
         resourceVersion while the proxy refuses connections, then 410 and a fresh list).",
    );
    sec.table(&m);
    Ok(sec)
}

fn short(name: &str) -> &str {
    if name.starts_with("provisioner") {
        "provisioner"
    } else if name.starts_with("pvc-timing") {
        "pvc-timing"
    } else {
        name
    }
}
