//! The Ballast control service: `ballast.control.v1.ControlService` over gRPC.
//!
//! In: the host's interception state and node health through the [`ControlState`] trait
//! (eviction-guard implements it; [`MemoryState`] is a test double), and callers' bearer tokens
//! through [`Authorize`]. Out: a tonic server ([`serve`]) with reflection v1/v1alpha and
//! `grpc.health.v1`, and a reconnecting [`ControlClient`] that exposes the latest state as
//! `tokio::sync::watch` receivers, `None` whenever the state is unknown.

pub mod auth;
pub mod changes;
pub mod client;
mod error;
pub mod model;
pub mod nodes;
mod server;
mod service;
mod state;
mod types;

/// Code generated from `proto/ballast/control/v1/control.proto`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("ballast.control.v1");

    /// The encoded `FileDescriptorSet` of control.proto and its imports, as served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(
        env!("OUT_DIR"),
        "/ballast_control_v1_descriptor.bin"
    ));
}

pub use auth::{AllowAll, AuthError, Authorize, Caller};
pub use changes::{ModeChanges, Refused};
pub use client::{ClientOptions, ControlClient, ControlClientArgs};
pub use error::{Error, Result};
pub use server::{DEFAULT_SET_MODE_PER_SECOND, MAX_REQUEST_MESSAGE_BYTES, ServerOptions, serve};
pub use service::{ControlService, MAX_REASON_BYTES, MAX_WATCH_STREAMS};
pub use state::{ControlError, ControlState, MemoryState, ModeChange};
pub use types::{ConvertError, InterceptionState, Mode, NodeHealth, NodeHealthSnapshot};
