//! Serving the Control service with gRPC reflection (v1 and v1alpha) and `grpc.health.v1`.

use std::num::NonZeroU32;
use std::sync::Arc;

use ballast_runtime::tls::ReloadingTls;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::{AllowAll, Authorize};
use crate::error::{Error, Result};
use crate::pb;
use crate::service::ControlService;
use crate::state::ControlState;

/// SetMode calls accepted per second from one client address by default: mode changes are rare
/// human actions, so this only ever bites a script gone wrong.
pub const DEFAULT_SET_MODE_PER_SECOND: NonZeroU32 = NonZeroU32::new(5).expect("non-zero");

/// Largest request message accepted. Control requests are a mode and a sentence of reason
/// (1 KiB at most), so anything bigger is abuse; tonic's own default is 4 MiB.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 64 * 1024;

/// A unary call must answer within this: SetMode makes three API calls (TokenReview,
/// SubjectAccessReview, the ConfigMap write), each under the client's own timeout.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// How the control API is served.
#[derive(Clone)]
pub struct ServerOptions {
    /// Checks callers: SetMode always, reads when `require_auth_for_reads`.
    pub authorizer: Arc<dyn Authorize>,
    /// Reads (Get/List/Watch) need verb `get` on `interception.control.ballast.dev`.
    pub require_auth_for_reads: bool,
    /// SetMode calls accepted per second from each client address; beyond: `RESOURCE_EXHAUSTED`.
    pub set_mode_per_second: NonZeroU32,
    /// Serve over TLS with this (reloading) certificate; plain HTTP/2 when `None`. Bearer
    /// tokens cross the network, so use TLS wherever the network is not trusted.
    pub tls: Option<ReloadingTls>,
}

impl ServerOptions {
    /// Authenticated SetMode, open reads, the default rate limit.
    pub fn new(authorizer: Arc<dyn Authorize>) -> Self {
        Self {
            authorizer,
            require_auth_for_reads: false,
            set_mode_per_second: DEFAULT_SET_MODE_PER_SECOND,
            tls: None,
        }
    }

    /// No authentication at all (`--local` runs only): every caller is user `local`.
    pub fn local() -> Self {
        Self::new(Arc::new(AllowAll))
    }
}

/// Serves Control, reflection and health on `listener` until `shutdown` is cancelled; then the
/// health service reports NOT_SERVING, watch streams end and in-flight calls finish. The HTTP/2
/// (and TLS) serving is the runtime's, so certificates follow reloads as for the webhooks.
pub async fn serve<S: ControlState>(
    listener: TcpListener,
    state: Arc<S>,
    opts: ServerOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    let ServerOptions {
        authorizer,
        require_auth_for_reads,
        set_mode_per_second,
        tls,
    } = opts;
    crate::service::describe_metrics();

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(Error::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(Error::Reflection)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::control_service_server::ControlServiceServer<ControlService<S>>>()
        .await;

    let control = pb::control_service_server::ControlServiceServer::new(ControlService::new(
        state,
        authorizer,
        require_auth_for_reads,
        set_mode_per_second,
        shutdown.clone(),
    ))
    .max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES);

    let addr = listener.local_addr().ok();
    info!(
        ?addr,
        tls = tls.is_some(),
        require_auth_for_reads,
        "control API listening"
    );
    // Cancelled by shutdown, or when serving ends on its own (then the task must not linger).
    let done = shutdown.child_token();
    tokio::spawn({
        let done = done.clone();
        async move {
            done.cancelled().await;
            health
                .set_not_serving::<pb::control_service_server::ControlServiceServer<ControlService<S>>>()
                .await;
            info!(?addr, "control API shutting down");
        }
    });
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(control);
    let router = routes.routes().prepare().into_axum_router();
    let limits = ballast_runtime::http::Limits {
        request_timeout: REQUEST_TIMEOUT,
        ..Default::default()
    };
    let served = ballast_runtime::http::serve_with(listener, router, tls, shutdown, limits).await;
    done.cancel();
    served.map_err(Error::Serve)
}
