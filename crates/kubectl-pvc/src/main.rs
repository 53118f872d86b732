use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    ballast_runtime::tls::install_crypto_provider();
    let argv: Vec<_> = std::env::args_os().collect();
    if let Some(words) = kubectl_pvc::complete::words(&argv) {
        // kubectl reads the candidates from stdout; a closed pipe leaves nothing to tell.
        let _ = std::io::stdout().write_all(kubectl_pvc::complete::run(&words).await.as_bytes());
        return ExitCode::SUCCESS;
    }
    let args = kubectl_pvc::Args::parse_from(argv);
    match kubectl_pvc::run(args, &mut std::io::stdout()).await {
        Ok(outcome) => ExitCode::from(kubectl_pvc::exit_code(outcome)),
        Err(err) => {
            eprintln!("{}", err.kubectl_message());
            ExitCode::from(1)
        }
    }
}
