//! Building a Kubernetes client the way kubectl users expect: `--kubeconfig` (or `KUBECONFIG`),
//! `--context`, else the in-cluster service account.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::{Error, Result};

/// A client from an explicit kubeconfig file, or else inferred (KUBECONFIG, ~/.kube/config,
/// in-cluster), using `context` when given.
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match (kubeconfig, context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(|e| Error::KubeConfig(Box::new(e)))?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| Error::KubeConfig(Box::new(e)))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::KubeConfig(Box::new(e)))?,
        (None, None) => Config::infer()
            .await
            .map_err(|e| Error::KubeConfig(Box::new(e)))?,
    };
    Client::try_from(config).map_err(Error::KubeClient)
}

/// The `--kubeconfig` and `--context` flags every service shares, for `#[command(flatten)]`.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeconfigArgs {
    /// kubeconfig file; when unset, KUBECONFIG's default lookup, ~/.kube/config or the
    /// in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
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
