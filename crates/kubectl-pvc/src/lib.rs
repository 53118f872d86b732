//! `kubectl pvc`: where a PersistentVolumeClaim stands.
//!
//! In: the command line and a kubeconfig; from the API, the claim, its PersistentVolume,
//! StorageClass, CSIDriver, VolumeAttachments, the pods of its namespace and the events about
//! them; for `timing`, the claims' `pvc-timing` annotations. Out: the seed's tables (or
//! json/yaml) on stdout, kubectl-style errors on stderr, and an exit code that says whether every
//! phase succeeded (see `--help`). Invoked as `kubectl_complete-pvc` (or with `__complete`), it
//! answers kubectl's shell completion instead ([`complete`]).

pub mod args;
pub mod complete;
pub mod error;
pub mod fetch;
pub mod phases;
pub mod render;
pub mod timing;

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
        Command::Timing { name: Some(name) } => {
            if all_namespaces {
                return Err(Error::NameAcrossNamespaces);
            }
            let claim = fetch::claim(&client, &namespace, &name).await?;
            let now = k8s_openapi::jiff::Timestamp::now();
            let report =
                timing::ClaimTiming::of(&claim, now).map_err(|missing| Error::NoTiming {
                    what: format!("persistentvolumeclaim {namespace}/{name}"),
                    readable: match missing {
                        timing::Missing::Absent => "",
                        timing::Missing::Unreadable(_) => "readable ",
                    },
                    them: "it",
                })?;
            let text = match output {
                Output::Table | Output::Wide => render::claim_timing(&report),
                Output::Json | Output::Yaml => encode(&report, output)?,
            };
            (text, Outcome::Succeeded)
        }
        Command::Timing { name: None } => {
            let scope = (!all_namespaces).then_some(namespace.as_str());
            let claims = fetch::claim_objects(&client, scope).await?;
            let report = timing::Distribution::of(&claims, scope);
            if !claims.is_empty() && !report.has_timing() {
                let place = scope.map_or_else(
                    || "in the cluster".to_owned(),
                    |ns| format!("in namespace {ns}"),
                );
                return Err(Error::NoTiming {
                    what: match claims.len() {
                        1 => format!("the one claim {place}"),
                        n => format!("none of the {n} claims {place}"),
                    },
                    readable: "",
                    them: if claims.len() == 1 { "it" } else { "them" },
                });
            }
            let text = match output {
                Output::Table | Output::Wide => render::distribution(&report),
                Output::Json | Output::Yaml => encode(&report, output)?,
            };
            (text, Outcome::Succeeded)
        }
    };
    out.write_all(text.as_bytes()).map_err(Error::Write)?;
    Ok(outcome)
}
