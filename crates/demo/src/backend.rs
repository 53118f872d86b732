//! Where the tour runs: kube-sim in-process (the default, nothing to install), or a real
//! control plane — etcd, kube-apiserver, kube-controller-manager and kube-scheduler started from
//! a directory of Kubernetes binaries — with the worker nodes as simulated kubelets. Both have
//! the same five nodes (`node-1`..`node-5` in zones `zone-a`..`zone-c`), a 2s default toleration
//! of the unreachable taint, and a node going NotReady when its heartbeats stop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;
use kube_sim::control_plane::{ControlPlane, ControlPlaneConfig};
use kube_sim::kubelets::{KubeletOptions, Kubelets};
use kube_sim::{KubeSim, SimConfig};

use crate::error::{Error, Result};

/// Simulated worker nodes: enough that three failing is a storm and two stay healthy.
pub const NODES: usize = 5;
/// Short so a failed node is NotReady within a second on kube-sim (40s in Kubernetes).
const SIM_NODE_GRACE: Duration = Duration::from_secs(1);
/// Short default toleration of the unreachable taint (300s in Kubernetes), so the taint-based
/// eviction is attempted within the tour.
pub const TOLERATION_SECONDS: u64 = 2;
/// How often the simulated kubelets of the real control plane renew their Leases.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest wait for the simulated nodes to be Ready.
const NODES_READY: Duration = Duration::from_secs(60);

/// The cluster under the tour.
pub enum Backend {
    /// kube-sim with its simulated scheduler, kubelets and controllers.
    Sim(KubeSim),
    /// The real control plane and the kubelets the demo simulates for it.
    ControlPlane {
        control_plane: ControlPlane,
        kubelets: Kubelets,
    },
}

impl Backend {
    /// kube-sim, its kubeconfig written to `kubeconfig` when given.
    pub async fn sim(kubeconfig: Option<PathBuf>) -> Result<Backend> {
        let mut config = SimConfig::default()
            .nodes(NODES)
            .scheduler(true)
            .kubelet(true)
            .taint_eviction(true)
            .pv_binder(true)
            .node_grace(SIM_NODE_GRACE)
            .default_toleration_seconds(TOLERATION_SECONDS);
        if let Some(path) = kubeconfig {
            config = config.kubeconfig_path(path);
        }
        Ok(Backend::Sim(
            KubeSim::start(config).await.map_err(Error::Sim)?,
        ))
    }

    /// The control plane from the binaries in `binaries`, with five simulated worker nodes;
    /// its kubeconfig copied to `kubeconfig` when given.
    pub async fn control_plane(binaries: &Path, kubeconfig: Option<PathBuf>) -> Result<Backend> {
        let mut config = ControlPlaneConfig::new(binaries);
        config.default_toleration_seconds = TOLERATION_SECONDS;
        let control_plane = ControlPlane::start(config)
            .await
            .map_err(Error::ControlPlane)?;
        if let Some(path) = kubeconfig {
            std::fs::copy(control_plane.kubeconfig_path(), &path).map_err(|source| {
                Error::WriteFile {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        }
        let opts = KubeletOptions {
            heartbeat: HEARTBEAT,
            ..KubeletOptions::default()
        };
        let kubelets = Kubelets::start(control_plane.client(), opts);
        for node in kube_sim::kubelets::workers("node-", NODES, "zone-", 3) {
            kubelets.add_node(&node).await.map_err(Error::Kubelets)?;
        }
        let nodes: Api<Node> = Api::all(control_plane.client());
        let start = Instant::now();
        loop {
            let list = nodes
                .list(&ListParams::default())
                .await
                .map_err(|source| Error::Kube {
                    what: "list the nodes".into(),
                    source,
                })?;
            let ready = list
                .items
                .iter()
                .filter(|n| {
                    n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .count();
            if ready == NODES {
                break;
            }
            if start.elapsed() >= NODES_READY {
                return Err(Error::Timeout {
                    what: "the simulated nodes to be Ready".into(),
                    timeout: NODES_READY,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(Backend::ControlPlane {
            control_plane,
            kubelets,
        })
    }

    /// An admin client (kube's default retries).
    pub fn client(&self) -> kube::Client {
        match self {
            Backend::Sim(sim) => sim.client(),
            Backend::ControlPlane { control_plane, .. } => control_plane.client(),
        }
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        match self {
            Backend::Sim(sim) => sim.url(),
            Backend::ControlPlane { control_plane, .. } => control_plane.url(),
        }
    }

    /// Its kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        match self {
            Backend::Sim(sim) => sim.kubeconfig_path(),
            Backend::ControlPlane { control_plane, .. } => control_plane.kubeconfig_path(),
        }
    }

    /// What the tour calls it: `kube-sim`, or `kube-apiserver`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sim(_) => "kube-sim",
            Backend::ControlPlane { .. } => "kube-apiserver",
        }
    }

    /// What plays the kubelets, for the narration.
    pub fn kubelets(&self) -> &'static str {
        match self {
            Backend::Sim(_) => "kube-sim",
            Backend::ControlPlane { .. } => "the simulated kubelets",
        }
    }

    /// Stops `node`'s heartbeats.
    pub fn fail_node(&self, node: &str) -> Result<()> {
        match self {
            Backend::Sim(sim) => {
                sim.fail_node(node);
                Ok(())
            }
            Backend::ControlPlane { kubelets, .. } => kubelets.fail(node).map_err(Error::Kubelets),
        }
    }

    /// Resumes `node`'s heartbeats.
    pub fn restore_node(&self, node: &str) -> Result<()> {
        match self {
            Backend::Sim(sim) => {
                sim.restore_node(node);
                Ok(())
            }
            Backend::ControlPlane { kubelets, .. } => {
                kubelets.recover(node).map_err(Error::Kubelets)
            }
        }
    }

    /// Stops it all.
    pub async fn stop(self) {
        match self {
            Backend::Sim(sim) => sim.shutdown().await,
            Backend::ControlPlane {
                control_plane,
                kubelets,
            } => {
                kubelets.stop().await;
                // Stopping waits for each component to exit: off the async workers.
                drop(tokio::task::spawn_blocking(move || control_plane.stop()).await);
            }
        }
    }
}
