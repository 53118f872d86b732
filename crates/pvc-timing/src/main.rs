use clap::Parser;

/// jemalloc, with its background thread handing freed memory back to the system within
/// seconds: after a backfill of 1,000 claims glibc's malloc kept twice the idle RSS for good
/// (BENCHMARKS.md, "pvc-timing after a backfill").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    // a few workers, not one per CPU: the service waits on I/O (WORKER_THREADS)
    ballast_runtime::workers::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
    ballast_runtime::telemetry::init();
    let args = pvc_timing::Args::parse();
    let shutdown = ballast_runtime::shutdown::on_signals_after(args.shutdown.drain);
    pvc_timing::run(args.into_config(), shutdown).await?;
    Ok(())
}
