//! Command line and environment (clap derive; every flag has an env twin).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};

use crate::webhook::{SelfSigned, WebhookConfig};
use crate::{Config, LeaderElection};

/// PodManager operator: keeps ordinal pods for every PodManager (apps.mycompany.com/v1).
#[derive(Debug, Parser)]
#[command(name = "podmanager", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the admin endpoints (/healthz, /readyz, /metrics).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Kubeconfig file; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "KUBE_CONTEXT")]
    pub context: Option<String>,

    /// Only manage PodManagers in this namespace (all namespaces when unset).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader Lease (the operator's own namespace in cluster).
    #[arg(long, env = "POD_NAMESPACE", default_value = "ballast-system")]
    pub lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "podmanager")]
    pub lease_name: String,

    /// How long a Lease stays valid without renewal (e.g. `15s`).
    #[arg(long, env = "LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,

    /// How often the leader renews the Lease and followers retry (e.g. `2s`).
    #[arg(long, env = "LEASE_RENEW_EVERY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub lease_renew_every: Duration,

    /// This replica's identity for the Lease and on Events (the pod name in cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Control service URL (eviction-guard's gRPC port) for node health and eviction protection;
    /// without it, node health comes from the Node objects and protection is never assumed.
    #[arg(long, env = "CONTROL_ENDPOINT")]
    pub control_endpoint: Option<String>,
    /// TLS and token for the control service.
    #[command(flatten)]
    pub control_client: ballast_control::ControlClientArgs,

    /// Serve the v1/v2 conversion webhook (`/convert`), which the API server needs to serve v2.
    #[arg(long, env = "CONVERSION_WEBHOOK", default_value_t = true, action = ArgAction::Set)]
    pub conversion_webhook: bool,

    /// Port of the conversion webhook (HTTPS; plain HTTP with --local).
    #[arg(long, env = "WEBHOOK_PORT", default_value_t = 8443)]
    pub webhook_port: u16,

    #[command(flatten)]
    pub certs: ballast_runtime::tls::ServingCertArgs,

    #[command(flatten)]
    pub shutdown: ballast_runtime::shutdown::ShutdownArgs,

    /// Run outside the cluster: the conversion webhook over plain HTTP. Never in production.
    #[arg(long, env = "PODMANAGER_LOCAL")]
    pub local: bool,

    /// Generate the webhook's certificate at start-up (no cert-manager), keep it in this Secret
    /// in --lease-namespace, and inject its CA into the CRD's conversion webhook.
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
            admin_addr,
            kubeconfig,
            context,
            namespace,
            leader_elect,
            lease_namespace,
            lease_name,
            lease_duration,
            lease_renew_every,
            identity,
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
            addr: SocketAddr::new(admin_addr.ip(), *webhook_port),
            tls: (!local).then(|| certs.paths()),
            self_signed: self_signed_secret.clone().map(|secret| SelfSigned {
                secret,
                namespace: lease_namespace.clone(),
                service_dns: webhook_service_dns.clone(),
                crd: crate::crd::CRD_NAME.into(),
            }),
        });
        let identity = identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("podmanager-{}", std::process::id()));
        Config {
            admin_addr: *admin_addr,
            kubeconfig: kubeconfig.clone(),
            context: context.clone(),
            namespace: namespace.clone(),
            leader_election: leader_elect.then(|| LeaderElection {
                namespace: lease_namespace.clone(),
                name: lease_name.clone(),
                identity: identity.clone(),
                lease_duration: *lease_duration,
                renew_every: *lease_renew_every,
            }),
            identity,
            control_endpoint: control_endpoint.clone(),
            control_client: control_client.clone(),
            webhook,
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            (
                le.namespace.as_str(),
                le.name.as_str(),
                le.identity.as_str()
            ),
            ("ballast-system", "podmanager", "pm-a")
        );
        assert_eq!(le.lease_duration, Duration::from_secs(15));
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
    }

    #[test]
    fn leader_election_can_be_turned_off_and_crd_is_a_subcommand() {
        let args =
            Args::try_parse_from(["podmanager", "--leader-elect", "false", "crd"]).expect("parse");
        assert_eq!(args.command, Some(Command::Crd));
        assert!(args.config().leader_election.is_none());
    }
}
