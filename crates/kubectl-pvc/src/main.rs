use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    ballast_runtime::tls::install_crypto_provider();
    let args = kubectl_pvc::Args::parse();
    match kubectl_pvc::run(args, &mut std::io::stdout()).await {
        Ok(outcome) => ExitCode::from(kubectl_pvc::exit_code(outcome)),
        Err(err) => {
            eprintln!("{}", err.kubectl_message());
            ExitCode::from(1)
        }
    }
}
