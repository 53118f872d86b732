//! Resident memory of each service idle, of the guard with many nodes, and the peak while it
//! relists them.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::areas::admission;
use crate::fixtures;
use crate::kubeops;
use crate::plan::Plan;
use crate::procs::{Cores, Env, Proc, ProcStats, settle};
use crate::report::{Section, Table};
use crate::services::{self, Cert};
use crate::sim::{Proxy, Sim};
use crate::stats::fmt_mb;

/// How long RSS may take to settle after start or a load.
const SETTLE: Duration = Duration::from_secs(20);
/// Writes pushed through the simulator before a relist: more than its 10 000-event history.
pub const HISTORY_PUSH: usize = 10_100;
/// How long a relist may take.
const RELIST_LIMIT: Duration = Duration::from_secs(120);

/// What a forced relist cost.
pub struct Relist {
    /// Peak RSS from just before the watch was cut until the relist settled.
    pub peak_kib: u64,
    pub after_kib: u64,
    /// Bytes the service read from the API server after the cut.
    pub bytes: u64,
    pub took: Duration,
}

/// Makes `proc` (connected through `proxy`) relist: every connection cut while `push_history`
/// (a [`kubeops::push_history`] of the kind whose list is measured) moves that kind's history
/// past its resourceVersion; waits until it has read at least `min_bytes` again and its RSS
/// settled. None when it read less (no relist seen) within the limit.
pub async fn relist(
    proxy: &Proxy,
    proc: &Proc,
    push_history: impl Future<Output = anyhow::Result<()>>,
    min_bytes: u64,
) -> anyhow::Result<Option<Relist>> {
    // The API server looks down while the history moves on: a bookmark cannot bring the
    // service's resourceVersion up to date, so its watch must start again with a list.
    proxy.pause();
    push_history.await?;
    proc.reset_peak()?;
    let before = proxy.bytes();
    let started = Instant::now();
    proxy.resume();
    loop {
        let read = proxy.bytes() - before;
        if read >= min_bytes {
            break;
        }
        if started.elapsed() > RELIST_LIMIT {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let after = settle(proc, SETTLE).await?;
    Ok(Some(Relist {
        peak_kib: after.hwm_kib,
        after_kib: after.rss_kib,
        bytes: proxy.bytes() - before,
        took,
    }))
}

pub fn relist_cells(steady: ProcStats, r: &Option<Relist>) -> [String; 3] {
    match r {
        Some(r) => [
            fmt_mb(r.peak_kib),
            format!("{:.2}×", r.peak_kib as f64 / steady.rss_kib.max(1) as f64),
            format!(
                "{:.1} MB in {:.1} s",
                r.bytes as f64 / 1e6,
                r.took.as_secs_f64()
            ),
        ],
        None => ["no relist seen".into(), "—".into(), "—".into()],
    }
}

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let cert = Cert::generate(&env.work.join("memory-cert"))?;
    let mut idle = Table::new(["service", "RSS idle", "of which anonymous", "peak (VmHWM)"]);

    // Idle: each service on an empty three-node cluster, caches synced.
    let sim = Sim::start(env, "memory-sim", &["--nodes", "3"]).await?;
    services::namespace(&sim.client, services::SYSTEM_NAMESPACE).await?;
    kubeops::install_podmanager_crd(&sim.client, &env.bin("podmanager")).await?;
    let kc = sim.kubeconfig.clone();
    let started = vec![
        services::guard(env, "eviction-guard", &kc, &cert, Cores::Any).await?,
        services::pvc_timing(env, "pvc-timing", &kc, &cert, Cores::Any).await?,
        services::provisioner(
            env,
            "provisioner",
            &kc,
            &env.work.join("export"),
            Cores::Any,
        )
        .await?,
        services::podmanager(env, "podmanager", &kc, Cores::Any).await?,
    ];
    for s in &started {
        let st = settle(&s.proc, SETTLE).await?;
        idle.row([
            s.proc.name.clone(),
            fmt_mb(st.rss_kib),
            fmt_mb(st.anon_kib),
            fmt_mb(st.hwm_kib),
        ]);
    }
    for s in started {
        s.proc.stop().await;
    }
    let (null, _) = admission::null_webhook(env, &cert).await?;
    let st = settle(&null, SETTLE).await?;
    idle.row([
        "null webhook (floor, one core)".to_owned(),
        fmt_mb(st.rss_kib),
        fmt_mb(st.anon_kib),
        fmt_mb(st.hwm_kib),
    ]);
    null.stop().await;
    let sim_idle = sim.stats()?;
    sim.proc.stop().await;

    let mut guard = Table::new([
        "nodes",
        "guard RSS steady",
        "of which anonymous",
        "relist peak",
        "peak / steady",
        "relist read (from the API's return)",
        "kube-sim RSS",
    ]);
    for &n in &plan.guard_nodes {
        let (steady, r, sim_rss) = guard_with_nodes(env, &cert, n, Cores::Any, true).await?;
        let [peak, ratio, read] = relist_cells(steady, &r);
        guard.row([
            n.to_string(),
            fmt_mb(steady.rss_kib),
            fmt_mb(steady.anon_kib),
            peak,
            ratio,
            read,
            fmt_mb(sim_rss),
        ]);
    }

    // The same guard under runtime settings a deployment can choose without a rebuild: one
    // core (the runtime then starts one worker thread) and glibc's malloc with fewer arenas.
    let n = plan.guard_nodes.last().copied().unwrap_or(0);
    let mut variants = Table::new([
        "variant",
        "guard RSS idle",
        &format!("guard RSS with {n} nodes"),
    ]);
    let one = env.server_core.map_or(Cores::Any, Cores::One);
    let arena = |e: &Env| {
        let mut e = e.clone();
        e.child_env.push(("MALLOC_ARENA_MAX".into(), "2".into()));
        e
    };
    for (label, e, cores) in [
        (
            "default (all cores, glibc malloc defaults)",
            env.clone(),
            Cores::Any,
        ),
        ("one core (`taskset`: one runtime worker)", env.clone(), one),
        ("`MALLOC_ARENA_MAX=2`", arena(env), Cores::Any),
        ("one core and `MALLOC_ARENA_MAX=2`", arena(env), one),
    ] {
        let (idle, _, _) = guard_with_nodes(&e, &cert, 0, cores, false).await?;
        let (loaded, _, _) = guard_with_nodes(&e, &cert, n, cores, false).await?;
        variants.row([
            label.to_owned(),
            fmt_mb(idle.rss_kib),
            fmt_mb(loaded.rss_kib),
        ]);
    }

    let mut sec = Section::new("memory", "Memory");
    sec.para(
        "Resident memory (VmRSS from `/proc/<pid>/status`) of each service's binary (`just bench`: \
         the static `dist` binaries the images hold), unpinned (the runtime sizes its worker \
         pool to the machine's cores), once its caches are synced and RSS stopped moving. RSS \
         counts the executable's pages mapped too (file-backed, shared by every copy of the \
         binary on a node): the kernel maps up to 64 KiB of the file around each page fault \
         (fault-around), so code run at start-up all over the executable maps most of it. The \
         anonymous part is what the process allocated. Idle: an empty simulated cluster of three nodes.",
    );
    sec.table(&idle);
    sec.para(&format!(
        "eviction-guard with many worker nodes, each shaped like a kubelet-registered Node \
         (labels, annotations, managed fields, conditions, 30 images: {:.1} KB of JSON). The relist: \
         the guard talks to kube-sim through a TCP proxy; the proxy cuts every connection and \
         refuses new ones while {HISTORY_PUSH} writes push the guard's resourceVersion out of \
         the simulator's watch history; then the watch resumes, gets 410 Expired and lists \
         every node again. Peak = VmHWM from just before the proxy lets the guard back (reset through `/proc/<pid>/clear_refs`) until RSS settles. kube-sim \
         idle with three nodes: {}.",
        serde_json::to_vec(&fixtures::node("node-1", 1))?.len() as f64 / 1000.0,
        fmt_mb(sim_idle.rss_kib)
    ));
    sec.table(&guard);
    sec.para("Runtime and allocator settings, measured on the same guard (no rebuild):");
    sec.table(&variants);
    Ok(sec)
}

/// The guard's settled RSS on a cluster of `n` kubelet-shaped nodes, and with `relisting` the
/// cost of a relist; also kube-sim's RSS.
async fn guard_with_nodes(
    env: &Env,
    cert: &Cert,
    n: usize,
    cores: Cores,
    relisting: bool,
) -> anyhow::Result<(ProcStats, Option<Relist>, u64)> {
    let sim = Sim::start(env, &format!("guard-sim-{n}"), &["--nodes", "0"]).await?;
    services::namespace(&sim.client, services::SYSTEM_NAMESPACE).await?;
    let nodes = Api::<Node>::all(sim.client.clone());
    let names: Vec<String> = (1..=n).map(|i| format!("worker-{i}")).collect();
    let objects = (1..=n).zip(&names).map(|(i, name)| fixtures::node(name, i));
    kubeops::create_all(&nodes, objects.collect()).await?;
    let node_bytes = serde_json::to_vec(&fixtures::node("node-1", 1))?.len() as u64;
    let proxy = Proxy::start(sim.port).await?;
    let kc = sim.kubeconfig_via(proxy.port, &env.work.join(format!("guard-{n}.kubeconfig")))?;
    let g = services::guard(env, &format!("eviction-guard-{n}"), &kc, cert, cores).await?;
    let steady = settle(&g.proc, SETTLE).await?;
    let r = if relisting {
        let push = kubeops::push_history(&nodes, &names, HISTORY_PUSH);
        relist(&proxy, &g.proc, push, node_bytes * n as u64 / 2).await?
    } else {
        None
    };
    let sim_rss = sim.stats()?.rss_kib;
    g.proc.stop().await;
    sim.proc.stop().await;
    Ok((steady, r, sim_rss))
}
