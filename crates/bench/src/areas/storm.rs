//! Storm detection: three worker nodes stop heartbeating at once; from the third NotReady
//! watch event (as a watcher beside the guard sees it) to protection on (`/callback/status`)
//! and to the first refused DELETE review.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::areas::admission::{DELETE_TAINT, REFUSED, on_sim_node, server_cores};
use crate::load::{Client, Target};
use crate::plan::Plan;
use crate::procs::Env;
use crate::report::{Section, Table};
use crate::services::{self, Cert};
use crate::sim::Sim;
use crate::stats::{fmt_duration, summarize};

/// The nodes failed in each repetition.
const FAILED: [&str; 3] = ["node-1", "node-2", "node-3"];
/// How long one detection may take before the repetition counts as failed.
const REP_LIMIT: Duration = Duration::from_secs(20);

fn not_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status != "True")
}

/// The NotReady nodes among [`FAILED`] and when the third became NotReady.
#[derive(Default)]
struct Seen {
    down: HashSet<String>,
    third_at: Option<Instant>,
}

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let cert = Cert::generate(&env.work.join("storm-cert"))?;
    let sim = Sim::start(env, "storm-sim", &["--nodes", "6", "--node-grace", "200ms"]).await?;
    services::namespace(&sim.client, services::SYSTEM_NAMESPACE).await?;
    let guard = services::guard(
        env,
        "eviction-guard",
        &sim.kubeconfig,
        &cert,
        server_cores(env),
    )
    .await?;
    let port = guard.webhook_port;
    let delete = Client::connect(
        &cert.ca_pem,
        Target {
            method: http::Method::POST,
            port,
            path: "/validate".into(),
            body: on_sim_node(DELETE_TAINT),
            expect: String::new(),
        },
        1,
    )
    .await?;
    let status = Client::connect(
        &cert.ca_pem,
        Target {
            method: http::Method::GET,
            port,
            path: "/callback/status".into(),
            body: bytes::Bytes::new(),
            expect: String::new(),
        },
        1,
    )
    .await?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let watch = tokio::spawn(
        watcher(
            Api::<Node>::all(sim.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .applied_objects()
        .try_for_each(move |n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            if FAILED.contains(&name.as_str()) {
                let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                if not_ready(&n) {
                    s.down.insert(name);
                    if s.down.len() == FAILED.len() && s.third_at.is_none() {
                        s.third_at = Some(Instant::now());
                    }
                } else {
                    s.down.remove(&name);
                }
            }
            futures::future::ready(Ok(()))
        }),
    );

    let mut on_lat = Vec::new();
    let mut refused_lat = Vec::new();
    let mut ahead = 0usize;
    for _ in 0..plan.storm_reps {
        seen.lock().unwrap_or_else(|e| e.into_inner()).third_at = None;
        futures::future::try_join_all(
            FAILED.map(|n| services::set_heartbeat(&sim.client, n, true)),
        )
        .await?;
        let started = Instant::now();
        let (mut on, mut refused) = (None, None);
        while on.is_none() || refused.is_none() {
            anyhow::ensure!(
                started.elapsed() < REP_LIMIT,
                "no protection {REP_LIMIT:?} after three nodes failed"
            );
            let (st, del) = tokio::join!(status.send(), delete.send());
            let now = Instant::now();
            if on.is_none() && crate::load::contains(&st?.1, br#""intercepting":true"#) {
                on = Some(now);
            }
            if refused.is_none() && crate::load::contains(&del?.1, REFUSED.as_bytes()) {
                refused = Some(now);
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        // The watch beside the guard may see the third event a moment after the guard did.
        let third = loop {
            if let Some(t) = seen.lock().unwrap_or_else(|e| e.into_inner()).third_at {
                break t;
            }
            anyhow::ensure!(
                started.elapsed() < REP_LIMIT,
                "the third NotReady event never came"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let (on, refused) = (on.unwrap_or(third), refused.unwrap_or(third));
        if on < third || refused < third {
            ahead += 1;
        }
        on_lat.push(on.saturating_duration_since(third));
        refused_lat.push(refused.saturating_duration_since(third));
        // Back to healthy: nodes Ready again, the DELETE allowed.
        futures::future::try_join_all(
            FAILED.map(|n| services::set_heartbeat(&sim.client, n, false)),
        )
        .await?;
        let back = Instant::now();
        loop {
            anyhow::ensure!(
                back.elapsed() < REP_LIMIT,
                "protection did not lift after the nodes came back"
            );
            let healthy = seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .down
                .is_empty();
            if healthy && !delete.answer_has(REFUSED).await? {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    watch.abort();
    guard.proc.stop().await;
    sim.proc.stop().await;

    let (on, refused) = (summarize(on_lat), summarize(refused_lat));
    let mut t = Table::new([
        "from the third NotReady watch event to",
        "repetitions",
        "p50",
        "p99",
        "max",
    ]);
    for (what, s) in [
        ("protection on (`/callback/status`)", &on),
        ("first refused DELETE review", &refused),
    ] {
        t.row([
            what.to_owned(),
            s.count.to_string(),
            fmt_duration(s.p50),
            fmt_duration(s.p99),
            fmt_duration(s.max),
        ]);
    }
    let mut sec = Section::new("storm", "Storm detection");
    sec.para(&format!(
        "eviction-guard pinned to one core on kube-sim (six workers, 200ms node grace). Each \
         repetition stops the heartbeats of three workers at once; a node watch in the bench \
         (beside the guard's own) notes when the third goes NotReady; the bench polls \
         `/callback/status` and sends the captured taint-eviction DELETE every ~0.5 ms until \
         protection is on and the DELETE refused; then the nodes come back and protection \
         lifts. Resolution is the polling period plus one round trip (~1 ms). In {ahead} of \
         {} repetitions the guard was on before the bench's own watch delivered the third \
         event (counted as 0).",
        plan.storm_reps
    ));
    sec.table(&t);
    Ok(sec)
}
