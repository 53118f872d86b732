//! ballast-demo: a narrated tour of Ballast that a newcomer can follow in a terminal.
//!
//! In: a few flags. Out: the tour on the writer it is given, and a [`Summary`] of the evidence
//! each step collected. It starts kube-sim (a Kubernetes API simulator, see `crates/kube-sim`)
//! — or, with `--control-plane DIR`, a real control plane from the Kubernetes binaries in DIR,
//! its nodes simulated kubelets — with five worker nodes, then eviction-guard, pvc-timing, the
//! provisioner and podmanager in-process through their library `start` functions, their webhooks
//! over real TLS registered in the API server. Everything printed is read back from the running system: annotations,
//! tables, denial messages, gRPC answers and metrics.
//!
//! The steps live in [`tour`]; [`cluster`] starts and stops the pieces; [`format`] holds the
//! pure text helpers.

pub mod backend;
pub mod cluster;
mod error;
pub mod format;
pub mod narrate;
pub mod tour;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub use error::{Error, Result, chain};
pub use tour::Summary;

/// Plays the Ballast tour on a simulated cluster (or a real control plane), then stays up for
/// you to explore it.
#[derive(Debug, Clone, Parser)]
#[command(name = "ballast-demo", version)]
pub struct Options {
    /// Exit after the tour instead of staying up until Ctrl-C (for CI and tests).
    #[arg(long, env = "DEMO_NO_WAIT", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_wait: bool,

    /// Longest wait for any single condition of the tour (e.g. `30s`, `1m`); the demo fails
    /// naming what it waited for when one takes longer.
    #[arg(long, env = "DEMO_STEP_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub step_timeout: Duration,

    /// Write the cluster's kubeconfig here (default: a temporary file, removed on exit).
    #[arg(long, env = "DEMO_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Play the tour on a real control plane instead of kube-sim: a directory with etcd,
    /// kube-apiserver, kube-controller-manager and kube-scheduler (any Kubernetes server
    /// release); the worker nodes are simulated kubelets.
    #[arg(long, env = "DEMO_CONTROL_PLANE")]
    pub control_plane: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            no_wait: false,
            step_timeout: Duration::from_secs(30),
            kubeconfig: None,
            control_plane: None,
        }
    }
}

/// Runs the tour, writing it to `out`; unless `no_wait`, then stays up until SIGINT/SIGTERM.
/// Every service is stopped before it returns.
pub async fn run(opts: Options, out: &mut (dyn Write + Send)) -> Result<Summary> {
    let Options {
        no_wait,
        step_timeout,
        kubeconfig,
        control_plane,
    } = opts;
    tour::play(
        tour::Settings {
            no_wait,
            step_timeout,
            kubeconfig,
            control_plane,
        },
        out,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tour_waits_for_ctrl_c_unless_told_not_to() {
        let opts = Options::try_parse_from(["ballast-demo"]).unwrap();
        assert!(!opts.no_wait);
        assert_eq!(opts.step_timeout, Duration::from_secs(30));
        assert_eq!(opts.kubeconfig, None);
        let opts = Options::try_parse_from(["ballast-demo", "--no-wait"]).unwrap();
        assert!(opts.no_wait);
    }

    #[test]
    fn step_timeout_and_kubeconfig_take_human_values() {
        let opts = Options::try_parse_from([
            "ballast-demo",
            "--step-timeout",
            "1m",
            "--kubeconfig",
            "demo.kubeconfig",
        ])
        .unwrap();
        assert_eq!(opts.step_timeout, Duration::from_secs(60));
        assert_eq!(opts.kubeconfig, Some(PathBuf::from("demo.kubeconfig")));
        let err = Options::try_parse_from(["ballast-demo", "--step-timeout", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--step-timeout"), "{err}");
    }
}
