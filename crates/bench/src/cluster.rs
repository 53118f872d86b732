//! A real control plane as a child process: `kube-sim control-plane` started on a directory of
//! Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), with
//! its components found among that process's children so each one's CPU and memory can be
//! read apart; and simulated kubelets (`kube-sim nodes`) for the pods.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kube::Client;

use crate::procs::{Cores, Env, Proc, ProcStats, spawn};
use crate::sim;

/// How long the control plane may take to come up (the API server alone needs 5–30 s on a
/// loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `kube-sim` gets to stop its components and remove their files after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// A running control plane.
pub struct RealCluster {
    pub proc: Proc,
    pub kubeconfig: PathBuf,
    pub client: Client,
    /// The client QPS (burst twice that) of the controller manager and the scheduler.
    pub kube_api_qps: u32,
    /// The components: binary name and pid.
    pub components: Vec<(String, u32)>,
}

impl RealCluster {
    pub async fn start(
        env: &Env,
        name: &str,
        binaries: &Path,
        kube_api_qps: u32,
    ) -> anyhow::Result<RealCluster> {
        let kubeconfig = env.work.join(format!("{name}.kubeconfig"));
        let _ = std::fs::remove_file(&kubeconfig);
        let args = vec![
            "control-plane".to_owned(),
            "--binaries".to_owned(),
            binaries.display().to_string(),
            "--kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
            "--kube-api-qps".to_owned(),
            kube_api_qps.to_string(),
        ];
        let mut proc = spawn(env, name, &env.bin("kube-sim"), &args, Cores::Any)?;
        // The kubeconfig is copied before the line announcing the control plane.
        proc.wait_for_log("control plane at", START_TIMEOUT).await?;
        let client = sim::client(&kubeconfig).await?;
        let components = children(proc.pid)?;
        for want in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            anyhow::ensure!(
                components.iter().any(|(n, _)| n == want),
                "no {want} among the control plane's processes ({components:?})"
            );
        }
        Ok(RealCluster {
            proc,
            kubeconfig,
            client,
            kube_api_qps,
            components,
        })
    }

    /// CPU and memory of each component now.
    pub fn stats(&self) -> anyhow::Result<Vec<(String, ProcStats)>> {
        self.components
            .iter()
            .map(|(n, pid)| Ok((n.clone(), ProcStats::read(*pid)?)))
            .collect()
    }

    /// Stops the control plane the way Ctrl-C does, so it removes its files; SIGKILL after
    /// [`STOP_GRACE`].
    pub async fn stop(self) {
        terminate(self.proc).await;
    }
}

/// SIGTERM, then SIGKILL if the process is still there after [`STOP_GRACE`].
pub async fn terminate(mut proc: Proc) {
    if let Some(pid) = rustix::process::Pid::from_raw(proc.pid as i32) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(STOP_GRACE, proc.child.wait())
        .await
        .is_err()
    {
        proc.stop().await;
    }
}

/// Simulated kubelets: `count` Ready nodes that run the pods bound to them.
pub async fn kubelets(env: &Env, kubeconfig: &Path, count: usize) -> anyhow::Result<Proc> {
    let args = vec![
        "nodes".to_owned(),
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "--count".to_owned(),
        count.to_string(),
        "--prefix".to_owned(),
        "bench-node-".to_owned(),
        // A kubelet reports a pod's start within a second or two, not at its 10 s heartbeat.
        "--heartbeat".to_owned(),
        "1s".to_owned(),
    ];
    let mut proc = spawn(env, "kubelets", &env.bin("kube-sim"), &args, Cores::Any)?;
    proc.wait_for_log("simulated kubelets running", START_TIMEOUT)
        .await?;
    Ok(proc)
}

/// The processes whose parent is `parent`: the name of their executable and their pid.
fn children(parent: u32) -> anyhow::Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").context("failed to list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we look: one that is gone is not ours.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if parent_of(&stat) != Some(parent) {
            continue;
        }
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if let Some(name) = exe.file_name().and_then(|n| n.to_str()) {
            out.push((name.to_owned(), pid));
        }
    }
    out.sort();
    Ok(out)
}

/// The parent pid (field 4) of a `/proc/<pid>/stat` line.
fn parent_of(stat: &str) -> Option<u32> {
    // The command name (field 2) may hold spaces and parentheses; fields after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_from_a_stat_line() {
        assert_eq!(
            parent_of("4242 (kube-apiserver) S 4200 4242 4242 0 -1 4194560 100"),
            Some(4200)
        );
        assert_eq!(parent_of("7 (a (b) c) R 1 7 7"), Some(1));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn finds_its_own_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let found = children(std::process::id()).expect("lists /proc");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            found
                .iter()
                .any(|(name, pid)| name == "sleep" && *pid == child.id()),
            "{found:?}"
        );
    }
}
