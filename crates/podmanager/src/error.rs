//! Errors of the podmanager operator.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] ballast_runtime::Error),

    #[error("failed to start the control service client")]
    Control(#[source] ballast_control::Error),

    #[error("failed to write the status of {namespace}/{name}")]
    WriteStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to apply the plan for {namespace}/{name}: {failures} pod operation(s) failed")]
    PodOperations {
        namespace: String,
        name: String,
        failures: usize,
    },

    #[error("failed to add the finalizer to {namespace}/{name}")]
    AddFinalizer {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    #[error("failed to run the finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("podmanager {0} has no namespace or uid (not read from the API server)")]
    Incomplete(String),

    #[error("failed to render the CRD")]
    Crd(#[source] serde_yaml::Error),

    #[error("failed to merge the CRD's versions")]
    CrdMerge(#[source] kube::core::crd::MergeError),

    #[error("failed to set up the conversion webhook's self-signed certificate")]
    Bootstrap(#[source] ballast_runtime::bootstrap::BootstrapError),

    #[error("failed to inject the CA bundle into CRD {crd}")]
    InjectCa {
        crd: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// Short label for the `podmanager_reconcile_total{result}` metric and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Runtime(e) => e.metric_label(),
            Self::Control(_) => "control",
            Self::WriteStatus { .. } => "write_status",
            Self::PodOperations { .. } => "pod_operations",
            Self::AddFinalizer { .. } => "add_finalizer",
            Self::Finalizer(_) => "finalizer",
            Self::Incomplete(_) => "incomplete",
            Self::Crd(_) | Self::CrdMerge(_) => "crd",
            Self::Bootstrap(_) => "bootstrap",
            Self::InjectCa { .. } => "inject_ca",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
