//! Serving the Control service with gRPC reflection (v1 and v1alpha) and `grpc.health.v1`.

use std::num::NonZeroU32;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::auth::{AllowAll, Authorize};
use crate::error::{Error, Result};
use crate::pb;
use crate::service::ControlService;
use crate::state::ControlState;

/// SetMode calls accepted per second by default: mode changes are rare human actions, so this
/// only ever bites a script gone wrong.
pub const DEFAULT_SET_MODE_PER_SECOND: NonZeroU32 = NonZeroU32::new(5).expect("non-zero");

/// How the control API is served.
#[derive(Clone)]
pub struct ServerOptions {
    /// Checks callers: SetMode always, reads when `require_auth_for_reads`.
    pub authorizer: Arc<dyn Authorize>,
    /// Reads (Get/List/Watch) need verb `get` on `interception.control.ballast.dev`.
    pub require_auth_for_reads: bool,
    /// SetMode calls accepted per second (all callers together); beyond: `RESOURCE_EXHAUSTED`.
    pub set_mode_per_second: NonZeroU32,
}

impl ServerOptions {
    /// Authenticated SetMode, open reads, the default rate limit.
    pub fn new(authorizer: Arc<dyn Authorize>) -> Self {
        Self {
            authorizer,
            require_auth_for_reads: false,
            set_mode_per_second: DEFAULT_SET_MODE_PER_SECOND,
        }
    }

    /// No authentication at all (`--local` runs only): every caller is user `local`.
    pub fn local() -> Self {
        Self::new(Arc::new(AllowAll))
    }
}

/// Serves Control, reflection and health on `listener` until `shutdown` is cancelled; then the
/// health service reports NOT_SERVING, watch streams end and in-flight calls finish.
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
    } = opts;

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
        .set_serving::<pb::control_server::ControlServer<ControlService<S>>>()
        .await;

    let control = pb::control_server::ControlServer::new(ControlService::new(
        state,
        authorizer,
        require_auth_for_reads,
        set_mode_per_second,
        shutdown.clone(),
    ));

    let addr = listener.local_addr().ok();
    info!(?addr, require_auth_for_reads, "control API listening");
    let signal = async move {
        shutdown.cancelled().await;
        health
            .set_not_serving::<pb::control_server::ControlServer<ControlService<S>>>()
            .await;
        info!(?addr, "control API shutting down");
    };
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(control)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
        .await
        .map_err(Error::Serve)
}
