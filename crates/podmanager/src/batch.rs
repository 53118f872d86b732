//! Slow start, as the ReplicaSet controller creates pods: a few at once, doubling while they
//! succeed, so that a quota or a webhook refusing every pod fails once, not once per pod.

use std::future::Future;

/// Runs `op` on `items` in batches of 1, 2, 4, … at once, stopping after the first batch with
/// an outcome `failed` says is a failure. Returns the outcomes of the items run, in their order;
/// the items after them were skipped.
pub async fn slow_start<'a, T, O, Fut>(
    items: &'a [T],
    op: impl Fn(&'a T) -> Fut,
    failed: impl Fn(&O) -> bool,
) -> Vec<O>
where
    Fut: Future<Output = O>,
{
    let mut outcomes = Vec::with_capacity(items.len());
    let (mut start, mut batch) = (0, 1);
    while start < items.len() {
        let end = (start + batch).min(items.len());
        let done = futures::future::join_all(items[start..end].iter().map(&op)).await;
        let stop = done.iter().any(&failed);
        outcomes.extend(done);
        if stop {
            break;
        }
        start = end;
        batch *= 2;
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Runs `n` items, failing those in `failing`; returns the batches as they started.
    async fn run(n: usize, failing: &[usize]) -> (Vec<Vec<usize>>, Vec<Result<usize, usize>>) {
        let items: Vec<usize> = (0..n).collect();
        let started = Mutex::new(Vec::<usize>::new());
        let outcomes = slow_start(
            &items,
            |i| {
                started.lock().expect("lock").push(*i);
                let fail = failing.contains(i);
                async move { if fail { Err(*i) } else { Ok(*i) } }
            },
            Result::is_err,
        )
        .await;
        let started = started.into_inner().expect("lock");
        let mut batches = Vec::new();
        let (mut at, mut size) = (0, 1);
        while at < started.len() {
            let end = (at + size).min(started.len());
            batches.push(started[at..end].to_vec());
            at = end;
            size *= 2;
        }
        (batches, outcomes)
    }

    #[tokio::test]
    async fn batches_double_while_everything_succeeds() {
        let (batches, outcomes) = run(10, &[]).await;
        assert_eq!(
            batches,
            vec![vec![0], vec![1, 2], vec![3, 4, 5, 6], vec![7, 8, 9]]
        );
        assert_eq!(outcomes, (0..10).map(Ok).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failure_ends_its_batch_and_skips_the_rest() {
        let (batches, outcomes) = run(10, &[4]).await;
        assert_eq!(batches, vec![vec![0], vec![1, 2], vec![3, 4, 5, 6]]);
        assert_eq!(
            outcomes,
            vec![Ok(0), Ok(1), Ok(2), Ok(3), Err(4), Ok(5), Ok(6)]
        );
        let (_, outcomes) = run(3, &[0]).await;
        assert_eq!(outcomes, vec![Err(0)], "the first failure stops everything");
    }

    #[tokio::test]
    async fn nothing_to_run() {
        let (batches, outcomes) = run(0, &[]).await;
        assert!(batches.is_empty() && outcomes.is_empty());
    }
}
