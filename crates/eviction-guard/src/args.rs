//! Command line and environment (the seed's variables keep their names).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use ballast_runtime::KubeAccess;
use ballast_runtime::bootstrap::SelfSignedArgs;
use ballast_runtime::flags::boolean;
use clap::{ArgAction, Parser};

use crate::mode::DEFAULT_CONFIGMAP;
use crate::release::{DEFAULT_NODES_PER_SECOND, ReleaseConfig, after_lift};
use crate::rules::{Policy, lift_hint};
use crate::storm::{DEFAULT_WORKER_SELECTOR, Selector, StormConfig};

/// Refuses evictions and deletions of pods on NotReady nodes while many worker nodes fail at
/// once, and serves the Ballast control API.
#[derive(Debug, Clone, Parser)]
#[command(name = "eviction-guard", version, about)]
#[command(mut_arg("lease_name", |a| a.help(
    "Name of the Lease of the leader that releases refused evictions, and of its ConfigMap \
     (default: eviction-guard-release)"
)))]
pub struct Args {
    /// Run outside the cluster: current kubeconfig, plain-HTTP webhook, no authentication on
    /// the control API and callbacks, servers on 127.0.0.1 unless --bind-address says otherwise.
    /// Refuses to start inside a cluster (KUBERNETES_SERVICE_HOST set).
    #[arg(long, env = "LOCAL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, value_parser = boolean)]
    pub local: bool,
    /// Address every server binds to (default 0.0.0.0; 127.0.0.1 with --local).
    #[arg(long, env = "BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,
    /// Port of the webhook (`/validate`) and the seed's `/callback/*` endpoints (HTTPS).
    #[arg(long, env = "WEBHOOK_PORT", default_value_t = 8443)]
    pub webhook_port: u16,
    /// Port of `/healthz`, `/readyz` and `/metrics` (plain HTTP; default 8080, or 8081 when the
    /// webhook port is 8080, as in the seed's `WEBHOOK_PORT=8080 ... --local`).
    #[arg(long, env = "ADMIN_PORT")]
    pub admin_port: Option<u16>,
    /// Port of the gRPC control service.
    #[arg(long, env = "GRPC_PORT", default_value_t = 9090)]
    pub grpc_port: u16,
    #[command(flatten)]
    pub certs: ballast_runtime::tls::ServingCertArgs,
    #[command(flatten)]
    pub kube: ballast_runtime::kubeclient::KubeconfigArgs,
    #[command(flatten)]
    pub shutdown: ballast_runtime::shutdown::ShutdownArgs,
    /// The guard's namespace (where the mode ConfigMap and the Lease live) and replica name.
    #[command(flatten)]
    pub pod: ballast_runtime::flags::PodArgs,
    /// Leader election for the release of refused evictions.
    #[command(flatten)]
    pub leader: ballast_runtime::flags::LeaderArgs,
    /// Name of the ConfigMap holding the interception mode.
    #[arg(long, env = "MODE_CONFIGMAP", default_value = DEFAULT_CONFIGMAP)]
    pub mode_configmap: String,
    /// Worker nodes that must become NotReady within the window to start protection.
    #[arg(long, env = "NODE_NOTREADY_THRESHOLD", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub threshold: u32,
    /// The storm window, e.g. `300s`, `5m`, `1h`.
    #[arg(long, env = "NODE_NOTREADY_WINDOW", default_value = "5m",
          value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Also require this fraction (0 to 1) of worker nodes to be NotReady (like the node
    /// lifecycle controller's --unhealthy-zone-threshold). Off by default.
    #[arg(long, env = "NODE_NOTREADY_MIN_FRACTION", value_parser = parse_fraction)]
    pub min_notready_fraction: Option<f64>,
    /// Count NotReady nodes per `topology.kubernetes.io/zone` instead of cluster-wide.
    #[arg(long, env = "NODE_NOTREADY_PER_ZONE", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, value_parser = boolean)]
    pub per_zone: bool,
    /// How long fewer than the threshold of worker nodes must have been NotReady before a storm
    /// is over (protection holds meanwhile for the nodes still NotReady, and only then are
    /// refused evictions of nodes that stayed dead released): a healing partition's kubelets
    /// come back over seconds, not in one instant. Default: a node monitor grace period (50s)
    /// plus a kubelet status interval (10s).
    #[arg(long, env = "STORM_SETTLE", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub storm_settle: Duration,
    /// Label selector choosing the worker nodes (`key`, `!key`, `key=value`, `key!=value`).
    #[arg(long, env = "WORKER_SELECTOR", default_value = DEFAULT_WORKER_SELECTOR)]
    pub worker_selector: Selector,
    /// Users never refused (comma-separated).
    #[arg(long, env = "EXEMPT_USERS", value_delimiter = ',')]
    pub exempt_users: Vec<String>,
    /// Groups never refused (comma-separated).
    #[arg(long, env = "EXEMPT_GROUPS", value_delimiter = ',')]
    pub exempt_groups: Vec<String>,
    /// Refuse status updates marking protected pods not Ready / Failed / DisruptionTarget.
    /// Refusing them keeps Services routing to pods on dead nodes; `false` is the remedy.
    #[arg(long, env = "INTERCEPT_STATUS_UPDATES", default_value_t = true, action = ArgAction::Set,
          value_parser = boolean)]
    pub intercept_status_updates: bool,
    /// Require authentication (verb `get`) for `/callback/status` and the gRPC reads too.
    #[arg(long, env = "REQUIRE_AUTH_FOR_READS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, value_parser = boolean)]
    pub require_auth_for_reads: bool,
    /// Mode changes accepted per second from one client address, callbacks and gRPC each
    /// (beyond: 429 / RESOURCE_EXHAUSTED).
    #[arg(long, env = "MODE_WRITES_PER_SECOND", default_value = "5")]
    pub mode_writes_per_second: NonZeroU32,
    /// Self-signed serving certificate (clusters without cert-manager).
    #[command(flatten)]
    pub self_signed: SelfSignedArgs,
    /// Address of the control service as operators reach it, quoted in denial messages.
    #[arg(
        long,
        env = "CONTROL_ADDRESS",
        default_value = "eviction-guard.ballast-system.svc:9090"
    )]
    pub control_address: String,
    /// Serve the gRPC control service over TLS with the webhook's certificate, so bearer tokens
    /// for SetMode never cross the network in clear (clients then use the CA: `grpcurl -cacert`).
    #[arg(long, env = "GRPC_TLS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false, value_parser = boolean)]
    pub grpc_tls: bool,
    /// Accept on the control API and callbacks only bearer tokens issued for these audiences
    /// (comma-separated; `kubectl create token SA --audience AUD`), checked by TokenReview. A
    /// token made for the guard is then useless against the API server, and the API server's
    /// own tokens are refused here. Unset: tokens for the API server's audience.
    #[arg(long, env = "TOKEN_AUDIENCE", value_delimiter = ',')]
    pub token_audience: Vec<String>,
    /// When protection lifts for a node still NotReady and tainted NoExecute, complete the
    /// node controller's evictions the guard refused (it gives up after five refusals): mark the
    /// pods DisruptionTarget and delete them, rate-limited, by the leader replica only.
    #[arg(long, env = "RELEASE_REFUSED_EVICTIONS", default_value_t = true, action = ArgAction::Set,
          value_parser = boolean)]
    pub release_refused_evictions: bool,
    /// Nodes whose refused evictions are released per second (like the node controller's
    /// --node-eviction-rate).
    #[arg(long, env = "RELEASE_NODES_PER_SECOND", default_value_t = DEFAULT_NODES_PER_SECOND,
          value_parser = parse_rate)]
    pub release_nodes_per_second: f64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if f > 0.0 && f.is_finite() {
        Ok(f)
    } else {
        Err(format!("{f} is not a positive rate"))
    }
}

/// The admin server's port unless set.
pub const DEFAULT_ADMIN_PORT: u16 = 8080;
/// Where the admin server goes when the webhook takes 8080.
pub const FALLBACK_ADMIN_PORT: u16 = 8081;

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|e| format!("not a number: {e}"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{f} is not a fraction between 0 and 1"))
    }
}

/// Everything `run` needs, built from [`Args`] or directly by tests.
#[derive(Debug, Clone)]
pub struct Config {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Serving certificate and key for the webhook; None serves plain HTTP (`--local`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// When its Secret is set, generate (or reuse) the serving certificate, write it to the
    /// `tls` paths' directory and inject its CA into the webhook configuration.
    pub self_signed: SelfSignedArgs,
    /// No authentication on the control API and callbacks.
    pub no_auth: bool,
    /// How to reach the API server: the shared kube flags, or a client handed in.
    pub kube: KubeAccess,
    /// The guard's own namespace: the mode ConfigMap, the Lease, the self-signed Secret.
    pub namespace: String,
    pub mode_configmap: String,
    pub storm: StormConfig,
    pub worker_selector: Selector,
    pub policy: Policy,
    pub require_auth_for_reads: bool,
    pub mode_writes_per_second: NonZeroU32,
    /// Serve gRPC over TLS with the webhook certificate (ignored without `tls`).
    pub grpc_tls: bool,
    /// Audiences a caller's token must be issued for (empty: the API server's).
    pub token_audiences: Vec<String>,
    /// Release of refused evictions once protection lifts.
    pub release: ReleaseConfig,
}

impl Config {
    /// Every server on `127.0.0.1:0`, plain HTTP, authentication on, defaults otherwise, with
    /// `client`: the starting point for tests (set `tls`, `namespace`, ... as needed).
    pub fn loopback(client: kube::Client) -> Self {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Config {
            webhook_addr: any,
            admin_addr: any,
            grpc_addr: any,
            tls: None,
            self_signed: SelfSignedArgs::default(),
            no_auth: false,
            kube: KubeAccess::Client(client),
            namespace: ballast_runtime::flags::DEFAULT_NAMESPACE.to_owned(),
            mode_configmap: DEFAULT_CONFIGMAP.to_owned(),
            storm: StormConfig::default(),
            worker_selector: DEFAULT_WORKER_SELECTOR
                .parse()
                .unwrap_or_else(|_| Selector::match_all()),
            policy: Policy::default(),
            require_auth_for_reads: false,
            mode_writes_per_second: ballast_control::DEFAULT_SET_MODE_PER_SECOND,
            grpc_tls: false,
            token_audiences: Vec::new(),
            release: ReleaseConfig::default(),
        }
    }
}

impl Args {
    /// What must hold before starting; `kubernetes_service_host` is the environment's
    /// `KUBERNETES_SERVICE_HOST` (set in every pod).
    pub fn check(&self, kubernetes_service_host: Option<&str>) -> Result<(), String> {
        if self.local
            && let Some(host) = kubernetes_service_host.filter(|h| !h.is_empty())
        {
            return Err(format!(
                "--local turns authentication off and must not run in a cluster, but \
                 KUBERNETES_SERVICE_HOST is set ({host}); drop --local (LOCAL)"
            ));
        }
        let admin = self.admin_port();
        for (port, flag) in [
            (self.webhook_port, "--webhook-port (WEBHOOK_PORT)"),
            (self.grpc_port, "--grpc-port (GRPC_PORT)"),
        ] {
            if port != 0 && port == admin {
                return Err(format!(
                    "the admin server and {flag} both use port {port}: set --admin-port \
                     (ADMIN_PORT) to another port"
                ));
            }
        }
        if self.webhook_port != 0 && self.webhook_port == self.grpc_port {
            return Err(format!(
                "--webhook-port (WEBHOOK_PORT) and --grpc-port (GRPC_PORT) both use port {}: set \
                 one of them to another port",
                self.webhook_port
            ));
        }
        Ok(())
    }

    fn admin_port(&self) -> u16 {
        match self.admin_port {
            Some(p) => p,
            None if self.webhook_port == DEFAULT_ADMIN_PORT => FALLBACK_ADMIN_PORT,
            None => DEFAULT_ADMIN_PORT,
        }
    }

    pub fn into_config(self) -> Config {
        let admin_port = self.admin_port();
        let Args {
            local,
            bind_address,
            webhook_port,
            admin_port: _,
            grpc_port,
            certs,
            kube,
            // Read by main, which owns the signal handling.
            shutdown: _,
            pod,
            leader,
            mode_configmap,
            threshold,
            window,
            min_notready_fraction,
            per_zone,
            storm_settle,
            worker_selector,
            exempt_users,
            exempt_groups,
            intercept_status_updates,
            require_auth_for_reads,
            mode_writes_per_second,
            self_signed,
            control_address,
            grpc_tls,
            token_audience,
            release_refused_evictions,
            release_nodes_per_second,
        } = self;
        let tls = (!local).then(|| certs.paths());
        let bind_address = bind_address.unwrap_or(if local {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        let nonempty = |v: Vec<String>| {
            v.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let defaults = ReleaseConfig::default();
        let release = ReleaseConfig {
            enabled: release_refused_evictions,
            leader_elect: leader.leader_elect,
            nodes_per_second: release_nodes_per_second,
            identity: pod.identity("eviction-guard"),
            lease_name: leader
                .lease_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or(defaults.lease_name),
            lease_duration: leader.lease_duration,
            renew_every: leader.lease_renew_every,
        };
        Config {
            webhook_addr: SocketAddr::new(bind_address, webhook_port),
            admin_addr: SocketAddr::new(bind_address, admin_port),
            grpc_addr: SocketAddr::new(bind_address, grpc_port),
            tls,
            self_signed,
            no_auth: local,
            kube: KubeAccess::from(kube),
            namespace: pod.namespace,
            mode_configmap,
            storm: StormConfig {
                threshold: threshold as usize,
                window,
                min_fraction: min_notready_fraction,
                per_zone,
                settle: storm_settle,
            },
            worker_selector,
            policy: Policy {
                exempt_users: nonempty(exempt_users),
                exempt_groups: nonempty(exempt_groups),
                intercept_status: intercept_status_updates,
                lift_hint: lift_hint(&control_address, grpc_tls),
                after_lift: after_lift(&release),
            },
            require_auth_for_reads,
            mode_writes_per_second,
            grpc_tls,
            token_audiences: token_audience,
            release,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_seed() {
        let cfg = Args::try_parse_from(["eviction-guard"])
            .unwrap()
            .into_config();
        assert_eq!(cfg.webhook_addr.port(), 8443);
        assert_eq!(cfg.admin_addr.port(), 8080);
        assert_eq!(cfg.grpc_addr.port(), 9090);
        assert_eq!(cfg.storm.threshold, 3);
        assert_eq!(cfg.storm.window, Duration::from_secs(300));
        assert_eq!(
            cfg.tls,
            Some((
                PathBuf::from("/tmp/k8s-webhook-server/serving-certs/tls.crt"),
                PathBuf::from("/tmp/k8s-webhook-server/serving-certs/tls.key")
            ))
        );
        assert!(!cfg.no_auth);
        assert!(cfg.policy.intercept_status);
        assert!(cfg.release.enabled);
        assert_eq!(cfg.release.nodes_per_second, 0.1);
    }

    #[test]
    fn the_seeds_local_mode_on_webhook_port_8080_moves_the_admin_server_to_8081() {
        let args =
            Args::try_parse_from(["eviction-guard", "--local", "--webhook-port", "8080"]).unwrap();
        assert_eq!(args.check(None), Ok(()));
        let cfg = args.into_config();
        assert_eq!(cfg.webhook_addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.admin_addr, "127.0.0.1:8081".parse().unwrap());
        let cfg = Args::try_parse_from(["eviction-guard", "--local", "--bind-address", "0.0.0.0"])
            .unwrap()
            .into_config();
        assert_eq!(cfg.grpc_addr, "0.0.0.0:9090".parse().unwrap());
        let cfg = Args::try_parse_from(["eviction-guard"])
            .unwrap()
            .into_config();
        assert_eq!(cfg.admin_addr, "0.0.0.0:8080".parse().unwrap());
    }

    #[test]
    fn clashing_ports_and_local_mode_in_a_cluster_are_refused_naming_the_flag() {
        let clash = Args::try_parse_from([
            "eviction-guard",
            "--webhook-port",
            "9000",
            "--admin-port",
            "9000",
        ])
        .unwrap();
        let err = clash.check(None).unwrap_err();
        assert!(err.contains("set --admin-port (ADMIN_PORT)"), "{err}");
        let local = Args::try_parse_from(["eviction-guard", "--local"]).unwrap();
        let err = local.check(Some("10.96.0.1")).unwrap_err();
        assert!(
            err.contains("KUBERNETES_SERVICE_HOST is set (10.96.0.1)"),
            "{err}"
        );
        assert_eq!(local.check(Some("")), Ok(()));
        let in_cluster = Args::try_parse_from(["eviction-guard"]).unwrap();
        assert_eq!(in_cluster.check(Some("10.96.0.1")), Ok(()));
        let zeros = Args::try_parse_from([
            "eviction-guard",
            "--webhook-port=0",
            "--admin-port=0",
            "--grpc-port=0",
        ])
        .unwrap();
        assert_eq!(zeros.check(None), Ok(()), "0 is any free port");
    }

    #[test]
    fn release_of_refused_evictions_can_be_turned_off_and_its_rate_set() {
        let cfg = Args::try_parse_from([
            "eviction-guard",
            "--release-refused-evictions",
            "false",
            "--release-nodes-per-second",
            "2",
            "--identity",
            "guard-0",
        ])
        .unwrap()
        .into_config();
        assert!(!cfg.release.enabled);
        assert_eq!(cfg.release.nodes_per_second, 2.0);
        assert_eq!(cfg.release.identity, "guard-0");
        assert!(
            Args::try_parse_from(["eviction-guard", "--release-nodes-per-second", "0"]).is_err()
        );
    }

    #[test]
    fn self_signed_flags_are_read() {
        let cfg = Args::try_parse_from([
            "eviction-guard",
            "--self-signed-secret",
            "eviction-guard-tls",
            "--webhook-configuration",
            "eviction-guard",
            "--webhook-service-dns",
            "eviction-guard.ballast-system.svc",
        ])
        .unwrap()
        .into_config();
        assert_eq!(
            cfg.self_signed.self_signed_secret.as_deref(),
            Some("eviction-guard-tls")
        );
        assert_eq!(
            cfg.self_signed.webhook_configuration.as_deref(),
            Some("eviction-guard")
        );
        assert_eq!(
            cfg.self_signed.webhook_service_dns.as_deref(),
            Some("eviction-guard.ballast-system.svc")
        );
    }

    #[test]
    fn window_accepts_seconds_minutes_and_hours() {
        for (text, secs) in [("300s", 300), ("5m", 300), ("1h", 3600)] {
            let args = Args::try_parse_from(["eviction-guard", "--window", text]).unwrap();
            assert_eq!(args.window, Duration::from_secs(secs), "{text}");
        }
        assert!(Args::try_parse_from(["eviction-guard", "--window", "soon"]).is_err());
    }

    #[test]
    fn local_serves_plain_http_without_auth_and_flags_parse() {
        let cfg = Args::try_parse_from([
            "eviction-guard",
            "--local",
            "--threshold",
            "5",
            "--min-notready-fraction",
            "0.5",
            "--per-zone",
            "--exempt-groups",
            "ops, system:masters",
            "--intercept-status-updates",
            "false",
        ])
        .unwrap()
        .into_config();
        assert!(cfg.tls.is_none() && cfg.no_auth);
        assert_eq!(
            cfg.webhook_addr.ip(),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "--local stays on loopback"
        );
        assert_eq!(cfg.storm.threshold, 5);
        assert_eq!(cfg.storm.min_fraction, Some(0.5));
        assert!(cfg.storm.per_zone);
        assert_eq!(
            cfg.policy.exempt_groups.iter().collect::<Vec<_>>(),
            ["ops", "system:masters"]
        );
        assert!(!cfg.policy.intercept_status);
        assert!(Args::try_parse_from(["eviction-guard", "--threshold", "0"]).is_err());
        assert!(Args::try_parse_from(["eviction-guard", "--min-notready-fraction", "2"]).is_err());
    }
}
