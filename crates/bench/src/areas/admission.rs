//! Admission against the transport floor: the null webhook, eviction-guard (the refused
//! taint-eviction DELETE, an allowed status update) and pvc-timing (PVC create, the binder's
//! status update), each pinned to one core, loaded from the other.

use std::time::Duration;

use bytes::Bytes;

use crate::load::{self, Client, Target};
use crate::plan::Plan;
use crate::procs::{Cores, Env, Proc, free_port, spawn};
use crate::report::{Section, Table};
use crate::services::{self, Cert};
use crate::sim::Sim;
use crate::stats::{Summary, fmt_duration};

pub const DELETE_TAINT: &str =
    include_str!("../../tests/data/pod-delete-node-controller-taint-eviction.json");
pub const STATUS_READY: &str = include_str!("../../tests/data/pod-status-update-ready.json");
pub const PVC_CREATE: &str = include_str!("../../tests/data/pvc-create.json");
pub const PVC_BOUND: &str = include_str!("../../tests/data/pvc-status-update-binder-bound.json");

/// The captured reviews name node `node-a`; the simulator's nodes are `node-1`...
pub fn on_sim_node(review: &str) -> Bytes {
    Bytes::from(review.replace("\"node-a\"", "\"node-1\""))
}

/// Concurrent requests that make a server refuse or allow: the expected answer text.
pub const REFUSED: &str = r#""allowed":false"#;
pub const ALLOWED: &str = r#""allowed":true"#;
const PATCHED: &str = r#""patchType":"JSONPatch""#;

struct Case {
    server: &'static str,
    review: &'static str,
    path: &'static str,
    body: Bytes,
    expect: &'static str,
}

struct Measured {
    saturation: f64,
    rates: Vec<load::RateRun>,
    serial: Summary,
}

async fn measure(plan: &Plan, ca: &str, target: Target) -> anyhow::Result<Measured> {
    let client = Client::connect(ca, target, plan.connections).await?;
    // Warm-up: handshakes done, allocator and caches warm.
    load::saturate(&client, plan.streams, plan.load / 4).await?;
    let saturation = load::saturate(&client, plan.streams, plan.load).await?;
    let mut rates = Vec::new();
    for &r in &plan.rates {
        rates.push(load::fixed_rate(&client, r, plan.load).await?);
    }
    let one = Client::connect(ca, client_target(&client), 1).await?;
    let serial = load::serial(&one, plan.serial).await?;
    Ok(Measured {
        saturation,
        rates,
        serial,
    })
}

fn client_target(c: &Client) -> Target {
    c.target()
}

/// Starts the null webhook (this binary, `null-webhook`) on the server core.
pub async fn null_webhook(env: &Env, cert: &Cert) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let exe = std::env::current_exe()?;
    let args = vec![
        "null-webhook".into(),
        "--port".into(),
        port.to_string(),
        "--cert".into(),
        cert.cert.display().to_string(),
        "--key".into(),
        cert.key.display().to_string(),
    ];
    let mut proc = spawn(env, "null-webhook", &exe, &args, server_cores(env))?;
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        proc.check_alive()?;
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(20),
            "null webhook did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((proc, port))
}

pub fn server_cores(env: &Env) -> Cores {
    env.server_core.map_or(Cores::Any, Cores::One)
}

fn target(port: u16, path: &str, body: Bytes, expect: &str) -> Target {
    Target {
        method: http::Method::POST,
        port,
        path: path.to_owned(),
        body,
        expect: expect.to_owned(),
    }
}

/// Fails nodes node-1..node-3 of `sim` and waits until the guard refuses the DELETE review.
pub async fn protect(sim: &Sim, ca: &str, guard_port: u16) -> anyhow::Result<()> {
    for n in 1..=3 {
        services::set_heartbeat(&sim.client, &format!("node-{n}"), true).await?;
    }
    let probe = Client::connect(
        ca,
        target(guard_port, "/validate", on_sim_node(DELETE_TAINT), ""),
        1,
    )
    .await?;
    let started = std::time::Instant::now();
    while !probe.answer_has(REFUSED).await? {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "the guard did not start protecting after three nodes failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let cert = Cert::generate(&env.work.join("admission-cert"))?;
    let (null, null_port) = null_webhook(env, &cert).await?;
    let mut cases = Vec::new();
    let mut floors = Vec::new();
    let bodies: [(&str, &str); 4] = [
        ("guard: taint-eviction DELETE", DELETE_TAINT),
        ("guard: status update (Ready)", STATUS_READY),
        ("pvc-timing: PVC create", PVC_CREATE),
        ("pvc-timing: binder status update", PVC_BOUND),
    ];
    // The floor, with each body (what the transport costs for that size).
    let floor_bodies: &[(&str, &str)] = if plan.smoke { &bodies[..1] } else { &bodies };
    for (review, body) in floor_bodies {
        let m = measure(
            plan,
            &cert.ca_pem,
            target(null_port, "/validate", on_sim_node(body), ALLOWED),
        )
        .await?;
        floors.push((*review, body.len(), m));
    }
    let null_rss = null.stats()?.rss_kib;
    null.stop().await;

    let mut sim = None;
    let mut procs = Vec::new();
    if !plan.smoke {
        let s = Sim::start(
            env,
            "admission-sim",
            &["--nodes", "5", "--node-grace", "200ms"],
        )
        .await?;
        services::namespace(&s.client, services::SYSTEM_NAMESPACE).await?;
        let guard = services::guard(
            env,
            "eviction-guard",
            &s.kubeconfig,
            &cert,
            server_cores(env),
        )
        .await?;
        protect(&s, &cert.ca_pem, guard.webhook_port).await?;
        cases.push(Case {
            server: "eviction-guard",
            review: bodies[0].0,
            path: "/validate",
            body: on_sim_node(DELETE_TAINT),
            expect: REFUSED,
        });
        cases.push(Case {
            server: "eviction-guard",
            review: bodies[1].0,
            path: "/validate",
            body: on_sim_node(STATUS_READY),
            expect: ALLOWED,
        });
        let timing =
            services::pvc_timing(env, "pvc-timing", &s.kubeconfig, &cert, server_cores(env))
                .await?;
        cases.push(Case {
            server: "pvc-timing",
            review: bodies[2].0,
            path: "/mutate",
            body: Bytes::from_static(PVC_CREATE.as_bytes()),
            expect: PATCHED,
        });
        cases.push(Case {
            server: "pvc-timing",
            review: bodies[3].0,
            path: "/mutate",
            body: Bytes::from_static(PVC_BOUND.as_bytes()),
            expect: PATCHED,
        });
        procs.push((guard.webhook_port, guard));
        procs.push((timing.webhook_port, timing));
        sim = Some(s);
    }
    let mut results = Vec::new();
    for case in &cases {
        let port = procs
            .iter()
            .find(|(_, s)| s.proc.name == case.server)
            .map(|(p, _)| *p)
            .unwrap_or_default();
        let m = measure(
            plan,
            &cert.ca_pem,
            target(port, case.path, case.body.clone(), case.expect),
        )
        .await?;
        results.push((case, m));
    }
    for (_, s) in procs {
        s.proc.stop().await;
    }
    if let Some(s) = sim {
        s.proc.stop().await;
    }

    let mut sec = Section::new("admission", "Admission against the transport floor");
    sec.para(&format!(
        "Each server pinned to one core, the load generator (this crate, Rust, hyper HTTP/2 over \
         rustls) on the other: {} keep-alive TLS connections, {} concurrent streams at saturation \
         ({:?} per run after a warm-up). Fixed rates are open loop: requests leave on schedule and \
         latency counts from the scheduled time, so a stall shows. The floor is `ballast-bench \
         null-webhook`: runtime's TLS + HTTP/2 server answering a canned `allowed` review after \
         reading the body. Reviews are the captured ones (`crates/bench/tests/data`); the guard \
         runs on kube-sim with three of five workers NotReady (protection on), so the DELETE is \
         refused with its full message. Every answer is checked (status 200 and the expected \
         verdict). Null webhook RSS after its runs: {}.",
        plan.connections,
        plan.streams,
        plan.load,
        crate::stats::fmt_mb(null_rss)
    ));
    let floor_of = |review: &str| {
        floors
            .iter()
            .find(|f| f.0 == review)
            .map(|f| f.2.saturation)
    };
    let mut sat = Table::new([
        "server",
        "review (body)",
        "req/s at saturation",
        "floor req/s (same body)",
        "webhook / floor",
    ]);
    for (review, len, m) in &floors {
        sat.row([
            "null webhook (floor)".to_owned(),
            format!("{review} ({:.1} KB)", *len as f64 / 1000.0),
            format!("{:.0}", m.saturation),
            "—".to_owned(),
            "—".to_owned(),
        ]);
    }
    for (case, m) in &results {
        let floor = floor_of(case.review);
        sat.row([
            case.server.to_owned(),
            format!(
                "{} ({:.1} KB)",
                case.review,
                case.body.len() as f64 / 1000.0
            ),
            format!("{:.0}", m.saturation),
            floor.map_or("—".into(), |f| format!("{f:.0}")),
            floor.map_or("—".into(), |f| {
                format!("{:.0} %", m.saturation / f * 100.0)
            }),
        ]);
    }
    sec.table(&sat);
    let mut rates = Table::new([
        "server", "review", "rate", "achieved", "p50", "p99", "p99.9",
    ]);
    let all = floors
        .iter()
        .map(|(r, _, m)| ("null webhook (floor)", *r, m))
        .chain(results.iter().map(|(c, m)| (c.server, c.review, m)));
    let all: Vec<_> = all.collect();
    for (server, review, m) in &all {
        for (r, run) in plan.rates.iter().zip(&m.rates) {
            rates.row([
                server.to_string(),
                review.to_string(),
                format!("{r:.0}/s"),
                format!("{:.0}/s", run.achieved),
                fmt_duration(run.summary.p50),
                fmt_duration(run.summary.p99),
                fmt_duration(run.summary.p999),
            ]);
        }
    }
    sec.table(&rates);
    let mut serial = Table::new([
        "server", "review", "requests", "mean", "stddev", "p50", "p99",
    ]);
    for (server, review, m) in &all {
        serial.row([
            server.to_string(),
            review.to_string(),
            m.serial.count.to_string(),
            fmt_duration(m.serial.mean),
            fmt_duration(m.serial.stddev),
            fmt_duration(m.serial.p50),
            fmt_duration(m.serial.p99),
        ]);
    }
    sec.para("Serial: one connection, one request at a time.");
    sec.table(&serial);
    Ok(sec)
}
