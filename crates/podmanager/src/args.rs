//! Command line and environment (clap derive; every flag has an env twin).

use std::net::{IpAddr, SocketAddr};

use clap::{ArgAction, Parser, Subcommand};

use crate::Config;
use crate::webhook::{SelfSigned, WebhookConfig};

/// PodManager operator: keeps ordinal pods for every PodManager (apps.mycompany.com/v1).
#[derive(Debug, Parser)]
#[command(name = "podmanager", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address every server binds to.
    #[arg(long, env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Port of the admin endpoints (/healthz, /readyz, /metrics).
    #[arg(long, env = "ADMIN_PORT", default_value_t = 8080)]
    pub admin_port: u16,

    #[command(flatten)]
    pub kube: ballast_runtime::kubeclient::KubeconfigArgs,

    /// Only manage PodManagers in this namespace (all namespaces when unset).
    #[arg(long = "watch-namespace", alias = "namespace", env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// The operator's own namespace (its Lease, its Secret) and replica name.
    #[command(flatten)]
    pub pod: ballast_runtime::flags::PodArgs,

    /// Leader election, so that only one replica reconciles.
    #[command(flatten)]
    pub leader: ballast_runtime::flags::LeaderArgs,

    /// Control service URL (eviction-guard's gRPC port) for node health and eviction protection;
    /// without it, node health comes from the Node objects and protection is never assumed.
    #[arg(long, env = "CONTROL_ENDPOINT")]
    pub control_endpoint: Option<String>,
    /// TLS and token for the control service.
    #[command(flatten)]
    pub control_client: ballast_control::ControlClientArgs,

    /// Serve the v1/v2 conversion webhook (`/convert`), which the API server needs to serve v2.
    #[arg(long, env = "CONVERSION_WEBHOOK", default_value_t = true, action = ArgAction::Set,
          value_parser = ballast_runtime::flags::boolean)]
    pub conversion_webhook: bool,

    /// Port of the conversion webhook (HTTPS; plain HTTP with --local).
    #[arg(long, env = "WEBHOOK_PORT", default_value_t = 8443)]
    pub webhook_port: u16,

    #[command(flatten)]
    pub certs: ballast_runtime::tls::ServingCertArgs,

    #[command(flatten)]
    pub shutdown: ballast_runtime::shutdown::ShutdownArgs,

    /// Run outside the cluster: the conversion webhook over plain HTTP. Never in production.
    #[arg(long, env = "LOCAL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false,
          value_parser = ballast_runtime::flags::boolean)]
    pub local: bool,

    /// Generate the webhook's certificate at start-up (no cert-manager), keep it in this Secret
    /// in --pod-namespace, and inject its CA into the CRD's conversion webhook.
    #[arg(long, env = "SELF_SIGNED_SECRET")]
    pub self_signed_secret: Option<String>,

    /// DNS name of the webhook Service, for the self-signed certificate.
    #[arg(
        long,
        env = "WEBHOOK_SERVICE_DNS",
        default_value = "podmanager.ballast-system.svc"
    )]
    pub webhook_service_dns: String,
}

/// What the binary does.
#[derive(Debug, Subcommand, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the operator (the default).
    Run,
    /// Print the PodManager CustomResourceDefinition as YAML.
    Crd,
}

impl Args {
    /// The operator configuration these arguments describe.
    pub fn config(&self) -> Config {
        let Args {
            command: _,
            bind_address,
            admin_port,
            kube,
            watch_namespace,
            pod,
            leader,
            control_endpoint,
            control_client,
            conversion_webhook,
            webhook_port,
            certs,
            // Read by main, which owns the signal handling.
            shutdown: _,
            local,
            self_signed_secret,
            webhook_service_dns,
        } = self;
        let webhook = conversion_webhook.then(|| WebhookConfig {
            addr: SocketAddr::new(*bind_address, *webhook_port),
            tls: (!local).then(|| certs.paths()),
            self_signed: self_signed_secret.clone().map(|secret| SelfSigned {
                secret,
                namespace: pod.namespace.clone(),
                service_dns: webhook_service_dns.clone(),
                crd: crate::crd::CRD_NAME.into(),
            }),
        });
        Config {
            admin_addr: SocketAddr::new(*bind_address, *admin_port),
            kube: ballast_runtime::KubeAccess::from(kube.clone()),
            watch_namespace: watch_namespace.clone(),
            leader_election: leader.lease(pod, "podmanager", "podmanager"),
            identity: pod.identity("podmanager"),
            control_endpoint: control_endpoint.clone(),
            control_client: control_client.clone(),
            webhook,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn defaults_elect_a_leader_in_ballast_system_and_serve_admin_on_8080() {
        let args = Args::try_parse_from(["podmanager", "--identity", "pm-a"]).expect("parse");
        assert_eq!(args.command, None);
        let config = args.config();
        assert_eq!(config.admin_addr.port(), 8080);
        let le = config
            .leader_election
            .expect("leader election on by default");
        assert_eq!(config.identity, "pm-a");
        assert_eq!(
            (
                le.namespace.as_str(),
                le.name.as_str(),
                le.identity.as_str()
            ),
            ("ballast-system", "podmanager", "pm-a")
        );
        assert_eq!(le.lease_duration, std::time::Duration::from_secs(15));
        let webhook = config.webhook.expect("conversion webhook on by default");
        assert_eq!(webhook.addr.port(), 8443);
        assert_eq!(
            webhook.tls,
            Some((
                PathBuf::from("/tmp/k8s-webhook-server/serving-certs/tls.crt"),
                PathBuf::from("/tmp/k8s-webhook-server/serving-certs/tls.key")
            ))
        );
        assert_eq!(webhook.self_signed, None);
    }

    #[test]
    fn self_signed_mode_names_the_secret_service_and_crd() {
        let args = Args::try_parse_from([
            "podmanager",
            "--self-signed-secret",
            "podmanager-tls",
            "--lease-namespace",
            "ops",
        ])
        .expect("parse");
        let webhook = args.config().webhook.expect("webhook");
        assert_eq!(
            webhook.self_signed,
            Some(SelfSigned {
                secret: "podmanager-tls".into(),
                namespace: "ops".into(),
                service_dns: "podmanager.ballast-system.svc".into(),
                crd: "podmanagers.apps.mycompany.com".into(),
            })
        );
        let local = Args::try_parse_from(["podmanager", "--local"]).expect("parse");
        assert_eq!(local.config().webhook.expect("webhook").tls, None);
        let local = Args::try_parse_from(["podmanager", "--local=1", "crd"]).expect("parse");
        assert_eq!(local.command, Some(Command::Crd));
        assert_eq!(local.config().webhook.expect("webhook").tls, None);
    }

    #[test]
    fn admin_port_and_bind_address_replace_the_admin_address_and_the_namespaces_are_apart() {
        let args = Args::try_parse_from([
            "podmanager",
            "--bind-address",
            "127.0.0.1",
            "--admin-port",
            "9080",
            "--watch-namespace",
            "shop",
            "--pod-namespace",
            "ops",
        ])
        .expect("parse");
        let config = args.config();
        assert_eq!(config.admin_addr, "127.0.0.1:9080".parse().unwrap());
        assert_eq!(config.watch_namespace.as_deref(), Some("shop"));
        assert_eq!(config.leader_election.expect("lease").namespace, "ops");
        let old = Args::try_parse_from(["podmanager", "--namespace", "shop"]).expect("parse");
        assert_eq!(old.config().watch_namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn leader_election_can_be_turned_off_and_crd_is_a_subcommand() {
        let args =
            Args::try_parse_from(["podmanager", "--leader-elect", "false", "crd"]).expect("parse");
        assert_eq!(args.command, Some(Command::Crd));
        assert!(args.config().leader_election.is_none());
    }
}
