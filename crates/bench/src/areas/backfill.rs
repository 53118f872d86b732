//! pvc-timing after a backfill (issue 30): its RSS idle on an empty cluster, then started on a
//! cluster already holding N Bound claims (it writes each one's trigger, and through its own
//! webhook its history, when it first sees them), then after those claims are deleted.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Api;
use kube::api::{DeleteParams, ListParams};

use futures::{StreamExt, TryStreamExt};

use crate::areas::controllers::{
    claim_bound, claim_timed, count_done, register_pvc_timing, wait_count,
};
use crate::fixtures;
use crate::kubeops::{self, create_all};
use crate::plan::Plan;
use crate::procs::{Cores, Env, Proc, ProcStats, free_port};
use crate::report::{Section, Table};
use crate::services::{self, Cert};
use crate::sim::Sim;
use crate::stats::{fmt_duration, fmt_mb};

const NAMESPACE: &str = "bench";
/// Static provisioning: volumes an administrator made, no StorageClass object.
const CLASS: &str = "manual";
/// RSS is steady when it stayed within 1 % over this long.
const STEADY_WINDOW: Duration = Duration::from_secs(5);
/// Longest wait for RSS to become steady.
const STEADY_LIMIT: Duration = Duration::from_secs(60);
/// How often RSS and the open sockets are sampled.
const SAMPLE: Duration = Duration::from_millis(250);

/// One run's figures.
pub struct Figures {
    pub label: String,
    pub claims: usize,
    /// Steady on the empty cluster, caches synced.
    pub idle: ProcStats,
    /// From the start of the second process until every claim shows its trigger and history.
    pub backfill: Option<Duration>,
    /// Most sockets the process held open at once during the backfill.
    pub peak_sockets: usize,
    /// Steady after the backfill (the claims still there), with the peak since start.
    pub backfilled: ProcStats,
    /// Steady after every claim was deleted.
    pub deleted: ProcStats,
    /// `linger` after that, idle.
    pub later: Option<ProcStats>,
}

/// RSS once it stayed within 1 % for [`STEADY_WINDOW`] (or [`STEADY_LIMIT`] passed).
async fn steady(proc: &Proc) -> anyhow::Result<ProcStats> {
    let started = Instant::now();
    let mut window: Vec<(Instant, u64)> = Vec::new();
    loop {
        let now = proc.stats()?;
        let t = Instant::now();
        window.push((t, now.rss_kib));
        window.retain(|(at, _)| t.duration_since(*at) <= STEADY_WINDOW);
        let (lo, hi) = window
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), (_, r)| (lo.min(*r), hi.max(*r)));
        let covered = t.duration_since(window[0].0) >= STEADY_WINDOW - SAMPLE;
        if (covered && (hi - lo) * 100 <= lo) || started.elapsed() > STEADY_LIMIT {
            return Ok(now);
        }
        tokio::time::sleep(SAMPLE).await;
    }
}

/// Sockets the process holds open now.
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// One backfill of `n` claims with `env` (its `child_env` is the variant).
pub async fn backfill(
    env: &Env,
    plan: &Plan,
    label: &str,
    n: usize,
    linger: Duration,
) -> anyhow::Result<Figures> {
    let tag = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>();
    let sim = Sim::start(
        env,
        &format!("backfill-sim-{tag}"),
        &["--nodes", "1", "--pv-binder"],
    )
    .await?;
    services::namespace(&sim.client, services::SYSTEM_NAMESPACE).await?;
    services::namespace(&sim.client, NAMESPACE).await?;
    let cert = Cert::generate(&env.work.join(format!("backfill-cert-{tag}")))?;
    // One port for both processes, registered once: while neither listens, the webhook
    // fails open and the claims are stored without a history, as before an install.
    let webhook_port = free_port()?;
    register_pvc_timing(&sim.client, &cert, webhook_port).await?;

    // Idle: the same binary and flags on the empty cluster.
    let idle_proc = services::pvc_timing_on(
        env,
        &format!("pvc-timing-idle-{tag}"),
        &sim.kubeconfig,
        &cert,
        Cores::Any,
        webhook_port,
    )
    .await?;
    let idle = steady(&idle_proc.proc).await?;
    idle_proc.proc.stop().await;

    // The cluster pvc-timing is installed into: n claims Bound to their volumes.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sim.client.clone(), NAMESPACE);
    let (bound, watch) = count_done(claims.clone(), claim_bound);
    create_all(
        &Api::<PersistentVolume>::all(sim.client.clone()),
        (0..n)
            .map(|i| fixtures::static_volume(&format!("pv-{i:05}"), CLASS, NAMESPACE, &claim(i)))
            .collect(),
    )
    .await?;
    create_all(
        &claims,
        (0..n)
            .map(|i| fixtures::static_claim(&claim(i), CLASS, &format!("pv-{i:05}")))
            .collect(),
    )
    .await?;
    let all_bound = wait_count(&bound, n, plan.converge_limit).await;
    watch.abort();
    anyhow::ensure!(
        all_bound.is_some(),
        "not every claim Bound within {:?}",
        plan.converge_limit
    );

    // The backfill.
    let (timed, watch) = count_done(claims.clone(), claim_timed);
    let started = Instant::now();
    let t = services::pvc_timing_on(
        env,
        &format!("pvc-timing-backfill-{tag}"),
        &sim.kubeconfig,
        &cert,
        Cores::Any,
        webhook_port,
    )
    .await?;
    let mut peak_sockets = 0;
    let mut backfill = None;
    while started.elapsed() < plan.converge_limit {
        peak_sockets = peak_sockets.max(sockets(t.proc.pid));
        if wait_count(&timed, n, Duration::ZERO).await.is_some() {
            backfill = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let backfilled = steady(&t.proc).await?;

    // Every claim deleted (their volumes are kept: Retain).
    futures::stream::iter(0..n)
        .map(|i| {
            let claims = claims.clone();
            async move {
                claims.delete(&claim(i), &DeleteParams::default()).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(kubeops::IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    let deleting = Instant::now();
    loop {
        let left = claims.list(&ListParams::default().limit(1)).await?;
        if left.items.is_empty() {
            break;
        }
        anyhow::ensure!(
            deleting.elapsed() < plan.converge_limit,
            "claims still there {:?} after their deletion",
            plan.converge_limit
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deleted = steady(&t.proc).await?;
    let later = if linger.is_zero() {
        None
    } else {
        tokio::time::sleep(linger).await;
        Some(t.proc.stats()?)
    };
    t.proc.stop().await;
    sim.proc.stop().await;
    Ok(Figures {
        label: label.to_owned(),
        claims: n,
        idle,
        backfill,
        peak_sockets,
        backfilled,
        deleted,
        later,
    })
}

fn claim(i: usize) -> String {
    format!("c{i:05}")
}

fn ratio(a: u64, idle: u64) -> String {
    format!("{:.2}×", a as f64 / idle.max(1) as f64)
}

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let n = plan.backfill_claims;
    let mut runs = Vec::new();
    for (label, vars) in plan.backfill_variants.iter() {
        let mut e = env.clone();
        e.child_env
            .extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        runs.push(backfill(&e, plan, label, n, plan.backfill_linger).await?);
    }
    let mut t = Table::new([
        "variant",
        "RSS idle (anonymous)",
        &format!("backfill of {n} claims"),
        "peak sockets",
        "RSS after the backfill (anonymous)",
        "peak (VmHWM)",
        &format!("RSS after {n} deletions (anonymous)"),
        "after / idle",
    ]);
    let later = plan.backfill_linger;
    for f in &runs {
        let after = f.later.unwrap_or(f.deleted);
        t.row([
            f.label.clone(),
            format!("{} ({})", fmt_mb(f.idle.rss_kib), fmt_mb(f.idle.anon_kib)),
            f.backfill.map_or(
                format!("not done in {:?}", plan.converge_limit),
                fmt_duration,
            ),
            f.peak_sockets.to_string(),
            format!(
                "{} ({})",
                fmt_mb(f.backfilled.rss_kib),
                fmt_mb(f.backfilled.anon_kib)
            ),
            fmt_mb(f.backfilled.hwm_kib),
            match f.later {
                Some(l) => format!(
                    "{} ({}); {:.0?} later {} ({})",
                    fmt_mb(f.deleted.rss_kib),
                    fmt_mb(f.deleted.anon_kib),
                    later,
                    fmt_mb(l.rss_kib),
                    fmt_mb(l.anon_kib)
                ),
                None => format!(
                    "{} ({})",
                    fmt_mb(f.deleted.rss_kib),
                    fmt_mb(f.deleted.anon_kib)
                ),
            },
            ratio(after.rss_kib, f.idle.rss_kib),
        ]);
    }
    let mut sec = Section::new("pvc-timing", "pvc-timing after a backfill");
    sec.para(&format!(
        "The `pvc-timing` binary (webhook and controller, unpinned) on `kube-sim` with its PV \
         controller. Idle: started on the empty cluster, steady (RSS within 1 % over {:?}). \
         Then, with that process stopped and its webhook failing open, {n} claims and {n} \
         volumes reserved for them (static provisioning, class `{CLASS}`) are created and \
         Bound; each claim is shaped like one `kubectl apply` made on a real cluster \
         ({:.1} KB of JSON: the last-applied copy, managed fields). A second process with the \
         same flags starts on that cluster and writes every claim's `webhook-trigger`, its \
         webhook the `pvc-timing` history; \"backfill\" runs from its start until a watch sees \
         both on every claim; \"peak sockets\" is the most it held open at once meanwhile (the \
         Kubernetes client speaks HTTP/1.1: one connection per request in flight). Then every \
         claim is deleted, {} at a time. RSS is VmRSS, anonymous RssAnon, both steady; the \
         last reading is {:?} later, idle. pvc-timing reconciles {} claims at once, caches \
         them without managed fields or the last-applied copy, and allocates with jemalloc \
         without per-thread caches, whose background thread hands freed memory back to the \
         system within seconds (glibc's malloc kept it: 6.0× the idle RSS before these three, \
         2.06× with the first two; jemalloc with its per-thread caches, which idle worker \
         threads never give back, 1.30×).",
        STEADY_WINDOW,
        serde_json::to_vec(&fixtures::static_claim("c00000", CLASS, "pv-00000"))?.len() as f64
            / 1000.0,
        kubeops::IN_FLIGHT,
        plan.backfill_linger,
        ballast_runtime::kubeclient::RECONCILES_IN_FLIGHT,
    ));
    sec.table(&t);
    Ok(sec)
}
