//! The state the Control service serves, implemented by the host (eviction-guard), and an
//! in-memory test double.

use std::future::Future;
use std::sync::Mutex;

use chrono::Utc;
use tokio::sync::watch;

use crate::types::{InterceptionState, Mode, NodeHealth, NodeHealthSnapshot};

/// A request to change the interception mode, after authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModeChange {
    pub mode: Mode,
    /// Why, as given by the caller.
    pub reason: String,
    /// The authenticated user name (or `local` when auth is off).
    pub caller: String,
    /// The client's address, when the server knows it: for the audit log.
    pub client: Option<std::net::SocketAddr>,
}

/// Why the host could not change the mode. Each maps to a gRPC status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Someone else changed the mode at the same time (e.g. resourceVersion conflict); retry.
    #[error("failed to set the mode: concurrent change: {0}")]
    Conflict(String),
    /// The store (e.g. the API server) cannot be reached now.
    #[error("failed to set the mode: store unavailable: {0}")]
    Unavailable(String),
    /// The host refuses the change (e.g. not synced yet).
    #[error("failed to set the mode: {0}")]
    FailedPrecondition(String),
    #[error("failed to set the mode: {0}")]
    Internal(String),
}

impl From<ControlError> for tonic::Status {
    fn from(e: ControlError) -> Self {
        let msg = e.to_string();
        match e {
            ControlError::Conflict(_) => tonic::Status::aborted(msg),
            ControlError::Unavailable(_) => tonic::Status::unavailable(msg),
            ControlError::FailedPrecondition(_) => tonic::Status::failed_precondition(msg),
            ControlError::Internal(_) => tonic::Status::internal(msg),
        }
    }
}

/// What the Control service needs from its host.
///
/// Status and node health are `watch` channels: the current value is the answer to a Get/List
/// call, and every change is sent on the matching Watch stream (a reader that falls behind sees
/// the latest value, never a backlog).
pub trait ControlState: Send + Sync + 'static {
    /// The interception state, current and changing.
    fn status(&self) -> watch::Receiver<InterceptionState>;

    /// Every watched worker node's health, current and changing.
    fn node_health(&self) -> watch::Receiver<NodeHealthSnapshot>;

    /// Persist a new mode and return the resulting state. The host writes the audit line of
    /// the change (the service does not: only the host knows the mode it replaced).
    fn set_mode(
        &self,
        change: ModeChange,
    ) -> impl Future<Output = Result<InterceptionState, ControlError>> + Send;
}

/// An in-memory [`ControlState`]: a **test double** for this crate's tests and for other
/// components' tests (the real host is eviction-guard). `set_mode` records the mode and who set
/// it; it does not recompute `protecting` (tests set that with [`MemoryState::update_status`]).
pub struct MemoryState {
    status: watch::Sender<InterceptionState>,
    nodes: watch::Sender<NodeHealthSnapshot>,
    fail_next_set_mode: Mutex<Option<ControlError>>,
}

impl MemoryState {
    /// A synced state in `initial` (its `synced` flag is kept as given) with no nodes.
    pub fn new(initial: InterceptionState) -> Self {
        Self {
            status: watch::Sender::new(initial),
            nodes: watch::Sender::new(NodeHealthSnapshot {
                synced: true,
                nodes: Default::default(),
            }),
            fail_next_set_mode: Mutex::new(None),
        }
    }

    /// The status as it is now.
    pub fn status_now(&self) -> InterceptionState {
        self.status.borrow().clone()
    }

    /// Change the status in place; watchers see the result.
    pub fn update_status(&self, f: impl FnOnce(&mut InterceptionState)) {
        self.status.send_modify(f);
    }

    /// Replace every node; watchers see the difference.
    pub fn set_nodes(&self, snapshot: NodeHealthSnapshot) {
        self.nodes.send_replace(snapshot);
    }

    /// Add or replace one node.
    pub fn upsert_node(&self, node: NodeHealth) {
        self.nodes.send_modify(|s| {
            s.nodes.insert(node.name.clone(), node);
        });
    }

    /// Stop watching one node.
    pub fn remove_node(&self, name: &str) {
        self.nodes.send_modify(|s| {
            s.nodes.remove(name);
        });
    }

    /// Mark the node cache synced or not.
    pub fn set_nodes_synced(&self, synced: bool) {
        self.nodes.send_modify(|s| s.synced = synced);
    }

    /// Make the next `set_mode` call fail with `err`.
    pub fn fail_next_set_mode(&self, err: ControlError) {
        *self
            .fail_next_set_mode
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(err);
    }
}

impl Default for MemoryState {
    fn default() -> Self {
        Self::new(InterceptionState {
            synced: true,
            ..Default::default()
        })
    }
}

impl ControlState for MemoryState {
    fn status(&self) -> watch::Receiver<InterceptionState> {
        self.status.subscribe()
    }

    fn node_health(&self) -> watch::Receiver<NodeHealthSnapshot> {
        self.nodes.subscribe()
    }

    async fn set_mode(&self, change: ModeChange) -> Result<InterceptionState, ControlError> {
        let injected = self
            .fail_next_set_mode
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(err) = injected {
            return Err(err);
        }
        self.status.send_modify(|s| {
            s.mode = change.mode;
            s.mode_reason = change.reason;
            s.mode_changed_by = change.caller;
            s.mode_changed_at = Some(Utc::now());
        });
        Ok(self.status.borrow().clone())
    }
}
