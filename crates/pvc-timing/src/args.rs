//! Command line and environment (every flag has an env twin; the seed's variables are honoured).

use std::net::{IpAddr, SocketAddr};

use ballast_runtime::flags::boolean;
use clap::{ArgAction, Parser};

use crate::controller::ControllerConfig;
use crate::{Config, KubeAccess, WebhookConfig};

/// PVC phase history: a mutating webhook keeping the `pvc-timing` annotation, and a controller
/// adding `webhook-trigger` to Bound claims. Both run by default; each can be switched off.
#[derive(Debug, Clone, Parser)]
#[command(name = "pvc-timing", version, about)]
pub struct Args {
    /// Serve the mutating webhook (`/mutate`).
    #[arg(long, env = "PVC_TIMING_WEBHOOK", default_value_t = true, action = ArgAction::Set,
          value_parser = boolean)]
    pub webhook: bool,

    /// Run the controller that adds `webhook-trigger` to Bound claims.
    #[arg(long, env = "PVC_TIMING_CONTROLLER", default_value_t = true, action = ArgAction::Set,
          value_parser = boolean)]
    pub controller: bool,

    /// Port of the webhook server (HTTPS; plain HTTP with --local).
    #[arg(long, env = "WEBHOOK_PORT", default_value_t = 8443)]
    pub webhook_port: u16,

    /// Port of the admin server: /healthz, /readyz, /metrics.
    #[arg(long, env = "ADMIN_PORT", default_value_t = 8080)]
    pub admin_port: u16,

    /// Address both servers listen on.
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    #[command(flatten)]
    pub certs: ballast_runtime::tls::ServingCertArgs,

    #[command(flatten)]
    pub kube: ballast_runtime::kubeclient::KubeconfigArgs,

    #[command(flatten)]
    pub shutdown: ballast_runtime::shutdown::ShutdownArgs,

    /// Run outside the cluster: webhook over plain HTTP, current kubeconfig. Never in production.
    #[arg(long, env = "LOCAL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false,
          value_parser = ballast_runtime::flags::boolean)]
    pub local: bool,

    #[command(flatten)]
    pub pod: ballast_runtime::flags::PodArgs,

    /// Leader election for the controller, so replicas add each trigger once.
    #[command(flatten)]
    pub leader: ballast_runtime::flags::LeaderArgs,

    /// Namespaces the controller leaves alone (the webhook configuration excludes them too).
    #[arg(
        long,
        env = "PVC_TIMING_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system,ballast-system"
    )]
    pub exclude_namespaces: Vec<String>,

    #[command(flatten)]
    pub self_signed: ballast_runtime::bootstrap::SelfSignedArgs,
}

impl Args {
    /// The service configuration these flags describe.
    pub fn into_config(self) -> Config {
        let Args {
            webhook,
            controller,
            webhook_port,
            admin_port,
            bind_address,
            certs,
            kube,
            // Read by main, which owns the signal handling.
            shutdown: _,
            local,
            pod,
            leader,
            exclude_namespaces,
            self_signed,
        } = self;
        let tls = (!local).then(|| certs.paths());
        Config {
            webhook: webhook.then(|| WebhookConfig {
                addr: SocketAddr::new(bind_address, webhook_port),
                tls,
                self_signed: Some(crate::SelfSigned {
                    args: self_signed,
                    namespace: pod.namespace.clone(),
                }),
            }),
            controller: controller.then(|| ControllerConfig {
                leader: leader.lease(&pod, "pvc-timing", "pvc-timing"),
                excluded_namespaces: exclude_namespaces
                    .into_iter()
                    .map(|ns| ns.trim().to_owned())
                    .filter(|ns| !ns.is_empty())
                    .collect(),
            }),
            admin_addr: SocketAddr::new(bind_address, admin_port),
            kube: KubeAccess::from(kube),
            clock: std::sync::Arc::new(crate::SystemClock),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn parse(args: &[&str]) -> Config {
        Args::try_parse_from(std::iter::once("pvc-timing").chain(args.iter().copied()))
            .unwrap()
            .into_config()
    }

    #[test]
    fn defaults_run_both_components_with_tls_from_the_cert_dir() {
        let config = parse(&[]);
        let webhook = config.webhook.unwrap();
        assert_eq!(webhook.addr.port(), 8443);
        assert_eq!(
            webhook.tls,
            Some((
                PathBuf::from("/tmp/k8s-webhook-server/serving-certs/tls.crt"),
                PathBuf::from("/tmp/k8s-webhook-server/serving-certs/tls.key")
            ))
        );
        let controller = config.controller.unwrap();
        assert_eq!(controller.leader.unwrap().name, "pvc-timing");
        assert_eq!(
            controller.excluded_namespaces,
            vec!["kube-system", "ballast-system"]
        );
        assert_eq!(config.admin_addr.port(), 8080);
    }

    #[test]
    fn seed_tls_files_override_the_cert_dir() {
        let config = parse(&[
            "--tls-cert-file",
            "/certs/a.crt",
            "--tls-key-file",
            "/certs/a.key",
        ]);
        assert_eq!(
            config.webhook.unwrap().tls,
            Some((PathBuf::from("/certs/a.crt"), PathBuf::from("/certs/a.key")))
        );
    }

    #[test]
    fn each_component_can_be_switched_off() {
        let config = parse(&["--webhook", "false"]);
        assert!(config.webhook.is_none());
        assert!(config.controller.is_some());
        let config = parse(&["--controller=false", "--webhook-port", "9443"]);
        assert!(config.controller.is_none());
        assert_eq!(config.webhook.unwrap().addr.port(), 9443);
    }

    #[test]
    fn local_serves_plain_http() {
        assert_eq!(parse(&["--local"]).webhook.unwrap().tls, None);
        assert_eq!(parse(&["--local=1"]).webhook.unwrap().tls, None);
        assert!(parse(&["--local=0"]).webhook.unwrap().tls.is_some());
    }

    #[test]
    fn leader_election_uses_the_shared_names() {
        let config = parse(&[
            "--leader-elect",
            "1",
            "--pod-namespace",
            "ops",
            "--lease-name",
            "timing",
            "--identity",
            "pt-0",
        ]);
        let lease = config.controller.unwrap().leader.unwrap();
        assert_eq!(
            (
                lease.namespace.as_str(),
                lease.name.as_str(),
                lease.identity.as_str()
            ),
            ("ops", "timing", "pt-0")
        );
        assert!(
            parse(&["--leader-elect", "0"])
                .controller
                .unwrap()
                .leader
                .is_none()
        );
    }
}
