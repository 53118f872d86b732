//! pvc-timing: the phase history of every PersistentVolumeClaim, and its time to bind.
//!
//! In: AdmissionReviews for PVC CREATE/UPDATE (incl. `/status`) from the API server; a watch on
//! PVCs. Out: a JSON patch keeping the `pvc-timing` annotation
//! (`{"currentPhase":..,"timings":[{"phase":..,"time":..}]}`, the seed's shape); a one-time
//! `webhook-trigger: "<unix seconds>"` annotation on Bound claims (controller, leader-elected);
//! metrics `pvc_phase_transitions_total{phase}` and `pvc_time_to_bound_seconds{storage_class}`,
//! counted by the controller from the stored history.
//!
//! The pure decisions live in [`timing`] (the history fold), [`admission::mutate`] (the patch)
//! and [`controller::plan`] (trigger, what to count); the rest is I/O.

pub mod admission;
pub mod args;
pub mod controller;
pub mod error;
pub mod metrics;
pub mod timing;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use ballast_runtime::{Service, Tasks};
use tokio_util::sync::CancellationToken;

pub use crate::admission::{Clock, FixedClock, SystemClock};
pub use crate::args::Args;
pub use crate::controller::ControllerConfig;
pub use crate::error::{Error, Result};

/// The Kubernetes API calls this service makes, for least-privilege RBAC:
/// (API group, resource, verbs). The webhook itself calls nothing.
pub const RBAC: &[(&str, &str, &[&str])] = &[
    // controller: watch claims, add webhook-trigger and the counted mark.
    (
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "patch"],
    ),
    // controller: a time-to-bound label names only classes that exist.
    ("storage.k8s.io", "storageclasses", &["get"]),
    // leader election.
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
];

/// Readiness check registered while the webhook listener is being set up.
const WEBHOOK_READY: &str = "webhook";

/// Where the webhook listens and with which certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    /// (certificate, key) PEM files; None serves plain HTTP (`--local`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Generate the certificate into `tls`'s files at start-up (no cert-manager).
    pub self_signed: Option<SelfSigned>,
}

/// The self-signed bootstrap: Secret and webhook configuration, in the service's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    pub args: ballast_runtime::bootstrap::SelfSignedArgs,
    pub namespace: String,
}

/// How to reach the API server (the controller, and the webhook's self-signed bootstrap).
pub use ballast_runtime::kubeclient::KubeAccess;

/// The whole service; a None component is off.
#[derive(Debug, Clone)]
pub struct Config {
    pub webhook: Option<WebhookConfig>,
    pub controller: Option<ControllerConfig>,
    /// The admin server (`/healthz`, `/readyz`, `/metrics`); port 0 picks a free one.
    pub admin_addr: SocketAddr,
    pub kube: KubeAccess,
    /// The time the webhook records and the controller writes ([`SystemClock`]; tests pin it).
    pub clock: Arc<dyn Clock>,
}

/// A started service: where it listens, and its tasks.
pub struct Running {
    /// Where the webhook listens, when it is served.
    pub webhook_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    tasks: Tasks<Error>,
}

impl Running {
    /// Waits until every task has stopped (after shutdown, or the first failure, which stops
    /// the others and is returned).
    pub async fn wait(self) -> Result<()> {
        self.tasks.wait().await
    }
}

/// Runs until `shutdown` is cancelled and every task has finished.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Binds the listeners (port 0 picks a free one), starts every enabled component and returns
/// at once with the bound addresses.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let Config {
        webhook,
        controller,
        admin_addr,
        kube,
        clock,
    } = config;
    let mut svc = Service::new("pvc-timing", env!("CARGO_PKG_VERSION"), &shutdown);
    metrics::describe();

    let client = if needs_client(webhook.as_ref(), controller.as_ref()) {
        Some(svc.client(&kube).await?)
    } else {
        None
    };

    let mut webhook_addr = None;
    if let Some(mut webhook) = webhook {
        let mut keep_registered = None;
        if let (Some(self_signed), Some(client), Some((cert, _))) =
            (&webhook.self_signed, &client, &webhook.tls)
        {
            let cert_dir = cert.parent().unwrap_or_else(|| std::path::Path::new("."));
            keep_registered = registration(self_signed, cert_dir);
            let paths = ballast_runtime::bootstrap::prepare(
                &self_signed.args,
                client,
                &self_signed.namespace,
                ballast_runtime::bootstrap::WebhookKind::Mutating,
                cert_dir,
            )
            .await
            .map_err(Error::Bootstrap)?;
            if let Some(paths) = paths {
                webhook.tls = Some(paths);
            }
        }
        svc.readiness().register(WEBHOOK_READY);
        let (listener, addr) = svc
            .bind("the webhook (--webhook-port, WEBHOOK_PORT)", webhook.addr)
            .await?;
        webhook_addr = Some(addr);
        let tls = match &webhook.tls {
            Some((cert, key)) => Some(svc.tls(cert, key)?),
            None => None,
        };
        let router = Router::new().route(
            admission::PATH,
            ballast_runtime::admission::route(
                admission::WEBHOOK_NAME,
                Arc::new(admission::Webhook::new(clock.clone())),
            ),
        );
        tracing::info!(%addr, tls = tls.is_some(), path = admission::PATH, "serving the pvc-timing webhook");
        svc.readiness().set(WEBHOOK_READY, true);
        if let (Some(mut registration), Some(client)) = (keep_registered, &client) {
            // Self-signed: follow the Secret (a new certificate or CA) and keep the caBundle.
            registration.tls = tls.clone();
            registration.readiness = svc.readiness().clone();
            let (client, stop) = (client.clone(), svc.shutdown());
            svc.spawn("the webhook registration", async move {
                ballast_runtime::registration::run(registration, client, stop).await;
                Ok::<(), Error>(())
            });
        }
        svc.serve("the webhook", listener, router, tls);
    }

    if let (Some(controller), Some(client)) = (controller, client) {
        let ctx = controller::Context::new(client.clone(), &controller, clock);
        svc.run_while_leading(
            "the PVC controller",
            &client,
            controller.leader,
            move |stop| controller::run(ctx.clone(), stop),
        );
    }

    let (listener, admin_addr) = svc
        .bind("the admin server (--admin-port, ADMIN_PORT)", admin_addr)
        .await?;
    svc.serve_admin(listener);

    Ok(Running {
        webhook_addr,
        admin_addr,
        tasks: svc.into_tasks(),
    })
}

/// Self-signed mode: the registration that keeps serving the Secret's certificate and the
/// webhook configuration's caBundle in step with it (none without a Secret, a configuration
/// and a service name).
fn registration(
    self_signed: &SelfSigned,
    cert_dir: &std::path::Path,
) -> Option<ballast_runtime::registration::Registration> {
    use ballast_runtime::registration::{RECONCILE_INTERVAL, Registration, SelfSigned as Own};
    let args = &self_signed.args;
    Some(Registration {
        kind: ballast_runtime::bootstrap::WebhookKind::Mutating,
        configuration: args.webhook_configuration.clone()?,
        // the webhook ships failing open (a claim must never wait on timing)
        fail_closed: Vec::new(),
        self_signed: Some(Own {
            namespace: self_signed.namespace.clone(),
            secret: args.self_signed_secret.clone()?,
            dns_name: args.webhook_service_dns.clone()?,
            cert_dir: cert_dir.to_path_buf(),
        }),
        tls: None,
        readiness: ballast_runtime::admin::Readiness::default(),
        interval: RECONCILE_INTERVAL,
    })
}

/// The API is needed by the controller, and by the webhook only to bootstrap its certificate.
fn needs_client(webhook: Option<&WebhookConfig>, controller: Option<&ControllerConfig>) -> bool {
    controller.is_some()
        || webhook.is_some_and(|w| {
            w.tls.is_some()
                && w.self_signed
                    .as_ref()
                    .is_some_and(|s| s.args.self_signed_secret.is_some())
        })
}
