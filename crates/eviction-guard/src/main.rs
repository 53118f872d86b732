use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
    ballast_runtime::telemetry::init();
    let config = eviction_guard::Args::parse().into_config();
    let shutdown = ballast_runtime::shutdown::on_signals();
    eviction_guard::run(config, shutdown).await?;
    Ok(())
}
