//! Errors of the eviction-guard service.

/// What can go wrong in the I/O layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to bind {what} on {addr}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the mode ConfigMap {namespace}/{name}")]
    ReadMode {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the mode ConfigMap {namespace}/{name}")]
    WriteMode {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "failed to write the mode ConfigMap {namespace}/{name}: still conflicting after {attempts} attempts"
    )]
    ModeConflict {
        namespace: String,
        name: String,
        attempts: usize,
    },
    #[error("failed to prepare the self-signed serving certificate")]
    Bootstrap(#[from] ballast_runtime::bootstrap::BootstrapError),
    #[error("failed to run the shared runtime")]
    Runtime(#[from] ballast_runtime::Error),
    #[error("failed to serve the control API")]
    Control(#[from] ballast_control::Error),
    #[error("failed to run a service task")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "bind",
            Error::ReadMode { .. } => "read_mode",
            Error::WriteMode { .. } => "write_mode",
            Error::ModeConflict { .. } => "mode_conflict",
            Error::Bootstrap(_) => "bootstrap",
            Error::Runtime(_) => "runtime",
            Error::Control(_) => "control",
            Error::Task(_) => "task",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
