use clap::Parser;

fn main() -> anyhow::Result<()> {
    // big buffers (list pages) mapped on their own, never pinned in the heap
    ballast_runtime::malloc::tune();
    // a few workers, not one per CPU: the service waits on I/O (WORKER_THREADS)
    ballast_runtime::workers::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
    ballast_runtime::telemetry::init();
    let args = provisioner::Args::parse();
    let shutdown = ballast_runtime::shutdown::on_signals_after(args.shutdown.drain);
    let (config, options) = args.into_parts();
    provisioner::run_with(config, options, shutdown).await?;
    Ok(())
}
