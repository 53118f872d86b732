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

/// A kube client error in words an operator reads: the API server's own message with its code
/// and reason (kube's `Display` of an API error appends the whole `Status` as debug output),
/// or the error and its sources.
pub fn kube_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) if !s.message.is_empty() => {
            format!("{} ({} {})", s.message, s.code, s.reason)
        }
        other => chain(other),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_reads_as_the_servers_message_code_and_reason() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": 403, "reason": "Forbidden",
            "message": "pods \"web-0\" is forbidden: exceeded quota: pods"}))
        .unwrap();
        let text = kube_error(&kube::Error::Api(Box::new(status)));
        assert_eq!(
            text,
            "pods \"web-0\" is forbidden: exceeded quota: pods (403 Forbidden)"
        );
        assert!(!text.contains("Status {"));
    }
}
