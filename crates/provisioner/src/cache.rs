//! The caches decisions read: each object once, behind an `Arc`, found by namespace and name.
//!
//! kube's reflector store keys every object with a copy of its name, namespace, uid and
//! resourceVersion, and keeps objects that carry a full `ObjectMeta` (360 bytes before a single
//! string). Here the table holds only the `Arc`s and hashes the object's own namespace and name,
//! and the objects are this provisioner's compact shapes ([`Cached`]). A (re)list fills a new
//! table swapped in once complete, as the reflector does.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, PoisonError, RwLock};

use hashbrown::HashTable;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use kube::runtime::watcher::Event;
use tokio::sync::watch;

/// An object found by namespace (empty for cluster-scoped objects) and name.
pub trait Keyed {
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
}

/// A cached shape, and the object watched and read from the API to build it.
pub trait Cached: Keyed + Send + Sync + 'static {
    type Object: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static;

    fn cached(object: Self::Object) -> Self;
}

/// [`Keyed`] for types whose `metadata` has optional `namespace` and `name` fields.
macro_rules! keyed_by_metadata {
    ($($t:ty),*) => {$(
        impl $crate::cache::Keyed for $t {
            fn namespace(&self) -> &str {
                self.metadata.namespace.as_deref().unwrap_or("")
            }
            fn name(&self) -> &str {
                self.metadata.name.as_deref().unwrap_or("")
            }
        }
    )*};
}
pub(crate) use keyed_by_metadata;

/// The k8s-openapi types cached as they are (few objects: classes, reports, capacity objects).
macro_rules! cached_as_is {
    ($($t:ty),*) => {$(
        keyed_by_metadata!($t);
        impl Cached for $t {
            type Object = $t;
            fn cached(object: $t) -> $t {
                object
            }
        }
    )*};
}
cached_as_is!(StorageClass, Lease, CSIStorageCapacity);

/// The reading side of a cache; clones share it.
pub struct Cache<C> {
    shared: Arc<Shared<C>>,
    ready: watch::Receiver<bool>,
}

impl<C> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            ready: self.ready.clone(),
        }
    }
}

struct Shared<C> {
    table: RwLock<HashTable<Arc<C>>>,
    hasher: RandomState,
}

/// Matches the entry of that namespace and name.
fn named<'a, C: Keyed>(namespace: &'a str, name: &'a str) -> impl Fn(&Arc<C>) -> bool + 'a {
    move |c| c.namespace() == namespace && c.name() == name
}

/// The cache was dropped by its watch before it was ever listed (the service is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cache's watch ended before its first list")]
pub struct NeverListed;

impl<C: Keyed> Shared<C> {
    fn hash(&self, namespace: &str, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    fn hash_of(&self, o: &C) -> u64 {
        self.hash(o.namespace(), o.name())
    }

    fn insert(&self, table: &mut HashTable<Arc<C>>, o: Arc<C>) {
        let hash = self.hash_of(&o);
        match table.find_mut(hash, named(o.namespace(), o.name())) {
            Some(slot) => *slot = o,
            None => {
                table.insert_unique(hash, o, |c| self.hash_of(c));
            }
        }
    }
}

impl<C: Keyed> Cache<C> {
    /// The object of that namespace (empty for cluster-scoped objects) and name, if cached.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<C>> {
        let hash = self.shared.hash(namespace, name);
        self.table().find(hash, named(namespace, name)).cloned()
    }

    /// Every cached object, in no particular order.
    pub fn state(&self) -> Vec<Arc<C>> {
        self.table().iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.table().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the first complete list; every waiter wakes.
    pub async fn wait_until_ready(&self) -> Result<(), NeverListed> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|listed| *listed)
            .await
            .map(|_| ())
            .map_err(|_| NeverListed)
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, HashTable<Arc<C>>> {
        self.shared
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writing side: takes a watch's events in.
pub struct Writer<C> {
    cache: Cache<C>,
    ready: watch::Sender<bool>,
    /// Filled while the watch (re)lists; swapped in once it is complete.
    listing: Option<HashTable<Arc<C>>>,
}

/// A new, empty cache and the writer filling it.
pub fn new<C: Keyed>() -> (Cache<C>, Writer<C>) {
    let shared = Arc::new(Shared {
        table: RwLock::new(HashTable::new()),
        hasher: RandomState::new(),
    });
    let (ready, rx) = watch::channel(false);
    let cache = Cache { shared, ready: rx };
    let writer = Writer {
        cache: cache.clone(),
        ready,
        listing: None,
    };
    (cache, writer)
}

impl<C: Keyed> Writer<C> {
    /// Whether an object of `o`'s namespace and name is cached.
    pub fn contains(&self, o: &C) -> bool {
        self.cache.get(o.namespace(), o.name()).is_some()
    }

    /// Takes one watch event in.
    pub fn apply(&mut self, event: &Event<Arc<C>>) {
        match event {
            Event::Init => self.listing = Some(HashTable::new()),
            Event::InitApply(o) => {
                let listing = self.listing.get_or_insert_with(HashTable::new);
                self.cache.shared.insert(listing, o.clone());
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                *self.table_mut() = listed;
                self.ready.send_replace(true);
            }
            Event::Apply(o) => self.cache.shared.insert(&mut self.table_mut(), o.clone()),
            Event::Delete(o) => {
                let hash = self.cache.shared.hash_of(o);
                if let Ok(entry) = self
                    .table_mut()
                    .find_entry(hash, named(o.namespace(), o.name()))
                {
                    entry.remove();
                }
            }
        }
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashTable<Arc<C>>> {
        self.cache
            .shared
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Obj(&'static str, &'static str, u32);

    impl Keyed for Obj {
        fn namespace(&self) -> &str {
            self.0
        }
        fn name(&self) -> &str {
            self.1
        }
    }

    fn o(ns: &'static str, name: &'static str, v: u32) -> Arc<Obj> {
        Arc::new(Obj(ns, name, v))
    }

    fn sorted(c: &Cache<Obj>) -> Vec<(&'static str, &'static str, u32)> {
        let mut all: Vec<_> = c.state().iter().map(|o| (o.0, o.1, o.2)).collect();
        all.sort();
        all
    }

    #[test]
    fn objects_are_found_by_namespace_and_name_and_replaced_in_place() {
        let (cache, mut w) = new::<Obj>();
        for e in [
            Event::Init,
            Event::InitApply(o("a", "x", 1)),
            Event::InitApply(o("b", "x", 1)),
            Event::InitApply(o("", "x", 1)),
            Event::InitDone,
            Event::Apply(o("a", "x", 2)),
            Event::Apply(o("a", "y", 1)),
        ] {
            w.apply(&e);
        }
        assert_eq!(cache.get("a", "x").unwrap().2, 2);
        assert_eq!(cache.get("b", "x").unwrap().2, 1);
        assert_eq!(cache.get("", "x").unwrap().2, 1);
        assert_eq!(cache.get("c", "x"), None);
        assert_eq!(cache.len(), 4);
        assert!(w.contains(&Obj("a", "y", 0)));
        w.apply(&Event::Delete(o("a", "x", 2)));
        w.apply(&Event::Delete(o("a", "gone", 1)));
        assert_eq!(sorted(&cache), [("", "x", 1), ("a", "y", 1), ("b", "x", 1)]);
        assert!(!w.contains(&Obj("a", "x", 0)));
    }

    #[test]
    fn a_relist_replaces_the_cache_only_once_complete() {
        let (cache, mut w) = new::<Obj>();
        for e in [
            Event::Init,
            Event::InitApply(o("a", "x", 1)),
            Event::InitDone,
        ] {
            w.apply(&e);
        }
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(o("a", "y", 1)));
        // Still the old list while listing again.
        assert_eq!(sorted(&cache), [("a", "x", 1)]);
        w.apply(&Event::InitDone);
        assert_eq!(sorted(&cache), [("a", "y", 1)]);
    }

    #[test]
    fn every_waiter_wakes_on_the_first_list_and_an_unlisted_cache_says_so() {
        let (cache, mut w) = new::<Obj>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let c = cache.clone();
                    tokio::spawn(async move { c.wait_until_ready().await })
                })
                .collect();
            tokio::task::yield_now().await;
            w.apply(&Event::Init);
            w.apply(&Event::InitDone);
            for waiter in waiters {
                assert_eq!(waiter.await.unwrap(), Ok(()));
            }
        });
        let (never, w) = new::<Obj>();
        drop(w);
        assert_eq!(rt.block_on(never.wait_until_ready()), Err(NeverListed));
    }
}
