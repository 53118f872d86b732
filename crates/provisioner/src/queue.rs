//! The reconcile loop's work: the claims and volumes whose objects changed (one reconcile per
//! object, so the cost of a burst of N claims is linear in N), the capacity objects (a report
//! written or expired), or everything at once (startup, resync, a StorageClass or node-facts
//! change, leadership or node health changing).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

/// One object to reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Claim {
        namespace: String,
        name: String,
    },
    Volume(String),
    /// The CSIStorageCapacity objects published from the agents' reports.
    Capacities,
}

impl Key {
    /// The `kind` label of the queue-wait histogram.
    pub fn kind(&self) -> &'static str {
        match self {
            Key::Claim { .. } => "claim",
            Key::Volume(_) => "volume",
            Key::Capacities => "capacities",
        }
    }
}

/// What a batch consumer does next ([`Queue::take`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Work {
    /// A full pass over every claim and volume, and the directory sweep.
    All,
    /// These objects, in the order their changes arrived, each once.
    Keys(Vec<Key>),
}

#[derive(Default)]
struct Pending {
    /// Keys ready to be handed out, in arrival order.
    keys: VecDeque<Key>,
    /// Every key queued and not yet handed out, with when it was queued: those in `keys`, and
    /// those queued again while being reconciled (handed out once that reconcile is done).
    queued: HashMap<Key, Instant>,
    /// Keys handed out by [`Queue::pop`] and not yet [`Queue::done`].
    processing: HashSet<Key>,
    all: bool,
}

impl Pending {
    /// Hands `key` out: no longer queued; how long it waited is recorded.
    fn hand_out(&mut self, key: &Key) {
        if let Some(since) = self.queued.remove(key) {
            crate::metrics::queue_wait(key.kind(), since.elapsed());
        }
    }
}

/// A deduplicating work queue shared by the watches (producers) and the loop (consumer), with
/// client-go's workqueue guarantees for the worker consumer ([`Queue::pop`]): a key is handed
/// to one worker at a time, and a key queued again while being reconciled comes out again once
/// that reconcile is [`Queue::done`].
#[derive(Default)]
pub struct Queue {
    pending: Mutex<Pending>,
    notify: Notify,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // The pending set stays valid whatever panicked while holding it.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one object, unless it is queued already or a full pass is.
    pub fn push(&self, key: Key) {
        {
            let mut p = self.lock();
            if p.all || p.queued.contains_key(&key) {
                return;
            }
            p.queued.insert(key.clone(), Instant::now());
            if p.processing.contains(&key) {
                return;
            }
            p.keys.push_back(key);
        }
        self.notify.notify_one();
    }

    /// Queues a full pass, which covers every object queued so far.
    pub fn push_all(&self) {
        {
            let mut p = self.lock();
            p.all = true;
            p.keys.clear();
            p.queued.clear();
        }
        self.notify.notify_one();
    }

    /// Takes everything queued; `Keys` is empty when nothing is. For a consumer that finishes
    /// a batch before taking the next and does not [`Queue::pop`] meanwhile.
    pub fn take(&self) -> Work {
        let mut p = self.lock();
        if std::mem::take(&mut p.all) {
            p.keys.clear();
            p.queued.clear();
            return Work::All;
        }
        let keys: Vec<Key> = p.keys.drain(..).collect();
        for key in &keys {
            p.hand_out(key);
        }
        Work::Keys(keys)
    }

    /// Whether a full pass is asked for and nothing is being reconciled: then it is taken
    /// (the caller runs it).
    pub fn take_pass(&self) -> bool {
        let mut p = self.lock();
        if p.all && p.processing.is_empty() {
            p.all = false;
            true
        } else {
            false
        }
    }

    /// The next key to reconcile, marked as being reconciled until [`Queue::done`]. `None`
    /// when nothing is ready, or while a full pass is asked for (it waits for the keys being
    /// reconciled, then [`Queue::take_pass`] takes it).
    pub fn pop(&self) -> Option<Key> {
        let mut p = self.lock();
        if p.all {
            return None;
        }
        let key = p.keys.pop_front()?;
        p.hand_out(&key);
        p.processing.insert(key.clone());
        Some(key)
    }

    /// `key`'s reconcile is over: queued again if it changed meanwhile. Wakes nobody: the
    /// caller is the consumer, and looks at the queue next.
    pub fn done(&self, key: &Key) {
        let mut p = self.lock();
        p.processing.remove(key);
        if !p.all && p.queued.contains_key(key) {
            p.keys.push_back(key.clone());
        }
    }

    /// Waits until something was queued since the last `take` (returns at once if so).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str) -> Key {
        Key::Claim {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn keys_come_out_once_each_in_arrival_order() {
        let q = Queue::default();
        q.push(claim("a"));
        q.push(Key::Volume("pv".into()));
        q.push(claim("a"));
        q.push(claim("b"));
        assert_eq!(
            q.take(),
            Work::Keys(vec![claim("a"), Key::Volume("pv".into()), claim("b")])
        );
        assert_eq!(q.take(), Work::Keys(vec![]));
        q.push(claim("a"));
        assert_eq!(
            q.take(),
            Work::Keys(vec![claim("a")]),
            "queued again once taken"
        );
    }

    #[test]
    fn a_full_pass_absorbs_single_keys() {
        let q = Queue::default();
        q.push(claim("a"));
        q.push_all();
        q.push(claim("b"));
        assert_eq!(q.take(), Work::All);
        assert_eq!(q.take(), Work::Keys(vec![]));
    }

    #[test]
    fn a_key_is_handed_to_one_worker_at_a_time_and_again_if_it_changed_meanwhile() {
        let q = Queue::default();
        q.push(claim("a"));
        q.push(claim("b"));
        assert_eq!(q.pop(), Some(claim("a")));
        // Changed while its reconcile runs: not handed to a second worker now...
        q.push(claim("a"));
        q.push(claim("a"));
        assert_eq!(q.pop(), Some(claim("b")));
        assert_eq!(q.pop(), None);
        // ...but once, after that reconcile is done.
        q.done(&claim("a"));
        assert_eq!(q.pop(), Some(claim("a")));
        assert_eq!(q.pop(), None);
        q.done(&claim("a"));
        q.done(&claim("b"));
        assert_eq!(q.pop(), None, "nothing changed since");
    }

    #[test]
    fn a_full_pass_waits_for_the_reconciles_in_flight_and_absorbs_the_rest() {
        let q = Queue::default();
        q.push(claim("a"));
        q.push(claim("b"));
        assert_eq!(q.pop(), Some(claim("a")));
        q.push_all();
        assert_eq!(q.pop(), None, "no key is handed out while a pass is due");
        assert!(!q.take_pass(), "a reconcile is still in flight");
        q.push(claim("a"));
        q.done(&claim("a"));
        assert!(q.take_pass());
        assert!(!q.take_pass(), "taken once");
        assert_eq!(q.pop(), None, "the pass covered every key queued before it");
    }

    #[test]
    fn keys_wait_in_arrival_order_for_workers() {
        let q = Queue::default();
        for name in ["a", "b", "c"] {
            q.push(claim(name));
        }
        assert_eq!(q.pop(), Some(claim("a")));
        q.push(Key::Capacities);
        let rest: Vec<Key> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, vec![claim("b"), claim("c"), Key::Capacities]);
    }

    #[tokio::test]
    async fn wait_returns_when_work_was_queued_before() {
        let q = Queue::default();
        q.push(claim("a"));
        tokio::time::timeout(std::time::Duration::from_secs(1), q.wait())
            .await
            .expect("a permit was stored");
    }
}
