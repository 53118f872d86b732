//! eviction-guard: protects pods on NotReady nodes during a node failure storm (DESIGN §5) and
//! hosts the Ballast control service (DESIGN §4).
//!
//! In: Node watch events (the only cache), the mode ConfigMap, AdmissionReviews for pods
//! (DELETE, UPDATE, `pods/status` UPDATE, `pods/eviction` CREATE) on `/validate`, mode changes
//! through the seed's `/callback/*` endpoints and gRPC `SetMode`.
//! Out: admission verdicts (429 for evictions, 403 for deletes and updates), the mode written
//! to the ConfigMap, interception state and node health over gRPC, Prometheus metrics on the
//! admin port, and an audit log line (target `audit`) for every refusal and mode change; once
//! protection lifts, the node controller's refused evictions completed by the leader
//! ([`release`]: DisruptionTarget, DELETE with a uid precondition, an Event per pod).
//!
//! Decisions are pure ([`storm`], [`rules`]); [`monitor`], [`admission`], [`callback`] and
//! [`mode`] do the I/O around them.

pub mod admission;
pub mod args;
pub mod audit;
pub mod callback;
mod error;
pub mod guard;
pub mod metrics;
pub mod mode;
pub mod monitor;
pub mod release;
pub mod releaser;
pub mod rules;
pub mod storm;
pub mod webhook_config;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use ballast_runtime::admin::Readiness;
use ballast_runtime::auth::Authenticator;
use ballast_runtime::bootstrap;
use ballast_runtime::leader::LeaseConfig;
use ballast_runtime::tls::ReloadingTls;
use ballast_runtime::{Service, Tasks};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use args::{Args, Config};
pub use ballast_runtime::KubeAccess;
pub use error::{Error, Result};
pub use guard::Guard;

/// The Kubernetes API calls the guard makes: (group, resource, verbs), for least-privilege RBAC.
/// ConfigMaps and Leases only in the guard's own namespace. Pods are listed, marked
/// `DisruptionTarget` and deleted only to release refused evictions (`--release-refused-evictions`).
pub const RBAC: &[(&str, &str, &[&str])] = &[
    ("", "nodes", &["get", "list", "watch"]),
    ("", "pods", &["get", "list", "delete"]),
    ("", "pods/status", &["patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    (
        "",
        "configmaps",
        &["get", "list", "watch", "create", "update"],
    ),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    ),
    ("authentication.k8s.io", "tokenreviews", &["create"]),
    ("authorization.k8s.io", "subjectaccessreviews", &["create"]),
];

/// The webhook and callback routes on one router: `/validate` and `/callback/*`.
pub fn webhook_router(
    guard: Arc<Guard>,
    policy: rules::Policy,
    client: Option<kube::Client>,
    callbacks: Arc<callback::Callbacks>,
) -> Router {
    let webhook = Arc::new(admission::Webhook::new(guard, policy, client));
    Router::new()
        .route(
            "/validate",
            ballast_runtime::admission::route(admission::WEBHOOK_NAME, webhook),
        )
        .merge(callback::router(callbacks))
}

/// A started guard: its bound addresses, its state, and its tasks.
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub guard: Arc<Guard>,
    pub readiness: Readiness,
    /// Whether this replica leads the release (always true without election; None with the
    /// release off).
    pub leading: Option<watch::Receiver<bool>>,
    tasks: Tasks<Error>,
}

impl Running {
    /// Waits until every task has stopped (after `shutdown`, or the first failure, which
    /// stops the others and is returned).
    pub async fn wait(self) -> Result<()> {
        self.tasks.wait().await
    }

    /// Ends the guard at once, as a crash would: no drain, its Lease not released. For fault
    /// tests.
    pub fn abort(self) {
        self.tasks.abort();
    }
}

/// Builds the client, binds the listeners (port 0 picks a free one), starts every part of the
/// guard and returns at once with the bound addresses.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running> {
    let Config {
        webhook_addr,
        admin_addr,
        grpc_addr,
        tls,
        self_signed,
        no_auth,
        kube,
        namespace,
        mode_configmap,
        storm,
        worker_selector,
        policy,
        require_auth_for_reads,
        mode_writes_per_second,
        grpc_tls,
        token_audiences,
        release,
    } = config;
    let mut svc = Service::new("eviction-guard", env!("CARGO_PKG_VERSION"), &shutdown);
    metrics::register();
    let client = svc.client(&kube).await?;

    let mut cert_dir = None;
    let tls = match tls {
        Some((cert, key)) => {
            let cert_dir =
                cert_dir.insert(cert.parent().map(Path::to_path_buf).unwrap_or_default());
            let (cert, key) = bootstrap::prepare(
                &self_signed,
                &client,
                &namespace,
                bootstrap::WebhookKind::Validating,
                cert_dir,
            )
            .await?
            .unwrap_or((cert, key));
            Some(svc.tls(&cert, &key)?)
        }
        None => None,
    };
    let (webhook_listener, webhook_addr) = svc
        .bind("the webhook (--webhook-port, WEBHOOK_PORT)", webhook_addr)
        .await?;
    let (admin_listener, admin_addr) = svc
        .bind("the admin server (--admin-port, ADMIN_PORT)", admin_addr)
        .await?;
    let (grpc_listener, grpc_addr) = svc
        .bind("the control API (--grpc-port, GRPC_PORT)", grpc_addr)
        .await?;

    let store = mode::ModeStore::new(client.clone(), &namespace, &mode_configmap);
    let guard = Guard::new(storm, Some(store.clone()));
    let readiness = svc.readiness().clone();
    readiness.register(monitor::NODES_SYNCED);
    readiness.register(monitor::MODE_LOADED);
    let auth = if no_auth {
        Authenticator::AllowAll
    } else {
        Authenticator::kube(client.clone(), token_audiences)
    };
    let callbacks = callback::Callbacks::with_after_lift(
        guard.clone(),
        auth.clone(),
        require_auth_for_reads,
        mode_writes_per_second,
        policy.after_lift.clone(),
    );
    let router = webhook_router(guard.clone(), policy, Some(client.clone()), callbacks);

    svc.spawn(
        "the node monitor",
        ok(monitor::watch_nodes(
            client.clone(),
            worker_selector,
            guard.clone(),
            readiness.clone(),
            svc.shutdown(),
        )),
    );
    let audit_guard = guard.clone();
    let audit_stop = svc.shutdown();
    svc.spawn("the audit writer", async move {
        audit_guard.write_audit(audit_stop).await;
        Ok::<(), Error>(())
    });
    svc.spawn(
        "the storm's settle timer",
        ok(monitor::settle_timer(guard.clone(), svc.shutdown())),
    );
    svc.spawn(
        "the mode watch",
        ok(monitor::watch_mode(
            store,
            guard.clone(),
            readiness.clone(),
            svc.shutdown(),
        )),
    );
    svc.serve_admin(admin_listener);
    let mut release_leading = None;
    if release.enabled {
        // The release keeps track of protected nodes while following too, so it runs on every
        // replica and acts only while this one leads.
        let (leading, unelected) = if release.leader_elect {
            let lease = LeaseConfig {
                namespace: namespace.clone(),
                name: release.lease_name.clone(),
                identity: release.identity.clone(),
                lease_duration: release.lease_duration,
                renew_every: release.renew_every,
            };
            (svc.elect(&client, lease), None)
        } else {
            let (always, leading) = watch::channel(true);
            (leading, Some(always))
        };
        release_leading = Some(leading.clone());
        let work = releaser::run(
            client.clone(),
            guard.clone(),
            release.clone(),
            namespace.clone(),
            leading,
            svc.shutdown(),
        );
        svc.spawn("the release of refused evictions", async move {
            // Without election the flag stays true: its sender lives as long as the work.
            let _always = unelected;
            work.await;
            Ok::<(), Error>(())
        });
    } else {
        tracing::info!("release of refused evictions is off (--release-refused-evictions=false)");
    }
    if let Some(registration) =
        webhook_registration(&self_signed, &namespace, cert_dir, tls.as_ref(), &readiness)
    {
        svc.spawn(
            "the webhook registration",
            ok(ballast_runtime::registration::run(
                registration,
                client.clone(),
                svc.shutdown(),
            )),
        );
    }
    svc.serve("the webhook", webhook_listener, router, tls.clone());
    let mut opts = ballast_control::ServerOptions::new(Arc::new(auth));
    opts.require_auth_for_reads = require_auth_for_reads;
    opts.set_mode_per_second = mode_writes_per_second;
    if grpc_tls {
        opts.tls = tls;
    }
    svc.spawn(
        "the control API",
        ballast_control::serve(grpc_listener, guard.clone(), opts, svc.shutdown()),
    );
    tracing::info!(
        webhook = %webhook_addr,
        admin = %admin_addr,
        grpc = %grpc_addr,
        namespace = %namespace,
        configmap = %mode_configmap,
        no_auth,
        "eviction-guard started"
    );
    Ok(Running {
        webhook_addr,
        admin_addr,
        grpc_addr,
        guard,
        readiness,
        leading: release_leading,
        tasks: svc.into_tasks(),
    })
}

/// The guard's webhook configuration, kept by `ballast_runtime::registration` when
/// `--webhook-configuration` names it: the deletions webhook fails closed only while a ready
/// guard serves it; in self-signed mode its caBundle follows the Secret.
fn webhook_registration(
    self_signed: &bootstrap::SelfSignedArgs,
    namespace: &str,
    cert_dir: Option<std::path::PathBuf>,
    tls: Option<&ReloadingTls>,
    readiness: &Readiness,
) -> Option<ballast_runtime::registration::Registration> {
    use ballast_runtime::registration::{RECONCILE_INTERVAL, Registration, SelfSigned};
    let configuration = self_signed.webhook_configuration.clone()?;
    let own_certificate = match (
        &self_signed.self_signed_secret,
        &self_signed.webhook_service_dns,
        cert_dir,
    ) {
        (Some(secret), Some(dns_name), Some(cert_dir)) => Some(SelfSigned {
            namespace: namespace.to_owned(),
            secret: secret.clone(),
            dns_name: dns_name.clone(),
            cert_dir,
        }),
        _ => None,
    };
    Some(Registration {
        kind: bootstrap::WebhookKind::Validating,
        configuration,
        fail_closed: webhook_config::FAIL_CLOSED_WHEN_READY
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        self_signed: own_certificate,
        tls: tls.cloned(),
        readiness: readiness.clone(),
        interval: RECONCILE_INTERVAL,
    })
}

/// A task that cannot fail, as the task set takes them.
async fn ok(task: impl std::future::Future<Output = ()>) -> Result<()> {
    task.await;
    Ok(())
}

/// Runs until `shutdown` (or a task's failure).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<()> {
    start(config, shutdown).await?.wait().await
}
