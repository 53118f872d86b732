//! kubectl-pvc: wall time of `inspect` and `ls -A` with many claims and pods in the cluster.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;

use crate::fixtures;
use crate::kubeops::create_all;
use crate::plan::Plan;
use crate::procs::Env;
use crate::report::{Section, Table};
use crate::services;
use crate::sim::Sim;
use crate::stats::{fmt_duration, summarize};

const NAMESPACE: &str = "bench";
/// Runs of each command.
const RUNS: usize = 5;

pub async fn run(env: &Env, plan: &Plan) -> anyhow::Result<Section> {
    let n = plan.kubectl_objects;
    let sim = Sim::start(env, "kubectl-sim", &["--nodes", "3"]).await?;
    services::namespace(&sim.client, NAMESPACE).await?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sim.client.clone(), NAMESPACE);
    create_all(
        &claims,
        (0..n)
            .map(|i| fixtures::claim(&format!("c{i:05}"), "nfs"))
            .collect(),
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), NAMESPACE);
    create_all(
        &pods,
        (0..n)
            .map(|i| fixtures::pod_with_claim(&format!("p{i:05}"), &format!("c{i:05}")))
            .collect(),
    )
    .await?;
    let kc = sim.kubeconfig.display().to_string();
    let name = format!("c{:05}", n / 2);
    let commands: [(&str, Vec<String>); 2] = [
        (
            "inspect",
            vec![
                "--kubeconfig".into(),
                kc.clone(),
                "-n".into(),
                NAMESPACE.into(),
                "inspect".into(),
                name.clone(),
            ],
        ),
        (
            "ls -A",
            vec!["--kubeconfig".into(), kc.clone(), "-A".into(), "ls".into()],
        ),
    ];
    let mut t = Table::new([
        "command", "objects", "runs", "min", "median", "max", "output",
    ]);
    for (label, args) in &commands {
        let mut times = Vec::new();
        let mut lines = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let out = tokio::process::Command::new(env.bin("kubectl-pvc"))
                .args(args)
                .output()
                .await?;
            times.push(started.elapsed());
            // 3 and 4 say a phase is pending or failed (the claims are Pending, no provisioner
            // runs): the answer, not an error. 1 and 2 are errors.
            anyhow::ensure!(
                out.status.code().is_some_and(|c| matches!(c, 0 | 3 | 4)) && !out.stdout.is_empty(),
                "kubectl-pvc {label} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            lines = out.stdout.iter().filter(|b| **b == b'\n').count();
        }
        let min = times.iter().min().copied().unwrap_or(Duration::ZERO);
        let s = summarize(times);
        t.row([
            format!("`kubectl pvc {label}`"),
            format!("{n} claims, {n} pods"),
            RUNS.to_string(),
            fmt_duration(min),
            fmt_duration(s.p50),
            fmt_duration(s.max),
            format!("{lines} lines"),
        ]);
    }
    let sim_rss = sim.stats()?.rss_kib;
    sim.proc.stop().await;
    let mut sec = Section::new("kubectl", "kubectl-pvc");
    sec.para(&format!(
        "Wall time of the `kubectl-pvc` binary (process start to exit, kubeconfig read, \
         every request, rendering) against kube-sim holding {n} claims (Pending, class `nfs`) and \
         {n} pods, each mounting one claim, in one namespace. kube-sim RSS with them: {}.",
        crate::stats::fmt_mb(sim_rss)
    ));
    sec.table(&t);
    Ok(sec)
}
