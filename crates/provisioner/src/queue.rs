//! The reconcile loop's work: the claims and volumes whose objects changed (one reconcile per
//! object, so the cost of a burst of N claims is linear in N), the capacity objects (a report
//! written or expired), or everything at once (startup, resync, a StorageClass or node-facts
//! change, leadership or node health changing).

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

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

/// What the loop does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Work {
    /// A full pass over every claim and volume, and the directory sweep.
    All,
    /// These objects, in the order their changes arrived, each once.
    Keys(Vec<Key>),
}

#[derive(Default)]
struct Pending {
    keys: VecDeque<Key>,
    queued: HashSet<Key>,
    all: bool,
}

/// A deduplicating work queue shared by the watches (producers) and the loop (consumer).
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
            if p.all || !p.queued.insert(key.clone()) {
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

    /// Takes everything queued; `Keys` is empty when nothing is.
    pub fn take(&self) -> Work {
        let mut p = self.lock();
        p.queued.clear();
        if std::mem::take(&mut p.all) {
            p.keys.clear();
            return Work::All;
        }
        Work::Keys(p.keys.drain(..).collect())
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

    #[tokio::test]
    async fn wait_returns_when_work_was_queued_before() {
        let q = Queue::default();
        q.push(claim("a"));
        tokio::time::timeout(std::time::Duration::from_secs(1), q.wait())
            .await
            .expect("a permit was stored");
    }
}
