//! Shell completion through kubectl (1.26+): for `kubectl pvc …<TAB>`, kubectl runs the
//! executable `kubectl_complete-pvc` found on PATH with the words typed after `pvc` (the last
//! one being completed, possibly empty) and reads one candidate a line, then `:<directive>`
//! (cobra's protocol). kubectl's own `kubectl completion bash|zsh|fish` scripts do the rest, so
//! one helper serves every shell.
//!
//! This binary is that helper when it runs under the name `kubectl_complete-pvc` (a symlink to
//! it) or with `__complete` first (cobra's hidden command, for a two-line helper script). It
//! completes subcommands, flags, `-o` formats, contexts, and from the cluster the claim names
//! (`inspect`, `timing`), pods (`ls -p`) and namespaces (`-n`). [`request`] decides what is
//! wanted from the words alone; [`answer`] asks the cluster.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};

/// The executable name kubectl looks up on PATH for this plugin's completions.
pub const HELPER: &str = "kubectl_complete-pvc";
/// Cobra's hidden completion command, for `kubectl pvc __complete WORDS…`.
const COMPLETE_COMMAND: &str = "__complete";
/// Cobra's variant without descriptions (this helper prints none anyway).
const COMPLETE_NO_DESC_COMMAND: &str = "__completeNoDesc";
/// Cobra directive: offer only the candidates, never file names.
const NO_FILE_COMP: u32 = 4;
/// Cobra directive: let the shell complete file names (for `--kubeconfig`).
const DEFAULT_COMP: u32 = 0;
/// A completion must answer while the user waits at the prompt: an unreachable cluster gives
/// no candidates after this long, not a hung shell.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(5);

const SUBCOMMANDS: &[&str] = &["inspect", "ls", "timing", "help"];
/// Subcommands whose one argument is a claim name.
const CLAIM_COMMANDS: &[&str] = &["inspect", "timing"];
const OUTPUTS: &[&str] = &["table", "wide", "json", "yaml"];
const GLOBAL_FLAGS: &[&str] = &[
    "--namespace",
    "-n",
    "--all-namespaces",
    "-A",
    "--context",
    "--kubeconfig",
    "--output",
    "-o",
    "--help",
    "-h",
];
const LS_FLAGS: &[&str] = &["--pod", "-p"];

/// The words to complete when this process was started as kubectl's completion helper:
/// `kubectl_complete-pvc WORDS…` or `kubectl-pvc __complete WORDS…`; `None` for a normal run.
pub fn words(argv: &[OsString]) -> Option<Vec<String>> {
    let name = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let text = |args: &[OsString]| {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
    };
    if name == HELPER {
        return Some(text(&argv[1..]));
    }
    match argv.get(1).map(|a| a.to_string_lossy()) {
        Some(c) if c == COMPLETE_COMMAND || c == COMPLETE_NO_DESC_COMMAND => Some(text(&argv[2..])),
        _ => None,
    }
}

/// What kind of word is being completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Subcommand,
    Flag {
        ls: bool,
    },
    Output,
    Context,
    /// A file name: the shell completes it.
    File,
    Namespace,
    /// A pod of the namespace (`ls -p`).
    Pod,
    /// A claim of the namespace (`inspect`, `timing`).
    Claim,
    Nothing,
}

/// What to complete, and what the words already say about where to look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub want: Want,
    /// The part of the word typed so far (after `--flag=` for that form).
    pub prefix: String,
    /// Put before every candidate (`--namespace=` when completing `--namespace=de`).
    pub lead: String,
    pub namespace: Option<String>,
    pub context: Option<String>,
    pub kubeconfig: Option<PathBuf>,
}

/// The value-taking flags and what their value is.
fn value_of(flag: &str) -> Option<Want> {
    match flag {
        "-n" | "--namespace" => Some(Want::Namespace),
        "-o" | "--output" => Some(Want::Output),
        "--context" => Some(Want::Context),
        "--kubeconfig" => Some(Want::File),
        "-p" | "--pod" => Some(Want::Pod),
        _ => None,
    }
}

/// Decides what the last word is, from the words typed after `pvc`. Pure.
pub fn request(words: &[String]) -> Request {
    let (typed, current) = match words.split_last() {
        Some((last, rest)) => (rest, last.as_str()),
        None => (&[][..], ""),
    };
    let mut req = Request {
        want: Want::Nothing,
        prefix: current.to_owned(),
        lead: String::new(),
        namespace: None,
        context: None,
        kubeconfig: None,
    };
    let mut positional: Vec<&str> = Vec::new();
    let mut pending: Option<Want> = None;
    let record = |req: &mut Request, want: &Want, value: &str| match want {
        Want::Namespace => req.namespace = Some(value.to_owned()),
        Want::Context => req.context = Some(value.to_owned()),
        Want::File => req.kubeconfig = Some(PathBuf::from(value)),
        _ => {}
    };
    for word in typed {
        if let Some(want) = pending.take() {
            record(&mut req, &want, word);
            continue;
        }
        if let Some((flag, value)) = word.split_once('=').filter(|(f, _)| f.starts_with('-')) {
            if let Some(want) = value_of(flag) {
                record(&mut req, &want, value);
            }
            continue;
        }
        if word.starts_with('-') && word.len() > 1 {
            pending = value_of(word);
            continue;
        }
        positional.push(word);
    }
    let ls = positional.first() == Some(&"ls");
    req.want = if let Some(want) = pending {
        want
    } else if let Some((flag, value)) = current.split_once('=').filter(|(f, _)| f.starts_with('-'))
    {
        req.lead = format!("{flag}=");
        req.prefix = value.to_owned();
        value_of(flag).unwrap_or(Want::Nothing)
    } else if current.starts_with('-') {
        Want::Flag { ls }
    } else {
        match positional.as_slice() {
            [] => Want::Subcommand,
            ["help"] => Want::Subcommand,
            [command] if CLAIM_COMMANDS.contains(command) => Want::Claim,
            _ => Want::Nothing,
        }
    };
    req
}

/// The candidates for `req` and cobra's directive. Asks the cluster for names, contexts from
/// the kubeconfig; any failure there gives no candidates rather than an error on the prompt.
pub async fn answer(req: &Request) -> (Vec<String>, u32) {
    let fixed = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (names, directive) = match &req.want {
        Want::Subcommand => (fixed(SUBCOMMANDS), NO_FILE_COMP),
        Want::Flag { ls } => {
            let mut flags = fixed(GLOBAL_FLAGS);
            if *ls {
                flags.extend(fixed(LS_FLAGS));
            }
            (flags, NO_FILE_COMP)
        }
        Want::Output => (fixed(OUTPUTS), NO_FILE_COMP),
        Want::File => return (Vec::new(), DEFAULT_COMP),
        Want::Nothing => (Vec::new(), NO_FILE_COMP),
        Want::Context => (contexts(req.kubeconfig.as_deref()), NO_FILE_COMP),
        Want::Namespace | Want::Pod | Want::Claim => {
            let names = tokio::time::timeout(CLUSTER_TIMEOUT, from_cluster(req))
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            (names, NO_FILE_COMP)
        }
    };
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with(&req.prefix))
        .map(|n| format!("{}{n}", req.lead))
        .collect();
    out.sort();
    out.dedup();
    (out, directive)
}

/// The context names of the kubeconfig in use (the flag's file, else KUBECONFIG's list, else
/// ~/.kube/config).
fn contexts(kubeconfig: Option<&Path>) -> Vec<String> {
    let config = match kubeconfig {
        Some(path) => kube::config::Kubeconfig::read_from(path),
        None => kube::config::Kubeconfig::read(),
    };
    config
        .map(|c| c.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

async fn from_cluster(req: &Request) -> Option<Vec<String>> {
    let client =
        ballast_runtime::kubeclient::client(req.kubeconfig.as_deref(), req.context.as_deref())
            .await
            .ok()?;
    let namespace = req
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let names = match req.want {
        Want::Namespace => names(Api::<Namespace>::all(client)).await?,
        Want::Pod => names(Api::<Pod>::namespaced(client, &namespace)).await?,
        Want::Claim => names(Api::<PersistentVolumeClaim>::namespaced(client, &namespace)).await?,
        _ => Vec::new(),
    };
    Some(names)
}

/// The names of every object `api` lists (metadata only); None when the list fails.
async fn names<K>(api: Api<K>) -> Option<Vec<String>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let list = api.list_metadata(&ListParams::default()).await.ok()?;
    Some(
        list.items
            .into_iter()
            .filter_map(|o| o.metadata.name)
            .collect(),
    )
}

/// The helper's whole output: one candidate a line, then `:<directive>`.
pub async fn run(words: &[String]) -> String {
    let (names, directive) = answer(&request(words)).await;
    let mut out = String::new();
    for n in names {
        out.push_str(&n);
        out.push('\n');
    }
    out.push_str(&format!(":{directive}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(words: &[&str]) -> Request {
        request(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn the_first_word_completes_to_a_subcommand() {
        assert_eq!(req(&[""]).want, Want::Subcommand);
        assert_eq!(req(&["-n", "apps", "in"]).want, Want::Subcommand);
        assert_eq!(req(&["help", ""]).want, Want::Subcommand);
    }

    #[test]
    fn inspect_and_timing_complete_a_claim_in_the_namespace_given_before_or_after() {
        let r = req(&["inspect", "-n", "apps", "da"]);
        assert_eq!(r.want, Want::Claim);
        assert_eq!(
            (r.namespace.as_deref(), r.prefix.as_str()),
            (Some("apps"), "da")
        );
        let r = req(&["--namespace=shop", "timing", ""]);
        assert_eq!(
            (r.want, r.namespace.as_deref()),
            (Want::Claim, Some("shop"))
        );
        // one claim only
        assert_eq!(req(&["inspect", "data", ""]).want, Want::Nothing);
        assert_eq!(req(&["ls", ""]).want, Want::Nothing);
    }

    #[test]
    fn a_flags_value_completes_from_what_the_flag_takes() {
        assert_eq!(req(&["inspect", "-n", ""]).want, Want::Namespace);
        assert_eq!(req(&["ls", "-p", "we"]).want, Want::Pod);
        assert_eq!(req(&["ls", "-o", ""]).want, Want::Output);
        assert_eq!(req(&["--context", ""]).want, Want::Context);
        assert_eq!(req(&["--kubeconfig", ""]).want, Want::File);
        let r = req(&["inspect", "--namespace=de"]);
        assert_eq!(
            (r.want, r.lead.as_str(), r.prefix.as_str()),
            (Want::Namespace, "--namespace=", "de")
        );
    }

    #[test]
    fn a_dash_completes_flags_with_ls_adding_its_pod_flag() {
        assert_eq!(req(&["inspect", "-"]).want, Want::Flag { ls: false });
        assert_eq!(req(&["ls", "--"]).want, Want::Flag { ls: true });
    }

    #[test]
    fn the_kubeconfig_and_context_typed_are_the_ones_asked() {
        let r = req(&[
            "--kubeconfig",
            "/tmp/kc",
            "--context",
            "kind",
            "inspect",
            "",
        ]);
        assert_eq!(r.kubeconfig.as_deref(), Some(Path::new("/tmp/kc")));
        assert_eq!(r.context.as_deref(), Some("kind"));
    }

    #[tokio::test]
    async fn fixed_candidates_are_filtered_by_the_prefix_and_end_with_the_no_file_directive() {
        assert_eq!(
            run(&["ls".into(), "-o".into(), "y".into()]).await,
            "yaml\n:4\n"
        );
        assert_eq!(
            run(&["t".into()]).await,
            "timing\n:4\n",
            "subcommands by prefix"
        );
        let flags = run(&["ls".into(), "--p".into()]).await;
        assert_eq!(flags, "--pod\n:4\n");
        // a file name: the shell's own completion
        assert_eq!(run(&["--kubeconfig".into(), "".into()]).await, ":0\n");
    }

    #[test]
    fn the_helper_name_or_cobras_command_switch_to_completion() {
        let os = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            words(&os(&[
                "/home/u/.krew/bin/kubectl_complete-pvc",
                "inspect",
                ""
            ])),
            Some(vec!["inspect".to_owned(), String::new()])
        );
        assert_eq!(
            words(&os(&["kubectl-pvc", "__complete", "ls", "-p", ""])),
            Some(vec!["ls".to_owned(), "-p".to_owned(), String::new()])
        );
        assert_eq!(words(&os(&["kubectl-pvc", "inspect", "data"])), None);
    }
}
