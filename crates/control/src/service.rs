//! The tonic `ControlService` service over a [`ControlState`]: auth, validation, rate limit, audit log.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;

use ballast_runtime::peer;
use futures::{Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::auth::{Authorize, bearer_token};
use crate::changes::{ModeChanges, Refused};
use crate::nodes::{change_event, diff, snapshot_event};
use crate::pb;
use crate::state::ControlState;
use crate::types::{ConvertError, Mode, NodeHealth, NodeHealthSnapshot};

/// Longest accepted SetMode reason: it lands in logs and a ConfigMap, so keep it a sentence.
pub const MAX_REASON_BYTES: usize = 1024;

const SET_MODE_TOTAL: &str = "ballast_control_set_mode_total";
const WATCH_STREAMS: &str = "ballast_control_watch_streams";

/// Watch streams open at once across all clients. Each holds a task and a little memory for as
/// long as its client stays; the services need a handful, so this only stops a runaway client.
pub const MAX_WATCH_STREAMS: usize = 1024;

/// HELP texts of the control service's metric families.
pub(crate) fn describe_metrics() {
    metrics::describe_counter!(
        SET_MODE_TOTAL,
        "SetMode calls on the control service, by outcome."
    );
    metrics::describe_gauge!(
        WATCH_STREAMS,
        "Open WatchStatus / WatchNodeHealth streams, by stream."
    );
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The `ballast.control.v1.ControlService` implementation, generic over the host's state.
pub struct ControlService<S> {
    state: Arc<S>,
    require_auth_for_reads: bool,
    changes: ModeChanges,
    shutdown: CancellationToken,
    watch_slots: Arc<Semaphore>,
}

impl<S: ControlState> ControlService<S> {
    /// Watch streams end when `shutdown` is cancelled, so a graceful server stop is not held up
    /// by clients that never hang up.
    pub fn new(
        state: Arc<S>,
        authorizer: Arc<dyn Authorize>,
        require_auth_for_reads: bool,
        set_mode_per_second: NonZeroU32,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            state,
            require_auth_for_reads,
            changes: ModeChanges::new(authorizer, set_mode_per_second),
            shutdown,
            watch_slots: Arc::new(Semaphore::new(MAX_WATCH_STREAMS)),
        }
    }

    async fn authorize_read<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if !self.require_auth_for_reads {
            return Ok(());
        }
        self.changes
            .authorize_read(bearer_token(req.metadata()))
            .await
            .map(|_| ())
            .map_err(|e| {
                debug!(error = %e, "control API read refused");
                crate::auth::status(e)
            })
    }

    fn until_shutdown<T: Send + 'static>(
        &self,
        stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    ) -> BoxStream<T> {
        Box::pin(stream.take_until(self.shutdown.clone().cancelled_owned()))
    }
}

fn count_set_mode(outcome: &'static str) {
    metrics::counter!(SET_MODE_TOTAL, "outcome" => outcome).increment(1);
}

/// Checks the SetMode arguments; the message says what a caller must fix.
fn validate_set_mode(req: &pb::SetModeRequest) -> Result<(Mode, String), InvalidSetMode> {
    let mode = Mode::try_from(req.mode).map_err(InvalidSetMode::Mode)?;
    let reason = req.reason.trim();
    if reason.len() > MAX_REASON_BYTES {
        return Err(InvalidSetMode::ReasonTooLong(reason.len()));
    }
    Ok((mode, reason.to_owned()))
}

#[derive(Debug, thiserror::Error)]
enum InvalidSetMode {
    #[error("{0}")]
    Mode(ConvertError),
    #[error("reason is {0} bytes long; at most {MAX_REASON_BYTES} are accepted")]
    ReasonTooLong(usize),
}

impl From<InvalidSetMode> for Status {
    fn from(e: InvalidSetMode) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// Holds one of the [`MAX_WATCH_STREAMS`] slots and decrements the open-stream gauge when a
/// watch stream is dropped (client gone or shutdown).
struct StreamGauge {
    stream: &'static str,
    _slot: OwnedSemaphorePermit,
}

impl StreamGauge {
    fn open(stream: &'static str, slots: &Arc<Semaphore>) -> Result<Self, Status> {
        let slot = slots.clone().try_acquire_owned().map_err(|_| {
            warn!(
                stream,
                "refused a watch stream: {MAX_WATCH_STREAMS} are open"
            );
            Status::resource_exhausted(format!(
                "too many open watch streams (at most {MAX_WATCH_STREAMS}); try again later"
            ))
        })?;
        metrics::gauge!(WATCH_STREAMS, "stream" => stream).increment(1.0);
        debug!(stream, "control watch stream opened");
        Ok(Self {
            stream,
            _slot: slot,
        })
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        metrics::gauge!(WATCH_STREAMS, "stream" => self.stream).decrement(1.0);
        debug!(stream = self.stream, "control watch stream closed");
    }
}

/// Node health stream state: `prev` is `None` until the snapshot went out.
struct NodeStream {
    rx: watch::Receiver<NodeHealthSnapshot>,
    prev: Option<BTreeMap<String, NodeHealth>>,
    _gauge: StreamGauge,
}

/// The next event of a WatchNodeHealth stream: the snapshot once the host has synced, then one
/// event per non-empty change. `None` (end of stream) when the host drops its state.
async fn next_node_event(
    mut s: NodeStream,
) -> Option<(Result<pb::WatchNodeHealthResponse, Status>, NodeStream)> {
    let Some(prev) = &s.prev else {
        let nodes = s.rx.wait_for(|snap| snap.synced).await.ok()?.nodes.clone();
        let event = snapshot_event(&nodes);
        s.prev = Some(nodes);
        return Some((Ok(event), s));
    };
    let mut prev = prev.clone();
    loop {
        s.rx.changed().await.ok()?;
        let next = s.rx.borrow_and_update().nodes.clone();
        let change = diff(&prev, &next);
        prev = next;
        if !change.is_empty() {
            s.prev = Some(prev);
            return Some((Ok(change_event(&change)), s));
        }
    }
}

#[tonic::async_trait]
impl<S: ControlState> pb::control_service_server::ControlService for ControlService<S> {
    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        self.authorize_read(&req).await?;
        let status = pb::InterceptionStatus::from(&*self.state.status().borrow());
        Ok(Response::new(pb::GetStatusResponse {
            status: Some(status),
        }))
    }

    async fn set_mode(
        &self,
        req: Request<pb::SetModeRequest>,
    ) -> Result<Response<pb::SetModeResponse>, Status> {
        let client = peer::addr(req.extensions());
        let result = self
            .changes
            .apply(
                &*self.state,
                "SetMode",
                client,
                bearer_token(req.metadata()),
                || validate_set_mode(req.get_ref()),
            )
            .await;
        match result {
            Ok(state) => {
                count_set_mode("ok");
                Ok(Response::new(pb::SetModeResponse {
                    status: Some(pb::InterceptionStatus::from(&state)),
                }))
            }
            Err(refused) => {
                count_set_mode(refused.outcome());
                Err(match refused {
                    Refused::RateLimited => {
                        Status::resource_exhausted("too many SetMode calls; retry in a second")
                    }
                    Refused::Auth(e) => crate::auth::status(e),
                    Refused::Invalid(e) => Status::from(e),
                    Refused::Failed(e) => Status::from(e),
                })
            }
        }
    }

    type WatchStatusStream = BoxStream<pb::WatchStatusResponse>;

    async fn watch_status(
        &self,
        req: Request<pb::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        self.authorize_read(&req).await?;
        let gauge = StreamGauge::open("status", &self.watch_slots)?;
        // WatchStream yields the current value first, then each new one.
        let stream = WatchStream::new(self.state.status()).map(move |state| {
            let _ = &gauge;
            Ok(pb::WatchStatusResponse {
                status: Some(pb::InterceptionStatus::from(&state)),
            })
        });
        Ok(Response::new(self.until_shutdown(stream)))
    }

    async fn list_node_health(
        &self,
        req: Request<pb::ListNodeHealthRequest>,
    ) -> Result<Response<pb::ListNodeHealthResponse>, Status> {
        self.authorize_read(&req).await?;
        let rx = self.state.node_health();
        let snap = rx.borrow();
        Ok(Response::new(pb::ListNodeHealthResponse {
            nodes: snap.nodes.values().map(pb::NodeHealth::from).collect(),
            synced: snap.synced,
        }))
    }

    type WatchNodeHealthStream = BoxStream<pb::WatchNodeHealthResponse>;

    async fn watch_node_health(
        &self,
        req: Request<pb::WatchNodeHealthRequest>,
    ) -> Result<Response<Self::WatchNodeHealthStream>, Status> {
        self.authorize_read(&req).await?;
        let init = NodeStream {
            rx: self.state.node_health(),
            prev: None,
            _gauge: StreamGauge::open("node_health", &self.watch_slots)?,
        };
        let stream = futures::stream::unfold(init, next_node_event);
        Ok(Response::new(self.until_shutdown(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_streams_beyond_the_cap_are_resource_exhausted_until_one_closes() {
        let slots = Arc::new(Semaphore::new(1));
        let first = StreamGauge::open("status", &slots).unwrap();
        let refused = StreamGauge::open("node_health", &slots).err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("too many open watch streams"));
        drop(first);
        assert!(StreamGauge::open("node_health", &slots).is_ok());
    }

    #[test]
    fn set_mode_without_a_mode_is_an_invalid_argument_naming_the_choices() {
        let req = pb::SetModeRequest {
            mode: pb::Mode::Unspecified as i32,
            reason: "x".into(),
        };
        let status = Status::from(validate_set_mode(&req).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "mode is required: one of MODE_AUTO, MODE_DISABLED, MODE_FORCED"
        );
    }

    #[test]
    fn set_mode_with_an_overlong_reason_is_an_invalid_argument() {
        let req = pb::SetModeRequest {
            mode: pb::Mode::Forced as i32,
            reason: "a".repeat(MAX_REASON_BYTES + 1),
        };
        let status = Status::from(validate_set_mode(&req).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "reason is 1025 bytes long; at most 1024 are accepted"
        );
    }

    #[test]
    fn set_mode_reason_is_trimmed() {
        let req = pb::SetModeRequest {
            mode: pb::Mode::Disabled as i32,
            reason: "  drill  ".into(),
        };
        let (mode, reason) = validate_set_mode(&req).unwrap();
        assert_eq!((mode, reason.as_str()), (Mode::Disabled, "drill"));
    }
}
