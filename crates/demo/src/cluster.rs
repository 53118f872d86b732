//! The demo's cluster: kube-sim or a real control plane with five worker nodes (see
//! [`crate::backend`]), and the four Ballast services started in-process through their library
//! `start` functions, webhooks over TLS registered in the API server exactly as a cluster would
//! call them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::{Api, CustomResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use crate::backend::{Backend, NODES};
use crate::error::{Error, Result};

/// The services' own namespace (excluded from the webhooks, like in a cluster).
pub const SYSTEM_NAMESPACE: &str = "ballast-system";
/// Where the tour's claims, pods and PodManager live.
pub const DEMO_NAMESPACE: &str = "demo";
/// The node whose hostPath agent runs in this process.
pub const AGENT_NODE: &str = "node-1";
/// How long fewer than three nodes must stay NotReady before the storm is over: short for the
/// tour (60s as shipped, long enough for a healing partition's kubelets to all report).
pub const STORM_SETTLE: Duration = Duration::from_secs(5);
/// NFS server name written into the PVs; the export itself is a local temporary directory.
pub const NFS_SERVER: &str = "nfs.demo.ballast.dev";
/// The exported path on that server, as PVs name it.
pub const NFS_EXPORT: &str = "/exports/ballast";
/// Provisioner resync; watches drive it, this only bounds a missed event.
const PROVISIONER_RESYNC: Duration = Duration::from_secs(2);
/// How long shutdown may take before the demo stops waiting for a service.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const STORAGE_CLASSES: &str = include_str!("../../provisioner/manifests/storageclasses.yaml");
const PVC_TIMING_WEBHOOK: &str = include_str!("../../../kustomize/pvc-timing/base/webhook.yaml");

/// Addresses of everything the user can poke at.
#[derive(Debug, Clone)]
pub struct Addresses {
    pub api: String,
    pub kubeconfig: PathBuf,
    pub grpc: SocketAddr,
    pub guard_webhook: SocketAddr,
    pub guard_admin: SocketAddr,
    pub pvc_timing_webhook: SocketAddr,
    pub pvc_timing_admin: SocketAddr,
    pub provisioner_admin: SocketAddr,
    pub podmanager_admin: SocketAddr,
}

/// A running demo cluster. [`Cluster::stop`] shuts every part down.
pub struct Cluster {
    pub backend: Backend,
    pub client: kube::Client,
    /// The same admin identity without kube-rs's automatic retry of 429/503/504, so a refused
    /// eviction is seen as the API server answered it (kube 5 would retry it for minutes).
    pub no_retry_client: kube::Client,
    pub addrs: Addresses,
    pub hostpath_base: PathBuf,
    pub nfs_mount: PathBuf,
    shutdown: CancellationToken,
    guard: eviction_guard::Running,
    pvc_timing: pvc_timing::Running,
    provisioner: provisioner::Running,
    podmanager: podmanager::Running,
    _dirs: Vec<tempfile::TempDir>,
}

fn tempdir(what: &'static str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("ballast-demo-{what}-"))
        .tempdir()
        .map_err(|source| Error::TempDir { what, source })
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn client_config(port: u16, path: &str, ca_pem: &str) -> WebhookClientConfig {
    WebhookClientConfig {
        url: Some(format!("https://127.0.0.1:{port}{path}")),
        ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
        service: None,
    }
}

/// A client for the kubeconfig at `path` with kube-rs's default retry policy off.
async fn no_retry_client(path: &Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Unexpected {
        what: "the simulator's kubeconfig",
        detail: e.to_string(),
    })?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| Error::Unexpected {
            what: "the cluster's kubeconfig",
            detail: e.to_string(),
        })?;
    config.default_retry = false;
    kube::Client::try_from(config).map_err(kube_err("build a client without retries"))
}

/// The shipped pvc-timing webhook configuration, calling `client` instead of the in-cluster
/// Service.
pub fn pvc_timing_webhook(client: &WebhookClientConfig) -> Result<MutatingWebhookConfiguration> {
    let mut config: MutatingWebhookConfiguration = serde_yaml::from_str(PVC_TIMING_WEBHOOK)
        .map_err(|source| Error::Manifest {
            what: "kustomize/pvc-timing/base/webhook.yaml",
            source,
        })?;
    for webhook in config.webhooks.iter_mut().flatten() {
        webhook.client_config = client.clone();
    }
    Ok(config)
}

/// The shipped StorageClasses (`hostpath`, `nfs`).
pub fn storage_classes() -> Result<Vec<StorageClass>> {
    STORAGE_CLASSES
        .split("\n---\n")
        .map(|doc| {
            serde_yaml::from_str(doc).map_err(|source| Error::Manifest {
                what: "crates/provisioner/manifests/storageclasses.yaml",
                source,
            })
        })
        .collect()
}

async fn create<K>(api: &Api<K>, obj: &K, what: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), obj)
        .await
        .map(drop)
        .map_err(kube_err(format!("create {what}")))
}

impl Cluster {
    /// Starts kube-sim — or, with `binaries`, the real control plane from them — and every
    /// service; returns once all are listening and registered.
    pub async fn start(kubeconfig: Option<PathBuf>, binaries: Option<&Path>) -> Result<Cluster> {
        ballast_runtime::tls::install_crypto_provider();
        let backend = match binaries {
            Some(dir) => Backend::control_plane(dir, kubeconfig).await?,
            None => Backend::sim(kubeconfig).await?,
        };
        let client = backend.client();

        for ns in [SYSTEM_NAMESPACE, DEMO_NAMESPACE] {
            let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))
                .map_err(|e| Error::Unexpected {
                    what: "a namespace",
                    detail: e.to_string(),
                })?;
            create(
                &Api::all(client.clone()),
                &namespace,
                &format!("namespace {ns}"),
            )
            .await?;
        }
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        create(&crds, &podmanager::PodManager::crd(), "the PodManager CRD").await?;
        let classes: Api<StorageClass> = Api::all(client.clone());
        for class in storage_classes()? {
            let name = class.metadata.name.clone().unwrap_or_default();
            create(&classes, &class, &format!("StorageClass {name}")).await?;
        }

        let certs_dir = tempdir("certs")?;
        let certs =
            ballast_runtime::tls::generate(&["127.0.0.1", "localhost"]).map_err(Error::Certs)?;
        let (cert, key) = certs.write_to(certs_dir.path()).map_err(Error::Certs)?;
        let shutdown = CancellationToken::new();
        // Services already started stop again if a later one fails to start.
        let stop_on_error = shutdown.clone().drop_guard();

        // eviction-guard: validating webhook, node monitor, control service.
        let mut guard_config = eviction_guard::Config::loopback(client.clone());
        guard_config.tls = Some((cert.clone(), key.clone()));
        guard_config.namespace = SYSTEM_NAMESPACE.to_owned();
        guard_config.storm.settle = STORM_SETTLE;
        let guard = eviction_guard::start(guard_config, shutdown.clone())
            .await
            .map_err(Error::Guard)?;
        let validating = eviction_guard::webhook_config::validating_webhook_configuration(
            "eviction-guard",
            client_config(guard.webhook_addr.port(), "/validate", &certs.ca_pem),
            &["kube-system", SYSTEM_NAMESPACE],
        );
        create(
            &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
            &validating,
            "the eviction-guard ValidatingWebhookConfiguration",
        )
        .await?;
        let control_endpoint = format!("http://{}", guard.grpc_addr);

        // pvc-timing: mutating webhook and the Bound trigger controller.
        let pvc_timing = pvc_timing::start(
            pvc_timing::Config {
                webhook: Some(pvc_timing::WebhookConfig {
                    addr: any_port(),
                    tls: Some((cert, key)),
                    self_signed: None,
                }),
                controller: Some(pvc_timing::ControllerConfig {
                    leader: Some(ballast_runtime::leader::LeaseConfig::new(
                        SYSTEM_NAMESPACE,
                        "pvc-timing",
                        "pvc-timing-demo",
                    )),
                    excluded_namespaces: vec![
                        "kube-system".to_owned(),
                        SYSTEM_NAMESPACE.to_owned(),
                    ],
                }),
                admin_addr: any_port(),
                kube: pvc_timing::KubeAccess::Client(client.clone()),
                clock: std::sync::Arc::new(pvc_timing::SystemClock),
            },
            shutdown.clone(),
        )
        .await
        .map_err(Error::PvcTiming)?;
        let pvc_timing_admin = pvc_timing.admin_addr;
        let Some(pvc_timing_webhook_addr) = pvc_timing.webhook_addr else {
            return Err(Error::Unexpected {
                what: "pvc-timing's webhook address",
                detail: "it started without its webhook listener".into(),
            });
        };
        let mutating = pvc_timing_webhook(&client_config(
            pvc_timing_webhook_addr.port(),
            pvc_timing::admission::PATH,
            &certs.ca_pem,
        ))?;
        create(
            &Api::<MutatingWebhookConfiguration>::all(client.clone()),
            &mutating,
            "the pvc-timing MutatingWebhookConfiguration",
        )
        .await?;

        // provisioner: the controller plus node-1's hostPath agent, in one process.
        let hostpath = tempdir("hostpath")?;
        let export = tempdir("nfs-export")?;
        let provisioner = provisioner::start(
            provisioner::Config {
                controller: Some(provisioner::ControllerConfig {
                    lease: Some(ballast_runtime::leader::LeaseConfig::new(
                        SYSTEM_NAMESPACE,
                        "provisioner",
                        "provisioner-demo",
                    )),
                    hostpath: Some(hostpath.path().to_path_buf()),
                    nfs: Some(provisioner::NfsConfig {
                        server: NFS_SERVER.to_owned(),
                        export_path: PathBuf::from(NFS_EXPORT),
                        mount: export.path().to_path_buf(),
                    }),
                }),
                agent: Some(provisioner::AgentConfig {
                    node_name: AGENT_NODE.to_owned(),
                    hostpath_base: hostpath.path().to_path_buf(),
                }),
                namespace: SYSTEM_NAMESPACE.to_owned(),
                control_endpoint: Some(control_endpoint.clone()),
                control_client: Default::default(),
                admin_addr: any_port(),
                kube: provisioner::KubeAccess::Client(client.clone()),
                identity: "provisioner-demo".to_owned(),
                resync: PROVISIONER_RESYNC,
            },
            shutdown.clone(),
        )
        .await
        .map_err(Error::Provisioner)?;
        let provisioner_admin = provisioner.admin_addr;

        // podmanager: the operator, node health from the control service.
        let podmanager = podmanager::start(
            podmanager::Config {
                admin_addr: any_port(),
                kube: ballast_runtime::KubeAccess::Client(client.clone()),
                watch_namespace: Some(DEMO_NAMESPACE.to_owned()),
                leader_election: None,
                identity: "podmanager-demo".to_owned(),
                control_endpoint: Some(control_endpoint),
                control_client: Default::default(),
                webhook: None,
            },
            shutdown.clone(),
        )
        .await
        .map_err(Error::PodManager)?;

        let no_retry_client = no_retry_client(backend.kubeconfig_path()).await?;
        stop_on_error.disarm();
        let addrs = Addresses {
            api: backend.url(),
            kubeconfig: backend.kubeconfig_path().to_path_buf(),
            grpc: guard.grpc_addr,
            guard_webhook: guard.webhook_addr,
            guard_admin: guard.admin_addr,
            pvc_timing_webhook: pvc_timing_webhook_addr,
            pvc_timing_admin,
            provisioner_admin,
            podmanager_admin: podmanager.admin_addr,
        };
        Ok(Cluster {
            backend,
            client,
            no_retry_client,
            addrs,
            hostpath_base: hostpath.path().to_path_buf(),
            nfs_mount: export.path().to_path_buf(),
            shutdown,
            guard,
            pvc_timing,
            provisioner,
            podmanager,
            _dirs: vec![certs_dir, hostpath, export],
        })
    }

    /// Admin endpoints of every service, for readiness checks: (service, address).
    pub fn admin_endpoints(&self) -> [(&'static str, SocketAddr); 4] {
        [
            ("eviction-guard", self.addrs.guard_admin),
            ("pvc-timing", self.addrs.pvc_timing_admin),
            ("provisioner", self.addrs.provisioner_admin),
            ("podmanager", self.addrs.podmanager_admin),
        ]
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.addrs.kubeconfig
    }

    /// Stops every service, then the cluster; a service that does not stop in time is left
    /// behind with a warning (the process is about to end anyway).
    pub async fn stop(self) {
        self.shutdown.cancel();
        let Cluster {
            backend,
            guard,
            pvc_timing,
            provisioner,
            podmanager,
            _dirs,
            ..
        } = self;
        let all = async {
            let (g, t, p, m) = tokio::join!(
                guard.wait(),
                pvc_timing.wait(),
                provisioner.wait(),
                podmanager.wait()
            );
            for (service, result) in [
                ("eviction-guard", g.err().map(|e| crate::error::chain(&e))),
                ("pvc-timing", t.err().map(|e| crate::error::chain(&e))),
                ("provisioner", p.err().map(|e| crate::error::chain(&e))),
                ("podmanager", m.err().map(|e| crate::error::chain(&e))),
            ] {
                if let Some(error) = result {
                    tracing::warn!(service, %error, "service stopped with an error");
                }
            }
        };
        if tokio::time::timeout(STOP_TIMEOUT, all).await.is_err() {
            tracing::warn!("services did not stop within {STOP_TIMEOUT:?}");
        }
        backend.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_storage_classes_are_hostpath_and_nfs() {
        let classes = storage_classes().unwrap();
        let names: Vec<(&str, &str)> = classes
            .iter()
            .map(|c| {
                (
                    c.metadata.name.as_deref().unwrap_or(""),
                    c.provisioner.as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("hostpath", "hostpath.ballast.dev"),
                ("nfs", "ballast.dev/nfs")
            ]
        );
    }

    #[test]
    fn pvc_timing_webhook_keeps_the_shipped_rules_and_calls_the_demo_url() {
        let client = client_config(8443, "/mutate", "CA PEM");
        let config = pvc_timing_webhook(&client).unwrap();
        let webhooks = config.webhooks.unwrap();
        assert_eq!(webhooks.len(), 1);
        let webhook = &webhooks[0];
        assert_eq!(webhook.name, "pvc-timing.ballast.dev");
        assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(
            webhook.client_config.url.as_deref(),
            Some("https://127.0.0.1:8443/mutate")
        );
        assert!(webhook.client_config.service.is_none());
        assert_eq!(
            webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|b| b.0.as_slice()),
            Some(&b"CA PEM"[..])
        );
        let excluded = webhook
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .and_then(|e| e.first())
            .and_then(|e| e.values.clone())
            .unwrap_or_default();
        assert_eq!(excluded, ["kube-system", SYSTEM_NAMESPACE]);
    }
}
