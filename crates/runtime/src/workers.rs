//! The process's tokio runtime. The services wait on the network and the API server, so they
//! run on a small fixed number of worker threads instead of one per CPU of the node: every
//! worker keeps its own allocator arena and buffers (BENCHMARKS.md, "Memory diet": the guard
//! with 5,000 nodes holds 23.7 MB on one worker against 31.1 MB on two).

use std::io;

/// The environment variable that sets the number of worker threads.
pub const ENV: &str = "WORKER_THREADS";
/// Workers when [`ENV`] is unset: two, or one on a single CPU.
pub const DEFAULT: usize = 2;

/// The number of workers for the value of [`ENV`] (unset or empty: [`DEFAULT`], at most `cpus`).
pub fn worker_threads(value: Option<&str>, cpus: usize) -> Result<usize, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT.min(cpus).max(1)),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!(
                "{ENV} must be a whole number of at least 1, not {v:?}"
            )),
        },
    }
}

/// A multi-threaded runtime with [`worker_threads`] workers, I/O and timers on.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let value = std::env::var(ENV).ok();
    let threads = worker_threads(value.as_deref(), cpus)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_means_two_workers_or_fewer_cpus() {
        assert_eq!(worker_threads(None, 32), Ok(2));
        assert_eq!(worker_threads(Some(""), 32), Ok(2));
        assert_eq!(worker_threads(Some(" "), 1), Ok(1));
        assert_eq!(worker_threads(None, 0), Ok(1));
    }

    #[test]
    fn a_set_value_is_taken_as_given() {
        assert_eq!(worker_threads(Some("1"), 32), Ok(1));
        assert_eq!(worker_threads(Some("8"), 2), Ok(8));
    }

    #[test]
    fn zero_or_garbage_is_refused_with_the_variable_named() {
        for bad in ["0", "-1", "two", "1.5"] {
            let err = worker_threads(Some(bad), 4).expect_err(bad);
            assert!(err.contains("WORKER_THREADS") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn the_runtime_runs_futures_on_its_workers() {
        let rt = runtime().expect("a runtime");
        assert_eq!(
            rt.block_on(async { tokio::spawn(async { 7 }).await }).ok(),
            Some(7)
        );
    }
}
