use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
    ballast_runtime::telemetry::init();
    let args = provisioner::Args::parse();
    let shutdown = ballast_runtime::shutdown::on_signals_after(args.shutdown.drain);
    provisioner::run(args.into_config(), shutdown).await?;
    Ok(())
}
