//! Command line and environment (every flag has an env twin; `NFS_SERVER`, `IS_NFS_SERVER` and
//! `KUBECONFIG` are the seed's variables).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};

use crate::{Config, KubeAccess, NfsConfig};

/// hostPath and NFS dynamic provisioning. The cluster-wide part (NFS, warnings, rescheduling) runs
/// under leader election; with --node-name the process is also the hostPath agent of that node.
#[derive(Debug, Clone, Parser)]
#[command(name = "provisioner", version, about)]
pub struct Args {
    /// Run the cluster-wide controller (NFS, warnings, rescheduling) while holding the Lease.
    #[arg(long, env = "PROVISIONER_CONTROLLER", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub controller: bool,

    /// This node's name (downward API `spec.nodeName`): makes the process the node's hostPath
    /// agent, creating and deleting directories under --hostpath-base for volumes placed here.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Directory under which hostPath volumes are created, the same path on the host and here.
    #[arg(
        long,
        env = "HOSTPATH_BASE",
        default_value = "/var/lib/ballast/hostpath"
    )]
    pub hostpath_base: PathBuf,

    /// NFS server written into NFS PVs; without it this process leaves NFS claims alone.
    #[arg(long, env = "NFS_SERVER")]
    pub nfs_server: Option<String>,

    /// Exported directory on the NFS server; PVs point at subdirectories of it.
    #[arg(long, env = "NFS_PATH", default_value = "/srv/nfs")]
    pub nfs_path: PathBuf,

    /// Where the export is mounted in this container (ignored with --is-nfs-server).
    #[arg(long, env = "NFS_MOUNT", default_value = "/nfs")]
    pub nfs_mount: PathBuf,

    /// This host is the NFS server: subdirectories are created directly in --nfs-path.
    #[arg(long, env = "IS_NFS_SERVER", default_value_t = false, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub is_nfs_server: bool,

    /// Control service gRPC endpoint for node health (e.g. http://eviction-guard:9090); without
    /// it, the Nodes' own Ready condition is used.
    #[arg(long, env = "CONTROL_ENDPOINT")]
    pub control_endpoint: Option<String>,
    /// TLS and token for the control service.
    #[command(flatten)]
    pub control_client: ballast_control::ControlClientArgs,

    /// Port of the admin server: /healthz, /readyz, /metrics.
    #[arg(long, env = "ADMIN_PORT", default_value_t = 8080)]
    pub admin_port: u16,

    /// Address the admin server listens on.
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    #[command(flatten)]
    pub kube: ballast_runtime::kubeclient::KubeconfigArgs,

    #[command(flatten)]
    pub shutdown: ballast_runtime::shutdown::ShutdownArgs,

    /// Namespace of the Lease (the pod's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ballast-system")]
    pub lease_namespace: String,

    /// Name of the Lease the controller part holds.
    #[arg(
        long,
        env = "PROVISIONER_LEASE_NAME",
        default_value = "ballast-provisioner"
    )]
    pub lease_name: String,

    /// This replica's name in the Lease and in events; defaults to the pod name (HOSTNAME).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Full re-examination of every claim and volume at least this often (watch events trigger
    /// one sooner); accepts `30s`, `5m`.
    #[arg(long, env = "PROVISIONER_RESYNC", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync: Duration,
}

impl Args {
    /// The service configuration these flags describe.
    pub fn into_config(self) -> Config {
        let Args {
            controller,
            node_name,
            hostpath_base,
            nfs_server,
            nfs_path,
            nfs_mount,
            is_nfs_server,
            control_endpoint,
            control_client,
            admin_port,
            bind_address,
            kube,
            // Read by main, which owns the signal handling.
            shutdown: _,
            lease_namespace,
            lease_name,
            identity,
            resync,
        } = self;
        let identity = identity
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("provisioner-{}", std::process::id()));
        let nfs = nfs_server
            .filter(|s| !s.is_empty())
            .map(|server| NfsConfig {
                server,
                mount: if is_nfs_server {
                    nfs_path.clone()
                } else {
                    nfs_mount
                },
                export_path: nfs_path,
            });
        Config {
            controller: controller.then(|| {
                ballast_runtime::leader::LeaseConfig::new(&lease_namespace, &lease_name, &identity)
            }),
            node_name: node_name.filter(|n| !n.is_empty()),
            hostpath_base,
            nfs,
            control_endpoint,
            control_client,
            admin_addr: Some(SocketAddr::new(bind_address, admin_port)),
            kube: KubeAccess::from(kube),
            identity,
            resync,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_the_controller_only_without_nfs() {
        let c = Args::parse_from(["provisioner"]).into_config();
        assert!(c.controller.is_some());
        assert_eq!(c.node_name, None);
        assert!(c.nfs.is_none());
        assert_eq!(c.admin_addr.unwrap().port(), 8080);
        assert_eq!(c.resync, Duration::from_secs(30));
    }

    #[test]
    fn nfs_server_mode_creates_directories_in_the_export_itself() {
        let c = Args::parse_from([
            "provisioner",
            "--nfs-server=10.0.0.5",
            "--nfs-path=/exports/k8s",
            "--is-nfs-server=yes",
            "--node-name=node-1",
            "--controller=0",
        ])
        .into_config();
        let nfs = c.nfs.unwrap();
        assert_eq!(nfs.server, "10.0.0.5");
        assert_eq!(nfs.mount, PathBuf::from("/exports/k8s"));
        assert_eq!(nfs.export_path, PathBuf::from("/exports/k8s"));
        assert_eq!(c.node_name.as_deref(), Some("node-1"));
        assert!(c.controller.is_none());
    }

    #[test]
    fn nfs_client_mode_uses_the_local_mount() {
        let c = Args::parse_from([
            "provisioner",
            "--nfs-server=nfs.example",
            "--nfs-mount=/mnt/x",
        ])
        .into_config();
        let nfs = c.nfs.unwrap();
        assert_eq!(nfs.mount, PathBuf::from("/mnt/x"));
        assert_eq!(nfs.export_path, PathBuf::from("/srv/nfs"));
    }
}
