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
    let args = eviction_guard::Args::parse();
    let in_cluster = std::env::var("KUBERNETES_SERVICE_HOST").ok();
    args.check(in_cluster.as_deref())
        .map_err(|e| anyhow::anyhow!("eviction-guard cannot start: {e}"))?;
    let shutdown = ballast_runtime::shutdown::on_signals_after(args.shutdown.drain);
    let config = args.into_config();
    eviction_guard::run(config, shutdown).await?;
    Ok(())
}
