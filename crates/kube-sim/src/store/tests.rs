use super::*;
use serde_json::json;
use tokio::sync::broadcast::error::TryRecvError;

fn cm(name: &str, data: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "ns"}, "data": {"k": data}})
}

fn key() -> StorageKey {
    StorageKey::new("", "configmaps")
}

#[test]
fn every_write_gets_a_new_increasing_resource_version() {
    let store = Store::default();
    let a = store.create(&key(), cm("a", "1")).unwrap();
    let b = store.create(&key(), cm("b", "1")).unwrap();
    let a2 = store.update(&key(), cm("a", "2"), object_rv(&a)).unwrap();
    let ra = object_rv(&a).unwrap();
    let rb = object_rv(&b).unwrap();
    let ra2 = object_rv(&a2).unwrap();
    assert!(ra < rb && rb < ra2, "{ra} {rb} {ra2}");
    assert_eq!(store.current_rv(), ra2);
}

#[test]
fn stale_update_is_a_conflict_and_changes_nothing() {
    let store = Store::default();
    let a = store.create(&key(), cm("a", "1")).unwrap();
    let first = object_rv(&a);
    store.update(&key(), cm("a", "2"), first).unwrap();
    let err = store.update(&key(), cm("a", "3"), first).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    let now = store.get(&key(), "ns", "a").unwrap();
    assert_eq!(now["data"]["k"], "2");
}

#[test]
fn an_update_that_changes_nothing_keeps_the_version_and_sends_no_event() {
    let store = Store::default();
    let a = store.create(&key(), cm("a", "1")).unwrap();
    let before = store.current_rv();
    let same = store.update(&key(), cm("a", "1"), None).unwrap();
    assert_eq!(object_rv(&same), object_rv(&a));
    assert_eq!(store.current_rv(), before);
}

#[test]
fn watch_resumes_after_a_version_with_no_gap_and_no_duplicate() {
    let store = Store::default();
    let mut rvs = Vec::new();
    for i in 0..5 {
        let o = store.create(&key(), cm(&format!("o{i}"), "x")).unwrap();
        rvs.push(object_rv(&o).unwrap());
    }
    let mut start = store.watch(&key(), Some(rvs[1])).unwrap();
    let replayed: Vec<u64> = start.replay.iter().map(|e| e.rv).collect();
    assert_eq!(replayed, rvs[2..].to_vec());
    let o = store.create(&key(), cm("later", "x")).unwrap();
    let live = start.live.try_recv().unwrap();
    assert_eq!(live.rv, object_rv(&o).unwrap());
    assert_eq!(live.name, "later");
    assert!(start.live.try_recv().is_err(), "exactly one live event");
}

#[test]
fn watch_from_a_compacted_version_is_gone() {
    let store = Store::with_history(3);
    let first = store.create(&key(), cm("a", "1")).unwrap();
    for i in 0..5 {
        store.create(&key(), cm(&format!("o{i}"), "x")).unwrap();
    }
    let err = store.watch(&key(), object_rv(&first)).err().unwrap();
    assert!(matches!(err, StoreError::Gone { .. }), "{err:?}");
    let recent = store.current_rv() - 2;
    assert_eq!(store.watch(&key(), Some(recent)).unwrap().replay.len(), 2);
}

#[test]
fn delete_event_carries_the_last_state_with_a_new_version() {
    let store = Store::default();
    let a = store.create(&key(), cm("a", "1")).unwrap();
    let mut w = store.watch(&key(), Some(store.current_rv())).unwrap();
    let gone = store.delete(&key(), "ns", "a", None).unwrap();
    let ev = w.live.try_recv().unwrap();
    assert_eq!(ev.kind, EventType::Deleted);
    assert_eq!(ev.object["data"]["k"], "1");
    assert!(object_rv(&gone).unwrap() > object_rv(&a).unwrap());
    assert_eq!(store.get(&key(), "ns", "a"), None);
    assert_eq!(
        store.delete(&key(), "ns", "a", None),
        Err(StoreError::NotFound)
    );
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "ns"}})
}

fn pods() -> StorageKey {
    StorageKey::new("", "pods")
}

#[test]
fn a_burst_of_one_kind_neither_compacts_nor_overflows_another_kinds_watch() {
    let store = Store::with_history(3);
    let first = store.create(&key(), cm("a", "1")).unwrap();
    let from = object_rv(&first).unwrap() - 1;
    let mut live = store.watch(&key(), Some(store.current_rv())).unwrap().live;
    // More events of another kind than both the history and a watcher's live buffer hold.
    for i in 0..BROADCAST_CAPACITY + 10 {
        store.create(&pods(), pod(&format!("p{i}"))).unwrap();
    }
    let b = store.create(&key(), cm("b", "1")).unwrap();
    // The live watcher of config maps sees exactly its own next event, not a lag.
    let ev = live.try_recv().unwrap();
    assert_eq!((ev.name.as_str(), ev.rv), ("b", object_rv(&b).unwrap()));
    assert!(matches!(live.try_recv(), Err(TryRecvError::Empty)));
    // Resuming config maps from before the burst replays both, with no gap.
    let replay: Vec<String> = store
        .watch(&key(), Some(from))
        .unwrap()
        .replay
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(replay, ["a", "b"]);
    // The pods' own history was compacted: resuming pods from there is gone.
    let err = store.watch(&pods(), Some(from)).err().unwrap();
    assert!(matches!(err, StoreError::Gone { .. }), "{err:?}");
}

#[test]
fn compacting_expires_every_older_version_but_keeps_open_watches_going() {
    let store = Store::default();
    let before = store.current_rv();
    store.create(&key(), cm("a", "1")).unwrap();
    let mut live = store.watch(&key(), None).unwrap().live;
    let now = store.compact();
    assert_eq!(now, store.current_rv());
    for from in [before, now - 1] {
        let err = store.watch(&key(), Some(from)).err().unwrap();
        assert!(matches!(err, StoreError::Gone { .. }), "{err:?}");
    }
    // A type that was never written has no history to lose; from now on resumes work.
    assert!(store.watch(&pods(), Some(before)).is_ok());
    let b = store.create(&key(), cm("b", "1")).unwrap();
    let replay = store.watch(&key(), Some(now)).unwrap().replay;
    assert_eq!(replay.len(), 1);
    assert_eq!(live.try_recv().unwrap().rv, object_rv(&b).unwrap());
}

#[test]
fn a_watch_replays_only_its_own_kind() {
    let store = Store::default();
    let from = store.current_rv();
    store.create(&pods(), pod("p")).unwrap();
    store.create(&key(), cm("a", "1")).unwrap();
    let start = store.watch(&key(), Some(from)).unwrap();
    let kinds: Vec<&StorageKey> = start.replay.iter().map(|e| &e.key).collect();
    assert_eq!(kinds, [&key()]);
}

#[test]
fn a_watcher_that_falls_behind_resumes_from_the_history_without_a_gap() {
    let store = Store::default();
    let from = store.current_rv();
    let mut live = store.watch(&key(), Some(from)).unwrap().live;
    let count = BROADCAST_CAPACITY + 10;
    for i in 0..count {
        store.create(&key(), cm(&format!("o{i}"), "x")).unwrap();
    }
    assert!(matches!(live.try_recv(), Err(TryRecvError::Lagged(_))));
    let replay = store.watch(&key(), Some(from)).unwrap().replay;
    assert_eq!(replay.len(), count);
    assert!(replay.windows(2).all(|w| w[0].rv < w[1].rv));
}
