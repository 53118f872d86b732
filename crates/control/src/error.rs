//! Errors of the control crate's server and client.

use crate::types::ConvertError;

/// Errors serving or calling the control API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to build the gRPC reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("failed to serve the control API")]
    Serve(#[source] ballast_runtime::Error),
    #[error("failed to set up TLS to the control API: {0}")]
    ClientTls(String),
    #[error("failed to parse control API endpoint {endpoint:?}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("failed to use the bearer token: it is not a valid header value")]
    InvalidToken,
    #[error("failed to read {}", path.display())]
    ReadFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to call {method} on the control API")]
    Rpc {
        method: &'static str,
        #[source]
        source: tonic::Status,
    },
    #[error("failed to call {method} on the control API: no answer within {timeout:?}")]
    Timeout {
        method: &'static str,
        timeout: std::time::Duration,
    },
    #[error("failed to decode the answer of {method}")]
    Decode {
        method: &'static str,
        #[source]
        source: ConvertError,
    },
}

impl Error {
    /// The gRPC status of a failed call, if the server answered one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Rpc { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Reflection(_) => "reflection",
            Error::Serve(_) => "serve",
            Error::ClientTls(_) => "client_tls",
            Error::Endpoint { .. } => "endpoint",
            Error::InvalidToken => "invalid_token",
            Error::ReadFile { .. } => "read_file",
            Error::Rpc { .. } => "rpc",
            Error::Timeout { .. } => "timeout",
            Error::Decode { .. } => "decode",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
