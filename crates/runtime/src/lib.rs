//! Shared plumbing for every Ballast service, and nothing else: no business logic lives here.
//!
//! In: files (TLS certificate and key), the Kubernetes API (Leases, TokenReview,
//! SubjectAccessReview), OS signals, HTTP requests (admin endpoints, AdmissionReview bodies).
//! Out: a tracing subscriber, a process-wide Prometheus recorder, HTTP(S) servers that shut down
//! gracefully, decoded admission requests handed to a service's [`admission::Handler`], a
//! leadership flag, and authenticated callers.

pub mod admin;
pub mod admission;
pub mod auth;
pub mod backlog;
pub mod bootstrap;
pub mod error;
pub mod flags;
pub mod http;
pub mod kubeclient;
pub mod leader;
pub mod lean;
pub mod malloc;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod registration;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod watch;
pub mod workers;

pub use error::{Error, Result, chain};
pub use kubeclient::KubeAccess;
pub use service::{Service, Tasks};
