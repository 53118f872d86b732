use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client, a listener, the admin server, or a task that panicked.
    #[error(transparent)]
    Runtime(#[from] ballast_runtime::Error),
    #[error("failed to connect to the control service")]
    Control(#[source] ballast_control::Error),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {action}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to use the directory name")]
    Path(#[from] crate::paths::PathError),
    #[error("failed to provision: {0}")]
    Config(String),
}

impl Error {
    /// Short label for the failure metric.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "filesystem",
            Self::Kube { source, .. } if is_conflict(source) => "conflict",
            Self::Kube { .. } => "api",
            Self::Path(_) => "path",
            Self::Config(_) => "config",
            Self::Runtime(e) => e.metric_label(),
            Self::Control(_) => "startup",
        }
    }

    /// Whether a write lost an optimistic-concurrency race (re-read and decide again).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Kube { source, .. } if is_conflict(source))
    }
}

pub fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    status_code(e) == Some(409)
}

pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

pub fn io(action: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error with its sources, for events and logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}
