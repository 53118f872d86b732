//! Admission against the transport floor: the null webhook, eviction-guard (the refused
//! taint-eviction DELETE, an allowed status update) and pvc-timing (PVC create, the binder's
//! status update), all running together pinned to one core and loaded from the other, one at a
//! time; saturation in rounds, the floor and the webhook back to back with the same body.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;

use crate::load::{self, Client, Target};
use crate::plan::Plan;
use crate::procs::{Cores, Env, Proc, free_port, spawn};
use crate::report::{Section, Table};
use crate::services::{self, Cert, Service};
use crate::sim::Sim;
use crate::stats::{Summary, fmt_duration};

mod rounds;

use rounds::{Rounds, floor_first};

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

/// The floor's name in the tables.
const FLOOR: &str = "null webhook (floor)";

/// One server loaded with one review: its connections, and whether they are warm yet.
struct Side {
    client: Client,
    warm: bool,
}

impl Side {
    async fn connect(ca: &str, target: Target, plan: &Plan) -> anyhow::Result<Side> {
        Ok(Side {
            client: Client::connect(ca, target, plan.connections).await?,
            warm: false,
        })
    }

    /// Before the first measurement on these connections: handshakes done, allocator and
    /// caches warm.
    async fn warm_up(&mut self, plan: &Plan) -> anyhow::Result<()> {
        if !self.warm {
            load::saturate(&self.client, plan.streams, plan.load / 4).await?;
            self.warm = true;
        }
        Ok(())
    }

    /// Requests per second at saturation.
    async fn saturation(&mut self, plan: &Plan) -> anyhow::Result<f64> {
        self.warm_up(plan).await?;
        load::saturate(&self.client, plan.streams, plan.load).await
    }

    /// The fixed rates on these connections, then serial latency on a connection of its own.
    async fn latency(&mut self, plan: &Plan, ca: &str) -> anyhow::Result<Latency> {
        self.warm_up(plan).await?;
        let mut rates = Vec::new();
        for &r in &plan.rates {
            rates.push(load::fixed_rate(&self.client, r, plan.load).await?);
        }
        let one = Client::connect(ca, client_target(&self.client), 1).await?;
        let serial = load::serial(&one, plan.serial).await?;
        Ok(Latency { rates, serial })
    }
}

struct Latency {
    rates: Vec<load::RateRun>,
    serial: Summary,
}

/// One review: the floor with its body and, outside the smoke plan, the webhook answering it.
struct Case {
    review: &'static str,
    body_len: usize,
    floor: Side,
    webhook: Option<(&'static str, Side)>,
    rounds: Rounds,
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

/// A captured review and the webhook that answers it.
struct Review {
    server: &'static str,
    label: &'static str,
    path: &'static str,
    body: Bytes,
    expect: &'static str,
}

fn reviews() -> [Review; 4] {
    [
        Review {
            server: "eviction-guard",
            label: "guard: taint-eviction DELETE",
            path: "/validate",
            body: on_sim_node(DELETE_TAINT),
            expect: REFUSED,
        },
        Review {
            server: "eviction-guard",
            label: "guard: status update (Ready)",
            path: "/validate",
            body: on_sim_node(STATUS_READY),
            expect: ALLOWED,
        },
        Review {
            server: "pvc-timing",
            label: "pvc-timing: PVC create",
            path: "/mutate",
            body: Bytes::from_static(PVC_CREATE.as_bytes()),
            expect: PATCHED,
        },
        Review {
            server: "pvc-timing",
            label: "pvc-timing: binder status update",
            path: "/mutate",
            body: Bytes::from_static(PVC_BOUND.as_bytes()),
            expect: PATCHED,
        },
    ]
}

/// kube-sim with three of five workers NotReady, eviction-guard protecting them, and
/// pvc-timing; both webhooks on the server core.
async fn start_webhooks(env: &Env, cert: &Cert) -> anyhow::Result<(Sim, Vec<Service>)> {
    let sim = Sim::start(
        env,
        "admission-sim",
        &["--nodes", "5", "--node-grace", "200ms"],
    )
    .await?;
    services::namespace(&sim.client, services::SYSTEM_NAMESPACE).await?;
    let guard = services::guard(
        env,
        "eviction-guard",
        &sim.kubeconfig,
        cert,
        server_cores(env),
    )
    .await?;
    protect(&sim, &cert.ca_pem, guard.webhook_port).await?;
    let timing =
        services::pvc_timing(env, "pvc-timing", &sim.kubeconfig, cert, server_cores(env)).await?;
    Ok((sim, vec![guard, timing]))
}

/// The floor's and the webhook's saturation of every case, `plan.rounds` times, the two of a
/// case back to back.
async fn saturation_rounds(plan: &Plan, cases: &mut [Case]) -> anyhow::Result<()> {
    for round in 0..plan.rounds {
        let floor_first = floor_first(round);
        for case in cases.iter_mut() {
            if floor_first {
                case.rounds.floor.push(case.floor.saturation(plan).await?);
            }
            if let Some((_, webhook)) = &mut case.webhook {
                case.rounds.webhook.push(webhook.saturation(plan).await?);
            }
            if !floor_first {
                case.rounds.floor.push(case.floor.saturation(plan).await?);
            }
        }
    }
    Ok(())
}

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let cert = Cert::generate(&env.work.join("admission-cert"))?;
    let ca = cert.ca_pem.as_str();
    // The floor stays up next to the webhooks: all on the server core, one loaded at a time.
    let (null, null_port) = null_webhook(env, &cert).await?;
    let (sim, services) = if plan.smoke {
        (None, Vec::new())
    } else {
        let (sim, services) = start_webhooks(env, &cert).await?;
        (Some(sim), services)
    };
    // The smoke plan has no webhook: the floor alone, with the first body.
    let reviews = reviews();
    let reviews = if plan.smoke {
        &reviews[..1]
    } else {
        &reviews[..]
    };
    let mut cases = Vec::new();
    for r in reviews {
        let floor_target = target(null_port, r.path, r.body.clone(), ALLOWED);
        let webhook = if plan.smoke {
            None
        } else {
            let service = services
                .iter()
                .find(|s| s.proc.name == r.server)
                .with_context(|| format!("{} was not started", r.server))?;
            let t = target(service.webhook_port, r.path, r.body.clone(), r.expect);
            Some((r.server, Side::connect(ca, t, plan).await?))
        };
        cases.push(Case {
            review: r.label,
            body_len: r.body.len(),
            floor: Side::connect(ca, floor_target, plan).await?,
            webhook,
            rounds: Rounds::default(),
        });
    }
    saturation_rounds(plan, &mut cases).await?;
    let mut floor_latency = Vec::new();
    let mut webhook_latency = Vec::new();
    for case in &mut cases {
        floor_latency.push((case.review, case.floor.latency(plan, ca).await?));
        if let Some((server, webhook)) = &mut case.webhook {
            webhook_latency.push((*server, case.review, webhook.latency(plan, ca).await?));
        }
    }
    let null_rss = null.stats()?.rss_kib;
    null.stop().await;
    for s in services {
        s.proc.stop().await;
    }
    if let Some(s) = sim {
        s.proc.stop().await;
    }

    let mut sec = Section::new("admission", "Admission against the transport floor");
    sec.para(&format!(
        "Every server pinned to the same core, the load generator (this crate, Rust, hyper \
         HTTP/2 over rustls) on the other: {} keep-alive TLS connections, {} concurrent streams \
         at saturation ({:?} per run). The floor is `ballast-bench null-webhook`: runtime's TLS + \
         HTTP/2 server answering a canned `allowed` review after reading the body. It runs \
         throughout, next to kube-sim and the webhooks (one server loaded at a time, the others \
         idle), so the floor and the webhooks are measured on the same machine state. Saturation \
         is measured in {}: in each, for each review, the floor with that review's body \
         and the webhook with the same body back to back (the floor first in odd rounds, the \
         webhook first in even ones); each client's first run follows a {:?} warm-up \
         (handshakes done, allocator and caches warm). The req/s columns are the medians over \
         the rounds; webhook / floor is the median of the per-round ratios, each from two runs \
         back to back, with the lowest and highest round in brackets: the range is how far \
         the rounds disagreed (the ratio is not the quotient of the two medians). Fixed rates and \
         serial latency are measured once per server and review, after the rounds, on the same \
         connections (serial on one of its own). Fixed rates are open loop: requests leave on \
         schedule and latency counts from the scheduled time, so a stall shows. Reviews are the \
         captured ones (`crates/bench/tests/data`); the guard runs on kube-sim with three of \
         five workers NotReady (protection on), so the DELETE is refused with its full message. \
         Every answer is checked (status 200 and the expected verdict). Null webhook RSS after \
         its runs: {}.",
        plan.connections,
        plan.streams,
        plan.load,
        match plan.rounds {
            1 => "1 round".to_owned(),
            n => format!("{n} rounds"),
        },
        plan.load / 4,
        crate::stats::fmt_mb(null_rss)
    ));
    let mut sat = Table::new([
        "server",
        "review (body)",
        "floor req/s (median)",
        "webhook req/s (median)",
        "webhook / floor (median of rounds, min–max)",
    ]);
    for case in &cases {
        let [floor, webhook, ratio] = case.rounds.cells();
        sat.row([
            case.webhook
                .as_ref()
                .map_or(FLOOR, |(server, _)| server)
                .to_owned(),
            format!("{} ({:.1} KB)", case.review, case.body_len as f64 / 1000.0),
            floor,
            webhook,
            ratio,
        ]);
    }
    sec.table(&sat);
    let all: Vec<(&str, &str, &Latency)> = floor_latency
        .iter()
        .map(|(review, l)| (FLOOR, *review, l))
        .chain(webhook_latency.iter().map(|(s, r, l)| (*s, *r, l)))
        .collect();
    let mut rates = Table::new([
        "server", "review", "rate", "achieved", "p50", "p99", "p99.9",
    ]);
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
