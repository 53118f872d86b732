//! The runtime's error type.

use std::path::PathBuf;

/// Everything the runtime's plumbing can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse TLS material from {path}: {reason}")]
    TlsMaterial { path: PathBuf, reason: String },
    #[error("failed to build the TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("failed to generate a certificate")]
    CertGen(#[source] rcgen::Error),
    #[error("failed to serve HTTP")]
    Serve(#[source] std::io::Error),
    #[error("failed to load the Kubernetes client configuration")]
    KubeConfig(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("failed to create the Kubernetes client")]
    KubeClient(#[source] kube::Error),
    #[error("failed to bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{service}: {task} panicked: {message}")]
    Panicked {
        service: &'static str,
        task: &'static str,
        message: String,
    },
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ReadFile { .. } => "read_file",
            Error::WriteFile { .. } => "write_file",
            Error::TlsMaterial { .. } | Error::Tls(_) => "tls",
            Error::CertGen(_) => "cert_gen",
            Error::Serve(_) => "serve",
            Error::KubeConfig(_) | Error::KubeClient(_) => "kube_client",
            Error::Bind { .. } => "bind",
            Error::Panicked { .. } => "panic",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error and its sources, joined with ": ", for one log line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
