//! Command line, kubectl style: global `-n`, `-A`, `--context`, `--kubeconfig`, `-o` work before
//! or after the subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0  every phase succeeded or does not apply (inspect); the listing or figures were printed
     (ls, timing)
  1  the command failed: claim or pod not found, API or kubeconfig error, no pvc-timing
     annotation to read (timing)
  2  invalid command line
  3  inspect: nothing failed, but a phase is still pending
  4  inspect: a phase failed or partly failed";

/// Shows where PersistentVolumeClaims stand: Provision, Bind, Attach and Mount, from the
/// evidence in the cluster (volumes, classes, VolumeAttachments, pods, events).
#[derive(Debug, Parser)]
#[command(name = "kubectl-pvc", bin_name = "kubectl pvc", version, after_help = EXIT_CODES)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    /// Namespace of the claims (default: the kubeconfig context's, else "default").
    #[arg(short = 'n', long, global = true, env = "KUBECTL_PVC_NAMESPACE")]
    pub namespace: Option<String>,

    /// Across all namespaces (ls, timing).
    #[arg(short = 'A', long, global = true, env = "KUBECTL_PVC_ALL_NAMESPACES")]
    pub all_namespaces: bool,

    /// Kubeconfig context to use (default: the current context).
    #[arg(long, global = true, env = "KUBECTL_PVC_CONTEXT")]
    pub context: Option<String>,

    /// Path to the kubeconfig file (default: the KUBECONFIG list, then ~/.kube/config, then
    /// in-cluster).
    #[arg(long, global = true, env = "KUBECTL_PVC_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table, env = "KUBECTL_PVC_OUTPUT")]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the desired pods and nodes of one claim and the state of each phase.
    Inspect {
        /// Name of the PersistentVolumeClaim.
        name: String,
    },
    /// List claims (NAME, VOLUME; more with -o wide), or those one pod mounts.
    Ls {
        /// List only the claims this pod mounts, in the order of its volumes.
        #[arg(short = 'p', long, env = "KUBECTL_PVC_POD")]
        pod: Option<String>,
    },
    /// Time from creation to Bound, from the `pvc-timing` annotations: for one claim its phase
    /// history as a timeline; without a name, the distribution per storage class of the
    /// namespace's claims (-A: every namespace's), as percentiles and a histogram.
    Timing {
        /// Name of one PersistentVolumeClaim (omit for the distribution).
        name: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_flags_are_accepted_after_the_subcommand() {
        let args = Args::try_parse_from([
            "kubectl-pvc",
            "inspect",
            "data",
            "-n",
            "apps",
            "-o",
            "json",
            "--context",
            "kind",
        ])
        .expect("valid command line");
        assert_eq!(args.namespace.as_deref(), Some("apps"));
        assert_eq!(args.output, Output::Json);
        assert_eq!(args.context.as_deref(), Some("kind"));
        assert!(matches!(args.command, Command::Inspect { name } if name == "data"));
    }

    #[test]
    fn ls_takes_a_pod_and_all_namespaces() {
        let args = Args::try_parse_from(["kubectl-pvc", "-A", "ls", "-p", "web-0"]).expect("valid");
        assert!(args.all_namespaces);
        assert!(matches!(args.command, Command::Ls { pod: Some(p) } if p == "web-0"));
    }

    #[test]
    fn unknown_output_format_is_a_usage_error() {
        let err = Args::try_parse_from(["kubectl-pvc", "ls", "-o", "xml"]).expect_err("invalid");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn help_documents_the_exit_codes() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        assert!(
            help.contains("3  inspect: nothing failed, but a phase is still pending"),
            "{help}"
        );
    }
}
