//! The crate's error type.

/// Everything pvc-timing can fail at outside the admission path (which never fails a request).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to bootstrap the self-signed serving certificate")]
    Bootstrap(#[source] ballast_runtime::bootstrap::BootstrapError),
    #[error(transparent)]
    Runtime(#[from] ballast_runtime::Error),
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
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Bootstrap(_) => "bootstrap",
            Error::Runtime(e) => e.metric_label(),
            Error::Trigger { .. } => "trigger",
            Error::Count { .. } => "count",
            Error::StorageClass { .. } => "storage_class",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
