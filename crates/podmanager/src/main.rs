use clap::Parser;
use podmanager::{Args, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if args.command == Some(Command::Crd) {
        print!("{}", podmanager::crd::crd_yaml()?);
        return Ok(());
    }
    ballast_runtime::telemetry::init();
    let shutdown = ballast_runtime::shutdown::on_signals_after(args.shutdown.drain);
    podmanager::run(args.config(), shutdown).await?;
    Ok(())
}
