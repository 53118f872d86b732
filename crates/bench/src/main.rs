//! `ballast-bench [--quick|--smoke] [--area NAME]... [--rounds N] [--out BENCHMARKS.md]` runs the
//! suite; `ballast-bench null-webhook` is the transport floor it starts as its own process.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use ballast_bench::plan::Plan;
use ballast_bench::procs::{Env, pin_self, rustix_cores};
use ballast_bench::report::{self, Section};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "ballast-bench", version, about = "Ballast's benchmark suite")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Areas to run (all when none given).
    #[arg(long = "area", value_enum)]
    areas: Vec<Area>,
    /// Small sizes and short runs: a look in a minute or two, not figures to quote.
    #[arg(long, conflicts_with = "smoke")]
    quick: bool,
    /// The transport floor only, in seconds, needing no other binary (the crate's test).
    #[arg(long)]
    smoke: bool,
    /// Saturation rounds of the admission area (default: 5, 2 with `--quick`, 1 with `--smoke`).
    #[arg(long, env = "BALLAST_BENCH_ROUNDS")]
    rounds: Option<NonZeroUsize>,
    /// The markdown file to update (its other sections are kept).
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Directory of the binaries under test, kube-sim's included (default: this binary's
    /// directory; `just bench` links the static `dist` binaries the images hold).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) for
    /// the control-plane area.
    #[arg(long, env = "E2E_K8S_BINARIES", default_value = "target/k8s")]
    k8s_binaries: PathBuf,
    /// Runs of the control-plane area (all when none given; the env twin takes a comma list);
    /// with only some, write to another `--out`: the section holds the runs made.
    #[arg(
        long = "real-run",
        value_enum,
        env = "BENCH_REAL_RUNS",
        value_delimiter = ','
    )]
    real_runs: Vec<ballast_bench::plan::RealRun>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the null AdmissionReview webhook (the transport floor) until killed.
    NullWebhook {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Area {
    Admission,
    Memory,
    Storm,
    Controllers,
    Kubectl,
    /// pvc-timing's memory after a backfill of Bound claims and their deletion.
    PvcTiming,
    /// The controllers on a real control plane (needs `--k8s-binaries`).
    ControlPlane,
}

fn main() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
    let cli = Cli::parse();
    if let Some(Cmd::NullWebhook { port, cert, key }) = cli.command {
        return tokio::runtime::Runtime::new()?
            .block_on(ballast_bench::null_webhook::serve(port, &cert, &key));
    }
    // Servers on core 0, this process (the load) on core 1, when there are two.
    let (server_core, load_core) = if rustix_cores() >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    if let Some(c) = load_core {
        pin_self(c)?;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(suite(cli, server_core, load_core))
}

async fn suite(
    cli: Cli,
    server_core: Option<usize>,
    load_core: Option<usize>,
) -> anyhow::Result<()> {
    let mut plan = if cli.smoke {
        Plan::smoke()
    } else if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(n) = cli.rounds {
        plan.rounds = n.get();
    }
    if !cli.real_runs.is_empty() {
        plan.real_runs = cli.real_runs.clone();
    }
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("binary without a directory")?
            .to_path_buf(),
    };
    let work = tempfile::tempdir()?;
    let env = Env {
        bin_dir,
        server_core,
        load_core,
        work: work.path().to_path_buf(),
        child_env: Vec::new(),
    };
    let areas = if cli.areas.is_empty() && plan.smoke {
        vec![Area::Admission]
    } else if cli.areas.is_empty() {
        let mut all = vec![
            Area::Admission,
            Area::Storm,
            Area::Memory,
            Area::Controllers,
            Area::PvcTiming,
            Area::Kubectl,
        ];
        if cli.k8s_binaries.join("kube-apiserver").is_file() {
            all.push(Area::ControlPlane);
        } else {
            eprintln!(
                "ballast-bench: no Kubernetes binaries in {} (--k8s-binaries or E2E_K8S_BINARIES); \
                 the control-plane area is left out",
                cli.k8s_binaries.display()
            );
        }
        all
    } else {
        cli.areas
    };
    let started = Instant::now();
    for area in areas {
        let t = Instant::now();
        eprintln!("ballast-bench: {area:?} ({} plan)...", plan.name);
        let result: anyhow::Result<Section> = match area {
            Area::Admission => ballast_bench::areas::admission::run(&env, &plan).await,
            Area::Memory => ballast_bench::areas::memory::run(&env, &plan).await,
            Area::Storm => ballast_bench::areas::storm::run(&env, &plan).await,
            Area::Controllers => ballast_bench::areas::controllers::run(&env, &plan).await,
            Area::Kubectl => ballast_bench::areas::kubectl::run(&env, &plan).await,
            Area::PvcTiming => ballast_bench::areas::backfill::run(&env, &plan).await,
            Area::ControlPlane => {
                ballast_bench::areas::real::run(&env, &plan, &cli.k8s_binaries).await
            }
        };
        let mut section = match result {
            Ok(s) => s,
            Err(e) => {
                // Keep the services' logs for whoever reads the error.
                let dir = work.keep();
                return Err(e.context(format!(
                    "area {area:?} failed (the services' logs are in {})",
                    dir.display()
                )));
            }
        };
        section.body = section.body.replacen(
            "\n\n",
            &format!("\n\n{}\n\n", ballast_bench::machine_line(t.elapsed())),
            1,
        );
        let doc = std::fs::read_to_string(&cli.out).unwrap_or_default();
        std::fs::write(&cli.out, report::merge(&doc, &section))
            .with_context(|| format!("failed to write {}", cli.out.display()))?;
        eprintln!("ballast-bench: {area:?} done in {:.0?}", t.elapsed());
    }
    eprintln!(
        "ballast-bench: {} updated in {:.0?}",
        cli.out.display(),
        started.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_a_positive_count_from_the_flag() {
        let cli = Cli::try_parse_from(["ballast-bench", "--rounds", "3"]).unwrap();
        assert_eq!(cli.rounds.map(NonZeroUsize::get), Some(3));
        assert!(Cli::try_parse_from(["ballast-bench", "--rounds", "0"]).is_err());
    }
}
