//! Building a Kubernetes client the way kubectl users expect: `--kubeconfig` (or `KUBECONFIG`),
//! `--context`, else the in-cluster service account.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::{Error, Result};

/// Reconciles a controller runs at once. The Kubernetes client speaks HTTP/1.1 to the API server:
/// every request in flight is a connection of its own, with its TLS state and buffers. Unbounded,
/// a controller that sees thousands of objects at start (a backfill, a relist) opens thousands of
/// connections and the process keeps their memory long after (pvc-timing: 1,189 sockets and
/// 84 MB after a 1,000-claim backfill; podmanager: 119 MB with 1,000 PodManagers); a few in
/// flight already keep the API server busy.
pub const RECONCILES_IN_FLIGHT: u16 = 16;

/// A client from an explicit kubeconfig file, or else inferred (KUBECONFIG, ~/.kube/config,
/// in-cluster), using `context` when given.
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client> {
    Client::try_from(config(kubeconfig, context).await?).map_err(Error::KubeClient)
}

/// The client configuration [`client`] uses. Without an explicit file, kube's inference reads
/// `KUBECONFIG` as kubectl does: a list of files (`:`-separated, `;` on Windows) merged in
/// order, the first file to set a value winning; then ~/.kube/config; then the in-cluster
/// service account.
pub async fn config(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Config> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|e| Error::KubeConfig(Box::new(e)))?;
            Config::from_custom_kubeconfig(file, &options).await
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await,
        (None, None) => {
            return Config::infer()
                .await
                .map_err(|e| Error::KubeConfig(Box::new(e)));
        }
    };
    config.map_err(|e| Error::KubeConfig(Box::new(e)))
}

/// The `--kubeconfig` and `--context` flags every service shares, for `#[command(flatten)]`.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeconfigArgs {
    /// kubeconfig file. When unset: the files listed in KUBECONFIG (`:`-separated and merged,
    /// as kubectl reads them), else ~/.kube/config, else the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context to use.
    #[arg(long, env = "KUBE_CONTEXT")]
    pub context: Option<String>,
}

/// How a service reaches the API server: a client handed in (tests, the demo) or one built
/// from a kubeconfig at start.
#[derive(Clone)]
pub enum KubeAccess {
    /// An existing client (tests pass kube-sim's).
    Client(Client),
    /// Build one from a kubeconfig file (or infer it when None).
    Kubeconfig {
        path: Option<PathBuf>,
        context: Option<String>,
    },
}

impl KubeAccess {
    /// The client, building it if needed.
    pub async fn client(&self) -> Result<Client> {
        match self {
            KubeAccess::Client(client) => Ok(client.clone()),
            KubeAccess::Kubeconfig { path, context } => {
                client(path.as_deref(), context.as_deref()).await
            }
        }
    }
}

impl From<KubeconfigArgs> for KubeAccess {
    fn from(args: KubeconfigArgs) -> Self {
        KubeAccess::Kubeconfig {
            path: args.kubeconfig,
            context: args.context,
        }
    }
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeAccess::Client(_) => f.write_str("Client(..)"),
            KubeAccess::Kubeconfig { path, context } => f
                .debug_struct("Kubeconfig")
                .field("path", path)
                .field("context", context)
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process of the KUBECONFIG test: the address the merge must yield.
    const CHILD_EXPECTS: &str = "BALLAST_KUBECONFIG_LIST_EXPECTS";

    const CLUSTER_FILE: &str = r#"apiVersion: v1
kind: Config
current-context: sim
clusters:
- name: sim
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
contexts:
- name: sim
  context:
    cluster: sim
    user: admin
"#;

    const USER_FILE: &str = r#"apiVersion: v1
kind: Config
users:
- name: admin
  user:
    token: from-the-second-file
"#;

    /// KUBECONFIG with two files, as kubectl users set it: the cluster and context from the
    /// first, the user from the second. The environment of a running test cannot be changed
    /// safely, so the check runs in a child process of this test binary.
    #[test]
    fn a_kubeconfig_list_is_merged_as_kubectl_reads_it() {
        if let Ok(expected) = std::env::var(CHILD_EXPECTS) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            for context in [None, Some("sim")] {
                let config = rt.block_on(config(None, context)).unwrap();
                assert_eq!(config.cluster_url.to_string(), expected);
                assert!(
                    config.auth_info.token.is_some(),
                    "the user's token comes from the second file"
                );
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("cluster.yaml"),
            dir.path().join("user.yaml"),
        );
        std::fs::write(&a, CLUSTER_FILE).unwrap();
        std::fs::write(&b, USER_FILE).unwrap();
        let list = std::env::join_paths([&a, &b]).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kubeclient::tests::a_kubeconfig_list_is_merged_as_kubectl_reads_it",
                "--nocapture",
            ])
            .env("KUBECONFIG", &list)
            .env(CHILD_EXPECTS, "https://127.0.0.1:6443/")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
