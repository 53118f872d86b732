use clap::Parser;
use podmanager::{Args, Command};

fn main() -> anyhow::Result<()> {
    // big buffers (list pages) mapped on their own, never pinned in the heap
    ballast_runtime::malloc::tune();
    // a few workers, not one per CPU: the service waits on I/O (WORKER_THREADS)
    ballast_runtime::workers::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
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
