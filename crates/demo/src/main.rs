use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Service logs would drown the narration: only errors unless RUST_LOG asks for more.
const DEFAULT_LOG_FILTER: &str = "error";

#[tokio::main]
async fn main() -> ExitCode {
    ballast_runtime::tls::install_crypto_provider();
    let opts = ballast_demo::Options::parse();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    drop(
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
    );
    let mut stdout = std::io::stdout();
    match ballast_demo::run(opts, &mut stdout).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballast-demo: {}", ballast_demo::chain(&e));
            ExitCode::FAILURE
        }
    }
}
