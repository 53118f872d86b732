//! The crate's error type.

/// Everything pvc-timing can fail at outside the admission path (which never fails a request).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load the webhook serving certificate")]
    Tls(#[source] ballast_runtime::Error),
    #[error("failed to bootstrap the self-signed serving certificate")]
    Bootstrap(#[source] ballast_runtime::bootstrap::BootstrapError),
    #[error("failed to build the Kubernetes client")]
    KubeClient(#[source] ballast_runtime::Error),
    #[error("failed to serve {what}")]
    Serve {
        what: &'static str,
        #[source]
        source: ballast_runtime::Error,
    },
    #[error("failed to add the webhook-trigger annotation to {claim}")]
    Trigger {
        claim: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to record the counted phases on {claim}")]
    Count {
        claim: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to look up StorageClass {class}")]
    StorageClass {
        class: String,
        #[source]
        source: kube::Error,
    },
    #[error("a pvc-timing task stopped unexpectedly")]
    Task(#[source] tokio::task::JoinError),
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "bind",
            Error::Tls(_) => "tls",
            Error::Bootstrap(_) => "bootstrap",
            Error::KubeClient(_) => "kube_client",
            Error::Serve { .. } => "serve",
            Error::Trigger { .. } => "trigger",
            Error::Count { .. } => "count",
            Error::StorageClass { .. } => "storage_class",
            Error::Task(_) => "task",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
