//! The control API's model: plain Rust types with no transport in them, for pure modules
//! (eviction-guard's storm detection, podmanager's planning) to use without importing the gRPC
//! code. [`crate::types`] converts them to and from the generated protobuf messages.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How eviction-guard decides whether to protect pods on NotReady nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Protect pods on NotReady nodes when a storm is detected (the default).
    #[default]
    Auto,
    /// Never protect: evictions and deletions go through.
    Disabled,
    /// Protect pods on every NotReady worker node now, storm or not (planned maintenance).
    Forced,
}

impl Mode {
    /// The lower-case name used in logs, ConfigMaps and command lines (`auto`, `disabled`, `forced`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Disabled => "disabled",
            Mode::Forced => "forced",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = ConvertError;

    /// Accepts `auto`, `disabled`, `forced` in any case, with or without the `MODE_` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.strip_prefix("mode_").unwrap_or(&lower) {
            "auto" => Ok(Mode::Auto),
            "disabled" => Ok(Mode::Disabled),
            "forced" => Ok(Mode::Forced),
            _ => Err(ConvertError::UnknownModeName(s.to_owned())),
        }
    }
}

/// The interception state eviction-guard publishes: the mode and whether it protects pods now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterceptionState {
    pub mode: Mode,
    /// Whether pods on NotReady nodes are protected right now.
    pub protecting: bool,
    /// A human sentence, e.g. "3 of 10 worker nodes NotReady within 5m".
    pub reason: String,
    /// When protection last turned on (if protecting) or off.
    pub since: Option<DateTime<Utc>>,
    /// How many NotReady worker nodes within `window` make a storm.
    pub threshold: u32,
    pub window: Duration,
    /// The NotReady worker nodes, sorted by name.
    pub notready_nodes: Vec<String>,
    /// The NotReady worker nodes whose pods are protected now, sorted by name.
    pub protected_nodes: Vec<String>,
    /// Who set the mode last, and why, and when.
    pub mode_changed_by: String,
    pub mode_reason: String,
    pub mode_changed_at: Option<DateTime<Utc>>,
    /// False until the guard's node cache has synced: the other fields are not yet meaningful.
    pub synced: bool,
}

/// Health of one worker node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeHealth {
    pub name: String,
    pub ready: bool,
    /// When the node's Ready condition last changed.
    pub since: Option<DateTime<Utc>>,
    /// The Ready condition's reason (e.g. "KubeletReady", "NodeStatusUnknown").
    pub reason: String,
    /// `topology.kubernetes.io/zone`, empty when unset.
    pub zone: String,
}

/// Every watched worker node by name, and whether the host's node cache has synced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeHealthSnapshot {
    pub synced: bool,
    pub nodes: BTreeMap<String, NodeHealth>,
}

impl NodeHealthSnapshot {
    /// A synced snapshot of the given nodes.
    pub fn synced(nodes: impl IntoIterator<Item = NodeHealth>) -> Self {
        Self {
            synced: true,
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        }
    }
}

/// Why a message from the wire cannot be turned into the plain types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("mode is required: one of MODE_AUTO, MODE_DISABLED, MODE_FORCED")]
    UnspecifiedMode,
    #[error("unknown mode value {0}: expected MODE_AUTO, MODE_DISABLED or MODE_FORCED")]
    UnknownMode(i32),
    #[error("unknown mode {0:?}: expected auto, disabled or forced")]
    UnknownModeName(String),
    #[error("field {0} holds a negative or out-of-range duration")]
    InvalidDuration(&'static str),
    #[error("field {0} holds an out-of-range timestamp")]
    InvalidTimestamp(&'static str),
    #[error("a node health change arrived before the snapshot")]
    ChangeBeforeSnapshot,
    #[error("the response carries no status")]
    MissingStatus,
}
