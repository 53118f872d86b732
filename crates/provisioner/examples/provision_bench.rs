//! N NFS claims created at once on kube-sim (its PV controller on), the provisioner handling
//! them: time from the last create to the last claim Bound, and the provisioner's memory.
//!
//! `cargo run --release -p provisioner --example provision_bench [claims] [provisioner binary]`
//!
//! With the path of a built `provisioner` binary the provisioner runs as its own process (its
//! RSS is then its own); without, it runs in this process and the RSS printed is the whole
//! process (kube-sim included).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube_sim::{KubeSim, SimConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "bench";
/// Claims created concurrently: a burst, as `kubectl apply` of many claims makes.
const IN_FLIGHT: usize = 64;
/// How long the claims may take to bind before the run is called failed.
const LIMIT: Duration = Duration::from_secs(600);

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let claims: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let binary: Option<PathBuf> = args.next().map(PathBuf::from);

    let sim = KubeSim::start(SimConfig::default().nodes(1).pv_binder(true)).await?;
    let client = sim.client();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "nfs"}, "provisioner": "ballast.dev/nfs", "reclaimPolicy": "Delete"}))?;
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await?;
    let export = tempfile::tempdir()?;

    let shutdown = CancellationToken::new();
    let mut child = None;
    let mut in_process = None;
    let pid = match &binary {
        Some(bin) => {
            let c = tokio::process::Command::new(bin)
                .args(["--nfs-server", "nfs.bench", "--is-nfs-server", "true"])
                .arg("--nfs-path")
                .arg(export.path())
                .arg("--kubeconfig")
                .arg(sim.kubeconfig_path())
                .args(["--admin-port", "0", "--bind-address", "127.0.0.1"])
                .args(["--pod-namespace", NAMESPACE, "--identity", "bench"])
                .env("RUST_LOG", "warn")
                .kill_on_drop(true)
                .spawn()?;
            let pid = c.id().unwrap_or_default();
            child = Some(c);
            pid
        }
        None => {
            let config = provisioner::Config {
                controller: Some(provisioner::ControllerConfig {
                    lease: Some(ballast_runtime::leader::LeaseConfig::new(
                        NAMESPACE,
                        provisioner::DEFAULT_LEASE_NAME,
                        "bench",
                    )),
                    hostpath: None,
                    nfs: Some(provisioner::NfsConfig {
                        server: "nfs.bench".into(),
                        export_path: export.path().to_path_buf(),
                        mount: export.path().to_path_buf(),
                    }),
                }),
                agent: None,
                namespace: NAMESPACE.into(),
                control_endpoint: None,
                control_client: Default::default(),
                admin_addr: "127.0.0.1:0".parse().expect("an address"),
                kube: provisioner::KubeAccess::Client(client.clone()),
                identity: "bench".into(),
                resync: Duration::from_secs(30),
            };
            in_process = Some(provisioner::start(config, shutdown.clone()).await?);
            std::process::id()
        }
    };

    // Count Bound claims from a watch, not by listing them again and again.
    let bound = Arc::new(AtomicUsize::new(0));
    let counter = bound.clone();
    let mut seen = std::collections::HashSet::new();
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NAMESPACE);
    let watch = tokio::spawn(
        watcher(claims_api.clone(), watcher::Config::default())
            .applied_objects()
            .try_for_each(move |c| {
                if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                    && seen.insert(c.metadata.name.clone().unwrap_or_default())
                {
                    counter.store(seen.len(), Ordering::Relaxed);
                }
                futures::future::ready(Ok(()))
            }),
    );

    // And the volumes the provisioner created, to tell its share of the time from the PV
    // controller's.
    let volumes_seen = Arc::new(AtomicUsize::new(0));
    let volume_counter = volumes_seen.clone();
    let volume_watch = tokio::spawn(
        watcher(
            Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        )
        .applied_objects()
        .try_for_each({
            let mut names = std::collections::HashSet::new();
            move |v| {
                if names.insert(v.metadata.name.unwrap_or_default()) {
                    volume_counter.store(names.len(), Ordering::Relaxed);
                }
                futures::future::ready(Ok(()))
            }
        }),
    );
    let mut all_volumes_at = None;

    let started = Instant::now();
    futures::stream::iter(0..claims)
        .map(|i| {
            let api = claims_api.clone();
            async move {
                let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                    "metadata": {"name": format!("c{i:05}")},
                    "spec": {"storageClassName": "nfs", "accessModes": ["ReadWriteMany"],
                             "resources": {"requests": {"storage": "1Mi"}}}}))
                .map_err(anyhow::Error::from)?;
                api.create(&PostParams::default(), &pvc)
                    .await
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?;
    let created = Instant::now();
    let mut peak_rss = 0;
    loop {
        peak_rss = peak_rss.max(rss_kib(pid).unwrap_or(0));
        if all_volumes_at.is_none() && volumes_seen.load(Ordering::Relaxed) >= claims {
            all_volumes_at = Some(Instant::now());
        }
        if bound.load(Ordering::Relaxed) >= claims {
            break;
        }
        if created.elapsed() > LIMIT {
            anyhow::bail!(
                "only {} of {claims} claims Bound after {LIMIT:?}",
                bound.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = Instant::now();
    println!(
        "{claims} NFS claims: created in {:.2}s; last create to last Bound {:.2}s (to the last \
         volume created {:.2}s); provisioner RSS peak {} MiB ({})",
        (created - started).as_secs_f64(),
        (done - created).as_secs_f64(),
        all_volumes_at.map_or(f64::NAN, |t| t
            .saturating_duration_since(created)
            .as_secs_f64()),
        peak_rss / 1024,
        if binary.is_some() {
            "own process"
        } else {
            "whole process, kube-sim included"
        },
    );
    watch.abort();
    volume_watch.abort();
    shutdown.cancel();
    if let Some(r) = in_process {
        r.wait().await?;
    }
    drop(child);
    sim.shutdown().await;
    Ok(())
}
