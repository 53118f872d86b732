//! `kubectl pvc`: where a PersistentVolumeClaim stands.
//!
//! In: the command line and a kubeconfig; from the API, the claim, its PersistentVolume,
//! StorageClass, CSIDriver, VolumeAttachments, the pods of its namespace and the events about
//! them. Out: the seed's tables (or json/yaml) on stdout, kubectl-style errors on stderr, and an
//! exit code that says whether every phase succeeded (see `--help`).

pub mod args;
pub mod error;
pub mod fetch;
pub mod phases;
pub mod render;

use std::io::Write;

pub use args::Args;
use args::{Command, Output};
pub use error::{Error, Result};
use phases::Outcome;

/// Exit code of a run that printed its answer (failures to run exit with 1, usage errors 2).
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Succeeded => 0,
        Outcome::Pending => 3,
        Outcome::Failed => 4,
    }
}

fn encode<T: serde::Serialize>(value: &T, output: Output) -> Result<String> {
    match output {
        Output::Yaml => serde_yaml::to_string(value).map_err(|e| Error::Encode {
            format: "yaml",
            source: Box::new(e),
        }),
        _ => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Encode {
                format: "json",
                source: Box::new(e),
            }),
    }
}

/// Runs one command against the cluster and writes its answer to `out`.
pub async fn run(args: Args, out: &mut (dyn Write + Send)) -> Result<Outcome> {
    let Args {
        command,
        namespace,
        all_namespaces,
        context,
        kubeconfig,
        output,
    } = args;
    let client = ballast_runtime::kubeclient::client(kubeconfig.as_deref(), context.as_deref())
        .await
        .map_err(Error::Client)?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let wide = output == Output::Wide;
    let (text, outcome) = match command {
        Command::Inspect { name } => {
            if all_namespaces {
                return Err(Error::NameAcrossNamespaces);
            }
            let set = fetch::inspect(&client, &namespace, &name).await?;
            let report = phases::derive(&set);
            let text = match output {
                Output::Table | Output::Wide => render::inspection(&report, wide),
                Output::Json | Output::Yaml => encode(&report, output)?,
            };
            (text, report.outcome)
        }
        Command::Ls { pod } => {
            let rows = match (&pod, all_namespaces) {
                (Some(_), true) => return Err(Error::NameAcrossNamespaces),
                (Some(pod), false) => fetch::claims_of_pod(&client, &namespace, pod).await?,
                (None, true) => fetch::claims(&client, None).await?,
                (None, false) => fetch::claims(&client, Some(&namespace)).await?,
            };
            let text = match output {
                Output::Table | Output::Wide => render::claims(&rows, wide, all_namespaces),
                Output::Json | Output::Yaml => encode(&rows, output)?,
            };
            (text, Outcome::Succeeded)
        }
    };
    out.write_all(text.as_bytes()).map_err(Error::Write)?;
    Ok(outcome)
}
