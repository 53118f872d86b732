//! Building a Kubernetes client the way kubectl users expect: `--kubeconfig` (or `KUBECONFIG`),
//! `--context`, else the in-cluster service account.

use std::path::Path;

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
