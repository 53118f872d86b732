//! Starting each service binary with its documented flags (see each crate's `args.rs`), on
//! loopback, against a simulator's kubeconfig.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::procs::{Cores, Env, Proc, free_port, spawn};

/// Where the services keep their Leases and the guard its mode ConfigMap.
pub const SYSTEM_NAMESPACE: &str = "ballast-system";
/// kube-sim's annotation stopping a simulated node's heartbeats (`kube-sim node fail`).
pub const HEARTBEAT_ANNOTATION: &str = "kube-sim.ballast.dev/heartbeat";

/// A serving certificate for `localhost` and `127.0.0.1`, its CA, and where its files are.
pub struct Cert {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Cert {
    pub fn generate(dir: &Path) -> anyhow::Result<Cert> {
        let g = ballast_runtime::tls::generate(&["localhost", "127.0.0.1"])?;
        let (cert, key) = g.write_to(dir)?;
        Ok(Cert {
            ca_pem: g.ca_pem,
            cert,
            key,
        })
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            self.cert.display().to_string(),
            "--tls-key-file".into(),
            self.key.display().to_string(),
        ]
    }
}

/// A started service and its ports.
pub struct Service {
    pub proc: Proc,
    pub admin_port: u16,
    pub webhook_port: u16,
}

impl Service {
    /// Its `/metrics` text, from the admin port.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.admin_port);
        Ok(reqwest::get(url).await?.text().await?)
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// eviction-guard: webhook over TLS, admin and gRPC on loopback.
pub async fn guard(
    env: &Env,
    name: &str,
    kubeconfig: &Path,
    cert: &Cert,
    cores: Cores,
) -> anyhow::Result<Service> {
    let (webhook_port, admin_port, grpc_port) = (free_port()?, free_port()?, free_port()?);
    let mut args = s(&["--bind-address", "127.0.0.1"]);
    args.extend([
        "--webhook-port".into(),
        webhook_port.to_string(),
        "--admin-port".into(),
        admin_port.to_string(),
        "--grpc-port".into(),
        grpc_port.to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--pod-namespace".into(),
        SYSTEM_NAMESPACE.into(),
        "--identity".into(),
        name.into(),
    ]);
    args.extend(cert.flags());
    let mut proc = spawn(env, name, &env.bin("eviction-guard"), &args, cores)?;
    proc.wait_ready(admin_port).await?;
    Ok(Service {
        proc,
        admin_port,
        webhook_port,
    })
}

/// pvc-timing: webhook and controller.
pub async fn pvc_timing(
    env: &Env,
    name: &str,
    kubeconfig: &Path,
    cert: &Cert,
    cores: Cores,
) -> anyhow::Result<Service> {
    pvc_timing_on(env, name, kubeconfig, cert, cores, free_port()?).await
}

/// [`pvc_timing`] with its webhook on `webhook_port` (registered before the service starts,
/// so its controller's first writes already pass through its webhook).
pub async fn pvc_timing_on(
    env: &Env,
    name: &str,
    kubeconfig: &Path,
    cert: &Cert,
    cores: Cores,
    webhook_port: u16,
) -> anyhow::Result<Service> {
    let admin_port = free_port()?;
    let mut args = s(&["--bind-address", "127.0.0.1"]);
    args.extend([
        "--webhook-port".into(),
        webhook_port.to_string(),
        "--admin-port".into(),
        admin_port.to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--pod-namespace".into(),
        SYSTEM_NAMESPACE.into(),
        "--identity".into(),
        name.into(),
    ]);
    args.extend(cert.flags());
    let mut proc = spawn(env, name, &env.bin("pvc-timing"), &args, cores)?;
    proc.wait_ready(admin_port).await?;
    Ok(Service {
        proc,
        admin_port,
        webhook_port,
    })
}

/// The provisioner's controller with the NFS backend on `export` (as if the export were mounted).
pub async fn provisioner(
    env: &Env,
    name: &str,
    kubeconfig: &Path,
    export: &Path,
    cores: Cores,
) -> anyhow::Result<Service> {
    let admin_port = free_port()?;
    let mut args = s(&[
        "--nfs-server",
        "nfs.bench",
        "--is-nfs-server",
        "true",
        "--bind-address",
        "127.0.0.1",
    ]);
    args.extend([
        "--nfs-path".into(),
        export.display().to_string(),
        "--hostpath-base".into(),
        export.join("hostpath").display().to_string(),
        "--admin-port".into(),
        admin_port.to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--lease-namespace".into(),
        SYSTEM_NAMESPACE.into(),
        "--identity".into(),
        name.into(),
    ]);
    let mut proc = spawn(env, name, &env.bin("provisioner"), &args, cores)?;
    proc.wait_ready(admin_port).await?;
    Ok(Service {
        proc,
        admin_port,
        webhook_port: 0,
    })
}

/// podmanager without its conversion webhook (the benchmark serves v1 only).
pub async fn podmanager(
    env: &Env,
    name: &str,
    kubeconfig: &Path,
    cores: Cores,
) -> anyhow::Result<Service> {
    let admin_port = free_port()?;
    let args = vec![
        "--bind-address".into(),
        "127.0.0.1".into(),
        "--admin-port".into(),
        admin_port.to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--pod-namespace".into(),
        SYSTEM_NAMESPACE.into(),
        "--identity".into(),
        name.into(),
        "--conversion-webhook".into(),
        "false".into(),
    ];
    let mut proc = spawn(env, name, &env.bin("podmanager"), &args, cores)?;
    proc.wait_ready(admin_port).await?;
    Ok(Service {
        proc,
        admin_port,
        webhook_port: 0,
    })
}

/// Creates a namespace (no error when it exists).
pub async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stops (`true`) or resumes a simulated node's heartbeats.
pub async fn set_heartbeat(client: &kube::Client, node: &str, stopped: bool) -> anyhow::Result<()> {
    let value = if stopped {
        json!("stopped")
    } else {
        json!(null)
    };
    let patch = json!({"metadata": {"annotations": {HEARTBEAT_ANNOTATION: value}}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
