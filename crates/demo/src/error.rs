use std::time::Duration;

/// Everything that stops the demo; each names the step's action that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to start kube-sim")]
    Sim(#[source] kube_sim::Error),
    #[error("failed to start the control plane")]
    ControlPlane(#[source] kube_sim::control_plane::Error),
    #[error("failed to run the simulated kubelets")]
    Kubelets(#[source] kube_sim::kubelets::Error),
    #[error("failed to write {path}")]
    WriteFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to generate the webhooks' serving certificate")]
    Certs(#[source] ballast_runtime::Error),
    #[error("failed to create a temporary directory for {what}")]
    TempDir {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start eviction-guard")]
    Guard(#[source] eviction_guard::Error),
    #[error("failed to start pvc-timing")]
    PvcTiming(#[source] pvc_timing::Error),
    #[error("failed to start the provisioner")]
    Provisioner(#[source] provisioner::Error),
    #[error("failed to start podmanager")]
    PodManager(#[source] podmanager::Error),
    #[error("failed to start the control client")]
    Control(#[source] ballast_control::Error),
    #[error("failed to query the control service ({what})")]
    ControlCall {
        what: &'static str,
        #[source]
        source: ballast_control::Error,
    },
    #[error("failed to {what}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to read {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to run kubectl pvc inspect")]
    KubectlPvc(#[source] kubectl_pvc::Error),
    #[error("failed to parse a shipped manifest ({what})")]
    Manifest {
        what: &'static str,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("failed to read {path}")]
    ReadDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the tour to its output")]
    Write(#[source] std::io::Error),
    #[error("interrupted (Ctrl-C) before the tour finished")]
    Interrupted,
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    #[error("failed to show {what}: {detail}")]
    Unexpected { what: &'static str, detail: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use ballast_runtime::chain;
