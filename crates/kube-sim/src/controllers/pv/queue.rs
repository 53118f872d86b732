//! What the PV controller syncs next (pure): its informers' view of the volumes, and the claim and
//! volume queues the watch events feed, as pkg/controller/volume/persistentvolume's
//! `claimQueue` and `volumeQueue` (a key is queued once however often it changes).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::s;
use crate::store::{Event, EventType};

/// A claim's key: (namespace, name).
pub type ClaimKey = (String, String);

/// The volumes as the controller last saw them, by name (its volume informer), and by the claim
/// their `claimRef` names.
#[derive(Debug, Default)]
pub struct VolumeCache {
    pub by_name: BTreeMap<String, Value>,
    by_claim: HashMap<ClaimKey, BTreeSet<String>>,
    /// Volumes without a `claimRef`.
    free: BTreeSet<String>,
}

fn claim_ref_key(pv: &Value) -> Option<ClaimKey> {
    let (ns, name) = (
        s(pv, "/spec/claimRef/namespace"),
        s(pv, "/spec/claimRef/name"),
    );
    (!name.is_empty()).then(|| (ns.to_string(), name.to_string()))
}

impl VolumeCache {
    pub fn replace(&mut self, volumes: Vec<Value>) {
        self.by_name.clear();
        self.by_claim.clear();
        self.free.clear();
        for v in volumes {
            self.insert(s(&v, "/metadata/name").to_string(), v);
        }
    }

    pub fn insert(&mut self, name: String, pv: Value) {
        self.remove(&name);
        match claim_ref_key(&pv) {
            Some(key) => {
                self.by_claim.entry(key).or_default().insert(name.clone());
            }
            None => {
                self.free.insert(name.clone());
            }
        }
        self.by_name.insert(name, pv);
    }

    pub fn remove(&mut self, name: &str) {
        let Some(old) = self.by_name.remove(name) else {
            return;
        };
        self.free.remove(name);
        if let Some(key) = claim_ref_key(&old)
            && let Some(names) = self.by_claim.get_mut(&key)
        {
            names.remove(name);
            if names.is_empty() {
                self.by_claim.remove(&key);
            }
        }
    }

    /// The volumes whose `claimRef` names this claim.
    pub fn naming(&self, claim: &ClaimKey) -> impl Iterator<Item = &String> {
        self.by_claim.get(claim).into_iter().flatten()
    }

    /// The volumes a sync of this claim can look at: the one it names, those whose `claimRef`
    /// names it, and the free ones. Its cost follows what the claim may bind to, not every
    /// volume in the cluster.
    pub fn for_claim<'a>(&'a self, claim: &ClaimKey, volume_name: &str) -> Vec<&'a Value> {
        let mut names: BTreeSet<&str> = self.naming(claim).map(String::as_str).collect();
        names.extend(self.free.iter().map(String::as_str));
        if !volume_name.is_empty() {
            names.insert(volume_name);
        }
        names
            .into_iter()
            .filter_map(|n| self.by_name.get(n))
            .collect()
    }
}

/// Work to do.
#[derive(Debug, Default, PartialEq)]
pub struct Queues {
    pub claims: BTreeSet<ClaimKey>,
    pub volumes: BTreeSet<String>,
    /// Every claim not yet Bound is synced again: a volume became free or a class changed, so a
    /// pending claim may now bind.
    pub pending_claims: bool,
    /// Namespaces whose deleting claims are checked again: a pod there stopped using claims.
    pub released_by_pods: BTreeSet<String>,
}

impl Queues {
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
            && self.volumes.is_empty()
            && !self.pending_claims
            && self.released_by_pods.is_empty()
    }

    fn claim_ref(&mut self, pv: &Value) {
        if let Some(key) = claim_ref_key(pv) {
            self.claims.insert(key);
        }
    }
}

fn is(event: &Event, group: &str, resource: &str) -> bool {
    event.key.group == group && event.key.resource == resource
}

/// Whether a pod no longer holds its claims (pvc-protection): deleted or terminated.
fn pod_released_claims(event: &Event) -> bool {
    event.kind == EventType::Deleted
        || matches!(s(&event.object, "/status/phase"), "Succeeded" | "Failed")
}

/// Files one watch event: updates the volume cache and queues what it affects.
/// - a claim: the claim, the volume it names and the volumes whose `claimRef` names it;
/// - a volume: the volume and the claim its `claimRef` names (before and after the change); a
///   volume without a `claimRef` may serve any pending claim;
/// - a StorageClass: every pending claim;
/// - a pod that stops using claims: the deleting claims of its namespace.
pub fn enqueue(event: &Event, cache: &mut VolumeCache, queues: &mut Queues) {
    if is(event, "", "persistentvolumeclaims") {
        let key = (event.namespace.clone(), event.name.clone());
        let volume = s(&event.object, "/spec/volumeName");
        if !volume.is_empty() {
            queues.volumes.insert(volume.to_string());
        }
        queues.volumes.extend(cache.naming(&key).cloned());
        queues.claims.insert(key);
    } else if is(event, "", "persistentvolumes") {
        if let Some(old) = &event.old {
            queues.claim_ref(old);
        }
        queues.claim_ref(&event.object);
        if event.kind == EventType::Deleted {
            cache.remove(&event.name);
        } else {
            if claim_ref_key(&event.object).is_none() {
                queues.pending_claims = true;
            }
            cache.insert(event.name.clone(), event.object.clone());
        }
        queues.volumes.insert(event.name.clone());
    } else if is(event, "storage.k8s.io", "storageclasses") {
        queues.pending_claims = true;
    } else if is(event, "", "pods") && pod_released_claims(event) {
        queues.released_by_pods.insert(event.namespace.clone());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::StorageKey;

    fn event(kind: EventType, resource: &str, object: Value, old: Option<Value>) -> Event {
        let group = if resource == "storageclasses" {
            "storage.k8s.io"
        } else {
            ""
        };
        Event {
            rv: 2,
            kind,
            key: StorageKey::new(group, resource),
            namespace: s(&object, "/metadata/namespace").to_string(),
            name: s(&object, "/metadata/name").to_string(),
            object,
            old,
        }
    }

    fn pv(name: &str, claim: Option<(&str, &str)>) -> Value {
        let mut v = json!({"metadata": {"name": name}, "spec": {}});
        if let Some((ns, c)) = claim {
            v["spec"]["claimRef"] = json!({"namespace": ns, "name": c});
        }
        v
    }

    fn key(ns: &str, name: &str) -> ClaimKey {
        (ns.to_string(), name.to_string())
    }

    #[test]
    fn a_claims_sync_sees_its_named_reserved_and_free_volumes_only() {
        let mut cache = VolumeCache::default();
        for v in [
            pv("mine", Some(("app", "data"))),
            pv("other", Some(("app", "logs"))),
            pv("free", None),
            pv("named", Some(("app", "logs"))),
        ] {
            cache.insert(s(&v, "/metadata/name").to_string(), v);
        }
        let names = |vs: Vec<&Value>| -> Vec<String> {
            vs.iter()
                .map(|v| s(v, "/metadata/name").to_string())
                .collect()
        };
        let seen = names(cache.for_claim(&key("app", "data"), "named"));
        assert_eq!(seen, ["free", "mine", "named"]);
        // Once bound to a claim, a volume is no longer free.
        cache.insert("free".into(), pv("free", Some(("app", "logs"))));
        assert_eq!(names(cache.for_claim(&key("app", "data"), "")), ["mine"]);
        cache.remove("mine");
        assert!(cache.for_claim(&key("app", "data"), "").is_empty());
    }

    #[test]
    fn a_volume_event_queues_the_volume_and_the_claim_it_is_bound_to() {
        let (mut cache, mut q) = (VolumeCache::default(), Queues::default());
        let new = pv("pv-1", Some(("app", "data")));
        enqueue(
            &event(EventType::Added, "persistentvolumes", new, None),
            &mut cache,
            &mut q,
        );
        assert_eq!(q.volumes, BTreeSet::from(["pv-1".to_string()]));
        assert_eq!(q.claims, BTreeSet::from([key("app", "data")]));
        assert!(
            !q.pending_claims,
            "a pre-bound volume serves no other claim"
        );
        assert!(cache.by_name.contains_key("pv-1"));
    }

    #[test]
    fn a_volume_losing_its_claim_ref_queues_the_old_claim_and_every_pending_claim() {
        let mut cache = VolumeCache::default();
        cache.replace(vec![pv("pv-1", Some(("app", "old")))]);
        let mut q = Queues::default();
        enqueue(
            &event(
                EventType::Modified,
                "persistentvolumes",
                pv("pv-1", None),
                Some(pv("pv-1", Some(("app", "old")))),
            ),
            &mut cache,
            &mut q,
        );
        assert_eq!(q.claims, BTreeSet::from([key("app", "old")]));
        assert!(q.pending_claims);
    }

    #[test]
    fn a_deleted_volume_leaves_the_cache_and_queues_its_claim() {
        let mut cache = VolumeCache::default();
        cache.replace(vec![pv("pv-1", Some(("app", "data")))]);
        let mut q = Queues::default();
        let gone = pv("pv-1", Some(("app", "data")));
        enqueue(
            &event(
                EventType::Deleted,
                "persistentvolumes",
                gone.clone(),
                Some(gone),
            ),
            &mut cache,
            &mut q,
        );
        assert!(cache.by_name.is_empty());
        assert_eq!(q.claims, BTreeSet::from([key("app", "data")]));
        assert_eq!(q.volumes, BTreeSet::from(["pv-1".to_string()]));
    }

    #[test]
    fn a_claim_event_queues_the_claim_and_the_volumes_that_name_it() {
        let mut cache = VolumeCache::default();
        cache.replace(vec![
            pv("pv-1", Some(("app", "data"))),
            pv("pv-2", Some(("other", "data"))),
            pv("pv-3", None),
        ]);
        let mut q = Queues::default();
        let claim = json!({"metadata": {"namespace": "app", "name": "data"},
            "spec": {"volumeName": "pv-3"}});
        enqueue(
            &event(EventType::Deleted, "persistentvolumeclaims", claim, None),
            &mut cache,
            &mut q,
        );
        assert_eq!(q.claims, BTreeSet::from([key("app", "data")]));
        assert_eq!(
            q.volumes,
            BTreeSet::from(["pv-1".to_string(), "pv-3".to_string()])
        );
    }

    #[test]
    fn pods_matter_only_when_they_stop_using_claims_and_classes_wake_pending_claims() {
        let (mut cache, mut q) = (VolumeCache::default(), Queues::default());
        let running = json!({"metadata": {"namespace": "app", "name": "p"},
            "status": {"phase": "Running"}});
        enqueue(
            &event(EventType::Modified, "pods", running.clone(), None),
            &mut cache,
            &mut q,
        );
        assert!(q.is_empty());
        enqueue(
            &event(EventType::Deleted, "pods", running, None),
            &mut cache,
            &mut q,
        );
        assert_eq!(q.released_by_pods, BTreeSet::from(["app".to_string()]));
        let class = json!({"metadata": {"name": "fast"}});
        enqueue(
            &event(EventType::Added, "storageclasses", class, None),
            &mut cache,
            &mut q,
        );
        assert!(q.pending_claims);
    }
}
