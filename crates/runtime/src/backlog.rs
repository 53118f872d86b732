//! Writes nobody should wait for (Events, mostly), done in the background: a bounded queue and
//! a few concurrent writers, as client-go's event broadcaster does. Past the bound new items are
//! dropped, counted in a metric of the service's and logged at most every [`LOG_EVERY`]: a
//! burst must neither hold up the work that records them nor grow without limit.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A dropped item is logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// The sending side; the writer runs as a future of its own ([`Backlog::new`]).
pub struct Backlog<T> {
    queue: mpsc::Sender<T>,
    capacity: usize,
    /// Counter incremented for every item dropped.
    dropped_metric: &'static str,
    dropped: AtomicU64,
    /// When a drop was last logged.
    drop_logged: Mutex<Option<Instant>>,
}

impl<T: Send + 'static> Backlog<T> {
    /// A backlog of at most `capacity` items, and its writer: it calls `write` on each item,
    /// `writers` at a time, until every sender is gone and the queue is empty, or `shutdown`.
    pub fn new<F, Fut>(
        capacity: usize,
        writers: usize,
        dropped_metric: &'static str,
        shutdown: CancellationToken,
        write: F,
    ) -> (Self, impl Future<Output = ()> + Send + 'static)
    where
        F: Fn(T) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let backlog = Self {
            queue,
            capacity,
            dropped_metric,
            dropped: AtomicU64::new(0),
            drop_logged: Mutex::default(),
        };
        let writer = async move {
            let queued = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = queued.for_each_concurrent(writers.max(1), write) => {}
            }
        };
        (backlog, writer)
    }

    /// Queues `item` for the writer; `false` when it was dropped (the queue is full, or the
    /// writer has stopped). `target` names what it is about in the log line of a drop.
    pub fn send(&self, item: T, target: &str) -> bool {
        if self.queue.try_send(item).is_ok() {
            return true;
        }
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!(self.dropped_metric).increment(1);
        let mut logged = self
            .drop_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            *logged = Some(Instant::now());
            tracing::warn!(
                object = %target,
                dropped_so_far = total,
                "write queue full ({} waiting) or writer stopped; dropped",
                self.capacity
            );
        }
        false
    }

    /// Items dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    #[tokio::test]
    async fn writes_everything_queued_then_ends_with_its_senders() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let (backlog, writer) = Backlog::new(
            8,
            2,
            "test_dropped_total",
            CancellationToken::new(),
            move |n: u32| {
                let log = log.clone();
                async move { log.lock().expect("lock").push(n) }
            },
        );
        for n in 0..5 {
            assert!(backlog.send(n, "x"));
        }
        drop(backlog);
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer ends once its senders are gone and the queue is empty");
        let mut got = seen.lock().expect("lock").clone();
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        // The writer is held up: nothing leaves the queue.
        let gate = Arc::new(Semaphore::new(0));
        let g = gate.clone();
        let (backlog, writer) = Backlog::new(
            2,
            1,
            "test_dropped_total",
            CancellationToken::new(),
            move |_: u32| {
                let g = g.clone();
                async move {
                    let _permit = g.acquire().await;
                }
            },
        );
        let task = tokio::spawn(writer);
        // One may be taken by the writer (and held); the queue holds two more.
        let sent: usize = (0..6).filter(|n| backlog.send(*n, "x")).count();
        assert!((2..=3).contains(&sent), "{sent} queued");
        assert_eq!(backlog.dropped(), 6 - sent as u64);
        gate.add_permits(10);
        drop(backlog);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the writer ends")
            .expect("no panic");
    }

    #[tokio::test]
    async fn shutdown_stops_the_writer_and_later_items_are_dropped() {
        let shutdown = CancellationToken::new();
        let (backlog, writer) = Backlog::new(
            4,
            1,
            "test_dropped_total",
            shutdown.clone(),
            |_: u32| async { std::future::pending::<()>().await },
        );
        let task = tokio::spawn(writer);
        assert!(backlog.send(1, "x"));
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the writer stops on shutdown")
            .expect("no panic");
        assert!(!backlog.send(2, "x"), "nobody writes any more");
        assert_eq!(backlog.dropped(), 1);
    }
}
