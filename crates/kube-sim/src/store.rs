//! The in-memory object store: one global resourceVersion, objects as JSON, and per resource type
//! (storage key) a bounded event history that watches resume from and a live feed, as the API
//! server keeps one watch cache per resource: a burst of one kind neither compacts another kind's
//! history nor pushes its watchers behind. Pure and synchronous; the API layer decides what to
//! write.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use tokio::sync::broadcast;

/// How many past events of one resource type a watch may resume from before it gets `410 Gone`:
/// the upper bound of the API server's watch cache per resource (`defaultUpperBoundCapacity`).
pub const DEFAULT_HISTORY: usize = 100 * 1024;
/// Live-event buffer per watcher of one resource type. A watcher that falls this far behind on
/// its own resource type has its stream closed, as the API server closes an unresponsive
/// watcher; it resumes from the last version it saw, out of the (larger) history.
const BROADCAST_CAPACITY: usize = 16_384;

/// Where a kind is stored: `(group, plural resource)`. Versions of one kind share storage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageKey {
    pub group: String,
    pub resource: String,
}

impl StorageKey {
    pub fn new(group: &str, resource: &str) -> Self {
        Self {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: StorageKey,
    pub namespace: String,
    pub name: String,
    /// The object after the change (for deletes: the last state, with the delete's resourceVersion).
    pub object: Value,
    /// The object before the change (modifications and deletes), so selector watches can turn a
    /// modification that leaves the selection into a DELETED event.
    pub old: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("object already exists")]
    AlreadyExists,
    #[error("object not found")]
    NotFound,
    #[error("resourceVersion {expected} does not match current {current}")]
    Conflict { expected: u64, current: u64 },
    #[error("resourceVersion {requested} is too old (oldest kept is {oldest})")]
    Gone { requested: u64, oldest: u64 },
}

type Objects = BTreeMap<(String, String), Value>;

/// The watch cache of one resource type: its recent events and its live feed.
struct Cacher {
    history: VecDeque<Arc<Event>>,
    /// Events of this resource type with rv <= this are no longer in the history.
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Cacher {
    fn new() -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            history: VecDeque::new(),
            // Nothing of this type was ever dropped: every version since the store began is
            // served from the history.
            compacted: 1,
            tx,
        }
    }
}

struct Inner {
    rv: u64,
    objects: BTreeMap<StorageKey, Objects>,
    cachers: BTreeMap<StorageKey, Cacher>,
    history_cap: usize,
}

impl Inner {
    fn cacher(&mut self, key: &StorageKey) -> &mut Cacher {
        self.cachers.entry(key.clone()).or_insert_with(Cacher::new)
    }
}

impl Inner {
    /// The stored object and its resourceVersion, checked against the caller's precondition.
    fn current(
        &self,
        key: &StorageKey,
        id: &(String, String),
        expected_rv: Option<u64>,
    ) -> Result<(Value, u64), StoreError> {
        let old = self
            .objects
            .get(key)
            .and_then(|m| m.get(id))
            .cloned()
            .ok_or(StoreError::NotFound)?;
        let current = object_rv(&old).unwrap_or_default();
        if let Some(expected) = expected_rv
            && expected != current
        {
            return Err(StoreError::Conflict { expected, current });
        }
        Ok((old, current))
    }
}

/// The store. Cheap to share behind an `Arc`.
pub struct Store {
    inner: RwLock<Inner>,
}

/// A watch's starting point on one resource type: the events to replay, then the live feed.
pub struct WatchStart {
    pub replay: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The store's resourceVersion when the watch started.
    pub rv: u64,
}

pub fn object_rv(obj: &Value) -> Option<u64> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn ns_name(obj: &Value) -> (String, String) {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

impl Default for Store {
    fn default() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }
}

impl Store {
    pub fn with_history(history_cap: usize) -> Self {
        Self {
            inner: RwLock::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                cachers: BTreeMap::new(),
                history_cap: history_cap.max(1),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    pub fn get(&self, key: &StorageKey, namespace: &str, name: &str) -> Option<Value> {
        self.read()
            .objects
            .get(key)
            .and_then(|m| m.get(&(namespace.to_string(), name.to_string())))
            .cloned()
    }

    /// All objects of a kind (in one namespace when given), sorted by namespace then name,
    /// with the store's resourceVersion at that instant.
    pub fn list(&self, key: &StorageKey, namespace: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.read();
        let items = inner
            .objects
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Every storage key with at least one object (for namespace cleanup and garbage collection).
    pub fn keys(&self) -> Vec<StorageKey> {
        self.read().objects.keys().cloned().collect()
    }

    fn record(inner: &mut Inner, event: Event) {
        let event = Arc::new(event);
        let cap = inner.history_cap;
        let cacher = inner.cacher(&event.key);
        cacher.history.push_back(event.clone());
        while cacher.history.len() > cap {
            if let Some(old) = cacher.history.pop_front() {
                cacher.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = cacher.tx.send(event);
    }

    /// Stores a new object, assigning the next resourceVersion.
    pub fn create(&self, key: &StorageKey, mut obj: Value) -> Result<Value, StoreError> {
        let mut inner = self.write();
        let (ns, name) = ns_name(&obj);
        let exists = inner
            .objects
            .get(key)
            .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())));
        if exists {
            return Err(StoreError::AlreadyExists);
        }
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut obj, rv);
        inner
            .objects
            .entry(key.clone())
            .or_default()
            .insert((ns.clone(), name.clone()), obj.clone());
        let event = Event {
            rv,
            kind: EventType::Added,
            key: key.clone(),
            namespace: ns,
            name,
            object: obj.clone(),
            old: None,
        };
        Self::record(&mut inner, event);
        Ok(obj)
    }

    /// Replaces an object. `expected_rv` is the precondition (409 when stale). An update that
    /// changes nothing keeps the resourceVersion and sends no event, as the API server does.
    pub fn update(
        &self,
        key: &StorageKey,
        mut obj: Value,
        expected_rv: Option<u64>,
    ) -> Result<Value, StoreError> {
        let mut inner = self.write();
        let (ns, name) = ns_name(&obj);
        let id = (ns.clone(), name.clone());
        let (old, current) = inner.current(key, &id, expected_rv)?;
        set_rv(&mut obj, current);
        if obj == old {
            return Ok(old);
        }
        inner.rv += 1;
        let rv = inner.rv;
        set_rv(&mut obj, rv);
        inner
            .objects
            .entry(key.clone())
            .or_default()
            .insert(id, obj.clone());
        let event = Event {
            rv,
            kind: EventType::Modified,
            key: key.clone(),
            namespace: ns,
            name,
            object: obj.clone(),
            old: Some(old),
        };
        Self::record(&mut inner, event);
        Ok(obj)
    }

    /// Removes an object; `expected_rv` is an optional precondition.
    pub fn delete(
        &self,
        key: &StorageKey,
        namespace: &str,
        name: &str,
        expected_rv: Option<u64>,
    ) -> Result<Value, StoreError> {
        let mut inner = self.write();
        let id = (namespace.to_string(), name.to_string());
        let (old, _) = inner.current(key, &id, expected_rv)?;
        if let Some(m) = inner.objects.get_mut(key) {
            m.remove(&id);
        }
        inner.rv += 1;
        let rv = inner.rv;
        let mut last = old.clone();
        set_rv(&mut last, rv);
        let event = Event {
            rv,
            kind: EventType::Deleted,
            key: key.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            object: last.clone(),
            old: Some(old),
        };
        Self::record(&mut inner, event);
        Ok(last)
    }

    /// The current objects of a kind and a watch starting right after them, atomically.
    pub fn snapshot_and_watch(
        &self,
        key: &StorageKey,
        namespace: Option<&str>,
    ) -> (Vec<Value>, WatchStart) {
        let mut inner = self.write();
        let live = inner.cacher(key).tx.subscribe();
        let items = inner
            .objects
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|((ns, _), _)| namespace.is_none_or(|want| want == ns))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (
            items,
            WatchStart {
                replay: Vec::new(),
                live,
                rv: inner.rv,
            },
        )
    }

    /// Drops every resource type's history, as etcd compacted to its current revision behind a
    /// freshly started watch cache: watches already open go on, but none can resume from a
    /// version before now (`410 Gone`). Returns that revision.
    pub fn compact(&self) -> u64 {
        let mut inner = self.write();
        let rv = inner.rv;
        for cacher in inner.cachers.values_mut() {
            cacher.history.clear();
            cacher.compacted = rv;
        }
        rv
    }

    /// Starts a watch on every change of one resource type after `from_rv` (its events with
    /// rv > from_rv are replayed from its history, then live ones follow with no gap). `None`
    /// starts at "now". `410 Gone` only when events of this type after `from_rv` were dropped.
    pub fn watch(&self, key: &StorageKey, from_rv: Option<u64>) -> Result<WatchStart, StoreError> {
        // Holding the lock while subscribing means no write can slip between replay and live.
        let mut inner = self.write();
        let rv = inner.rv;
        let cacher = inner.cacher(key);
        let live = cacher.tx.subscribe();
        let replay = match from_rv {
            None => Vec::new(),
            Some(from) if from >= rv => Vec::new(),
            Some(from) if from < cacher.compacted => {
                return Err(StoreError::Gone {
                    requested: from,
                    oldest: cacher.compacted,
                });
            }
            Some(from) => cacher
                .history
                .iter()
                .filter(|e| e.rv > from)
                .cloned()
                .collect(),
        };
        Ok(WatchStart { replay, live, rv })
    }
}

#[cfg(test)]
mod tests;
