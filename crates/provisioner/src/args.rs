//! Command line and environment (every flag has an env twin; `NFS_SERVER`, `IS_NFS_SERVER` and
//! `KUBECONFIG` are the seed's variables). The shared vocabulary ([`ballast_runtime::flags`]):
//! `POD_NAMESPACE`, `POD_NAME`, `LEADER_ELECT`, `LEASE_NAME` (`PROVISIONER_LEASE_NAME` stays an
//! alias), `LEASE_DURATION`, `ADMIN_PORT`, `BIND_ADDRESS`; booleans take `true/false/1/0`. The
//! controller Deployment runs with the defaults plus its backend (`PROVISIONER_HOSTPATH=true` or
//! `NFS_SERVER`); the agent DaemonSet with `PROVISIONER_CONTROLLER=false` and `NODE_NAME`. A
//! second instance in the same cluster sets `HOSTPATH_PROVISIONER_NAME` / `NFS_PROVISIONER_NAME`
//! (as nfs-subdir-external-provisioner's `PROVISIONER_NAME`) on its controller and agents.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ballast_runtime::flags::{LeaderArgs, PodArgs, boolean};
use clap::{ArgAction, Parser};

use crate::objects::{PROVISIONER_HOSTPATH, PROVISIONER_NFS};
use crate::plan::Provisioners;
use crate::{
    AgentConfig, Config, ControllerConfig, DEFAULT_LEASE_NAME, KubeAccess, NfsConfig, Options,
    capacity,
};

/// Longest CSIDriver name the API server accepts.
const MAX_DRIVER_NAME: usize = 63;

/// A hostPath provisioner name: one a CSIDriver can carry (a lowercase DNS subdomain of at most
/// 63 characters), since that CSIDriver is what makes the scheduler read our capacity.
pub fn csi_driver_name(name: &str) -> Result<String, String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > MAX_DRIVER_NAME || !name.split('.').all(label_ok) {
        return Err(format!(
            "{name:?} cannot name a CSIDriver: use a lowercase DNS subdomain of at most \
             {MAX_DRIVER_NAME} characters, such as {PROVISIONER_HOSTPATH:?}"
        ));
    }
    Ok(name.to_owned())
}

/// An NFS provisioner name: what a StorageClass's `provisioner` may hold (`example.com/nfs`).
pub fn provisioner_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 316
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    ok.then(|| name.to_owned())
        .ok_or_else(|| format!("{name:?} is not a provisioner name such as {PROVISIONER_NFS:?}"))
}

/// hostPath and NFS dynamic provisioning. The controller (every volume write) runs under leader
/// election; with --node-name the process is the hostPath agent of that node.
#[derive(Debug, Clone, Parser)]
#[command(name = "provisioner", version, about)]
pub struct Args {
    /// Run the controller (every volume write, warnings, rescheduling) while holding the Lease.
    #[arg(long, env = "PROVISIONER_CONTROLLER", default_value_t = true, action = ArgAction::Set, value_parser = boolean)]
    pub controller: bool,

    /// The controller serves the hostPath class (placing volumes on nodes whose agents report).
    #[arg(long, env = "PROVISIONER_HOSTPATH", default_value_t = false, action = ArgAction::Set, value_parser = boolean)]
    pub hostpath: bool,

    /// The hostPath provisioner's name (controller and agents alike): StorageClasses with this
    /// `provisioner` are served, and a CSIDriver of this name with `storageCapacity: true` makes
    /// the scheduler read the capacity the controller publishes. A lowercase DNS subdomain of at
    /// most 63 characters. The default also serves classes of the earlier name
    /// `ballast.dev/hostpath`; another name does not.
    #[arg(long, env = "HOSTPATH_PROVISIONER_NAME", default_value = PROVISIONER_HOSTPATH, value_parser = csi_driver_name)]
    pub hostpath_provisioner_name: String,

    /// The NFS provisioner's name: StorageClasses with this `provisioner` are served.
    #[arg(long, env = "NFS_PROVISIONER_NAME", default_value = PROVISIONER_NFS, value_parser = provisioner_name)]
    pub nfs_provisioner_name: String,

    /// This node's name (downward API `spec.nodeName`): makes the process the node's hostPath
    /// agent, creating and deleting directories under --hostpath-base for volumes placed here.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// Directory under which hostPath volumes are created, the same path on the host and in the
    /// agent (the controller writes it into PVs).
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
    #[arg(long, env = "IS_NFS_SERVER", default_value_t = false, action = ArgAction::Set, value_parser = boolean)]
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

    /// The pod's own namespace (the controller's Lease and the agents' capacity reports) and
    /// this replica's name (in the Lease, in events and in its capacity report).
    #[command(flatten)]
    pub pod: PodArgs,

    /// Leader election for the controller, so that one replica at a time writes.
    #[command(flatten)]
    pub leader: LeaderArgs,

    /// The seed's name of `--lease-name` (`LEASE_NAME` wins when both are set).
    #[arg(long, env = "PROVISIONER_LEASE_NAME", hide = true)]
    pub provisioner_lease_name: Option<String>,

    /// Full re-examination of every claim and volume at least this often (watch events trigger
    /// one sooner); accepts `30s`, `5m`.
    #[arg(long, env = "PROVISIONER_RESYNC", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync: Duration,
}

impl Args {
    /// The service configuration these flags describe (with [`Args::into_parts`]'s options).
    pub fn into_config(self) -> Config {
        self.into_parts().0
    }

    /// The service configuration and options these flags describe.
    pub fn into_parts(self) -> (Config, Options) {
        let Args {
            controller,
            hostpath,
            hostpath_provisioner_name,
            nfs_provisioner_name,
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
            pod,
            mut leader,
            provisioner_lease_name,
            resync,
        } = self;
        let identity = pod.identity("provisioner");
        if leader.lease_name.as_deref().is_none_or(str::is_empty) {
            leader.lease_name = provisioner_lease_name;
        }
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
        let options = Options {
            provisioners: Provisioners::new(&hostpath_provisioner_name, &nfs_provisioner_name),
            report_lifetime: capacity::default_lifetime(),
        };
        let config = Config {
            controller: controller.then(|| ControllerConfig {
                lease: leader.lease(&pod, DEFAULT_LEASE_NAME, "provisioner"),
                hostpath: hostpath.then(|| hostpath_base.clone()),
                nfs,
            }),
            agent: node_name
                .filter(|n| !n.is_empty())
                .map(|node_name| AgentConfig {
                    node_name,
                    hostpath_base,
                }),
            namespace: pod.namespace,
            control_endpoint,
            control_client,
            admin_addr: SocketAddr::new(bind_address, admin_port),
            kube: KubeAccess::from(kube),
            identity,
            resync,
        };
        (config, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_the_controller_only_without_a_backend() {
        let c = Args::parse_from(["provisioner"]).into_config();
        let controller = c.controller.unwrap();
        assert!(controller.nfs.is_none());
        assert!(controller.hostpath.is_none());
        assert!(c.agent.is_none());
        assert_eq!(c.namespace, "ballast-system");
        assert_eq!(c.admin_addr.port(), 8080);
        assert_eq!(c.resync, Duration::from_secs(30));
    }

    #[test]
    fn the_daemonset_runs_the_agent_alone() {
        let c = Args::parse_from([
            "provisioner",
            "--node-name=node-1",
            "--controller=0",
            "--hostpath-base=/data",
        ])
        .into_config();
        assert!(c.controller.is_none());
        let agent = c.agent.unwrap();
        assert_eq!(agent.node_name, "node-1");
        assert_eq!(agent.hostpath_base, PathBuf::from("/data"));
    }

    #[test]
    fn the_hostpath_controller_writes_the_agents_base_path_into_volumes() {
        let c = Args::parse_from(["provisioner", "--hostpath=true", "--hostpath-base=/data"])
            .into_config();
        assert_eq!(c.controller.unwrap().hostpath, Some(PathBuf::from("/data")));
        assert!(c.agent.is_none());
    }

    #[test]
    fn nfs_server_mode_creates_directories_in_the_export_itself() {
        let c = Args::parse_from([
            "provisioner",
            "--nfs-server=10.0.0.5",
            "--nfs-path=/exports/k8s",
            "--is-nfs-server=1",
        ])
        .into_config();
        let nfs = c.controller.unwrap().nfs.unwrap();
        assert_eq!(nfs.server, "10.0.0.5");
        assert_eq!(nfs.mount, PathBuf::from("/exports/k8s"));
        assert_eq!(nfs.export_path, PathBuf::from("/exports/k8s"));
    }

    #[test]
    fn nfs_client_mode_uses_the_local_mount() {
        let c = Args::parse_from([
            "provisioner",
            "--nfs-server=nfs.example",
            "--nfs-mount=/mnt/x",
        ])
        .into_config();
        let nfs = c.controller.unwrap().nfs.unwrap();
        assert_eq!(nfs.mount, PathBuf::from("/mnt/x"));
        assert_eq!(nfs.export_path, PathBuf::from("/srv/nfs"));
    }

    #[test]
    fn the_controller_holds_the_default_lease_in_its_own_namespace() {
        let c = Args::parse_from(["provisioner", "--pod-namespace=ops", "--identity=p-0"])
            .into_config();
        assert_eq!(c.namespace, "ops");
        assert_eq!(c.identity, "p-0");
        let lease = c.controller.unwrap().lease.expect("elected by default");
        assert_eq!(
            (
                lease.namespace.as_str(),
                lease.name.as_str(),
                lease.identity.as_str()
            ),
            ("ops", "ballast-provisioner", "p-0")
        );
        assert_eq!(lease.lease_duration, Duration::from_secs(15));
    }

    #[test]
    fn leader_election_uses_the_shared_names_and_the_seeds_aliases() {
        let c = Args::parse_from([
            "provisioner",
            "--lease-namespace=old",
            "--lease-name=mine",
            "--lease-duration=30s",
        ])
        .into_config();
        let lease = c.controller.unwrap().lease.unwrap();
        assert_eq!(
            (lease.namespace.as_str(), lease.name.as_str()),
            ("old", "mine")
        );
        assert_eq!(lease.lease_duration, Duration::from_secs(30));
        assert_eq!(c.namespace, "old", "reports live beside the Lease");

        let c = Args::parse_from(["provisioner", "--provisioner-lease-name=seed"]).into_config();
        assert_eq!(c.controller.unwrap().lease.unwrap().name, "seed");
        let c = Args::parse_from([
            "provisioner",
            "--provisioner-lease-name=seed",
            "--lease-name=shared",
        ])
        .into_config();
        assert_eq!(c.controller.unwrap().lease.unwrap().name, "shared");

        let c = Args::parse_from(["provisioner", "--leader-elect=0"]).into_config();
        assert!(c.controller.unwrap().lease.is_none());
    }

    #[test]
    fn the_seed_lease_name_variable_is_read() {
        use clap::CommandFactory;
        let cmd = Args::command();
        let env = |name: &str| {
            cmd.get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == name))
                .map(|a| a.get_id().to_string())
        };
        assert_eq!(env("LEASE_NAME").as_deref(), Some("lease_name"));
        assert_eq!(
            env("PROVISIONER_LEASE_NAME").as_deref(),
            Some("provisioner_lease_name")
        );
    }

    #[test]
    fn provisioner_names_are_configurable_and_the_hostpath_one_must_name_a_csidriver() {
        use crate::plan::Backend;
        let (_, o) = Args::parse_from(["provisioner"]).into_parts();
        assert_eq!(o.provisioners, Provisioners::default());
        assert_eq!(
            o.provisioners.name(Backend::HostPath),
            "hostpath.ballast.dev"
        );
        assert_eq!(
            o.provisioners.backend("ballast.dev/hostpath"),
            Some(Backend::HostPath),
            "the earlier name is still served by default"
        );
        assert_eq!(o.report_lifetime, Duration::from_secs(40));
        let (_, o) = Args::parse_from([
            "provisioner",
            "--hostpath-provisioner-name=hostpath.team-b.example",
            "--nfs-provisioner-name=team-b.example/nfs",
        ])
        .into_parts();
        assert_eq!(
            o.provisioners.name(Backend::HostPath),
            "hostpath.team-b.example"
        );
        assert_eq!(o.provisioners.name(Backend::Nfs), "team-b.example/nfs");
        assert_eq!(o.provisioners.backend("ballast.dev/hostpath"), None);
        assert_eq!(o.provisioners.backend("ballast.dev/nfs"), None);
        for bad in [
            "ballast.dev/hostpath",
            "Hostpath.example",
            "-a.example",
            &"a".repeat(64),
            "",
        ] {
            assert!(
                Args::try_parse_from([
                    "provisioner",
                    &format!("--hostpath-provisioner-name={bad}")
                ])
                .is_err(),
                "{bad:?}"
            );
        }
        assert!(Args::try_parse_from(["provisioner", "--nfs-provisioner-name=a b"]).is_err());
        use clap::CommandFactory;
        let cmd = Args::command();
        let env = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(
            env("hostpath_provisioner_name").as_deref(),
            Some("HOSTPATH_PROVISIONER_NAME")
        );
        assert_eq!(
            env("nfs_provisioner_name").as_deref(),
            Some("NFS_PROVISIONER_NAME")
        );
    }

    #[test]
    fn booleans_take_the_shared_vocabulary() {
        assert!(Args::try_parse_from(["provisioner", "--hostpath=yes"]).is_err());
        let c = Args::parse_from(["provisioner", "--controller=0", "--hostpath=1"]).into_config();
        assert!(c.controller.is_none());
    }
}
