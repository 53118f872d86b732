//! Values many cached objects hold alike (namespaces, class names, phases, access modes, node
//! and provisioner names, requested sizes) held once: each cached object points at one shared
//! copy instead of owning its own allocation. Values no object holds any longer are dropped
//! from the pool whenever it has doubled since it was last pruned, so a cluster that churns
//! namespaces or nodes does not grow it for ever.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// A pool of shared values.
pub struct Pool<T: ?Sized> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T: ?Sized> {
    values: HashSet<Arc<T>>,
    /// Prune when the pool holds this many values.
    prune_at: usize,
}

/// Values are pruned no sooner than at this many (a small pool is not worth a scan).
const MIN_PRUNE: usize = 256;

impl<T: ?Sized + Hash + Eq> Pool<T> {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                values: HashSet::new(),
                prune_at: MIN_PRUNE,
            }),
        }
    }

    /// The pool's copy of `value`, added if it has none.
    pub fn share(&self, value: &T) -> Arc<T>
    where
        for<'a> Arc<T>: From<&'a T>,
    {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = inner.values.get(value) {
            return v.clone();
        }
        if inner.values.len() >= inner.prune_at {
            inner.values.retain(|v| Arc::strong_count(v) > 1);
            inner.prune_at = (inner.values.len() * 2).max(MIN_PRUNE);
        }
        let v: Arc<T> = Arc::from(value);
        inner.values.insert(v.clone());
        v
    }

    /// How many values the pool holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values
            .len()
    }
}

impl<T: ?Sized + Hash + Eq> Default for Pool<T> {
    fn default() -> Self {
        Self::new()
    }
}

static STRINGS: LazyLock<Pool<str>> = LazyLock::new(Pool::new);
static LISTS: LazyLock<Pool<[String]>> = LazyLock::new(Pool::new);

/// The shared copy of a string.
pub fn string(s: &str) -> Arc<str> {
    STRINGS.share(s)
}

/// The shared copy of a list of strings (access modes).
pub fn list(l: &[String]) -> Arc<[String]> {
    LISTS.share(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let pool = Pool::<str>::new();
        let a = pool.share("ReadWriteOnce");
        let b = pool.share(&String::from("ReadWriteOnce"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &pool.share("ReadWriteMany")));
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn values_no_one_holds_are_dropped_once_the_pool_has_doubled() {
        let pool = Pool::<str>::new();
        let kept: Vec<Arc<str>> = (0..10).map(|i| pool.share(&format!("kept-{i}"))).collect();
        for i in 0..MIN_PRUNE - 10 {
            pool.share(&format!("gone-{i}"));
        }
        assert_eq!(pool.len(), MIN_PRUNE);
        // The next new value prunes first: only the ten still held stay, and it joins them.
        pool.share("new");
        assert_eq!(pool.len(), 11);
        assert!(Arc::ptr_eq(&kept[3], &pool.share("kept-3")));
        // Pruned again only at the floor (twice 11 is less).
        for i in 0..MIN_PRUNE - 11 {
            pool.share(&format!("again-{i}"));
        }
        assert_eq!(pool.len(), MIN_PRUNE);
    }

    #[test]
    fn lists_are_shared_too() {
        let pool = Pool::<[String]>::new();
        let modes = vec!["ReadWriteOnce".to_owned(), "ReadOnlyMany".to_owned()];
        let a = pool.share(&modes);
        assert!(Arc::ptr_eq(&a, &pool.share(&modes.clone())));
        assert_eq!(&a[..], &modes[..]);
    }
}
