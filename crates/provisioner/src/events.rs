//! The controller's event writer: events.k8s.io/v1 Events as kube's `Recorder` writes them
//! (same name scheme, reporting controller and instance), plus what it last said per object, so
//! each outcome is recorded once (a changed message at most every [`MIN_INTERVAL`]).
//!
//! Not the `Recorder` itself: it keeps every event it wrote for six minutes and scans them all
//! on each write, to patch repeats into a series; in a burst of N claims that is ~1 KB and a
//! full scan per event (quadratic), and our own map already writes each outcome once.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

/// Events name this component, as external provisioners do.
pub const COMPONENT: &str = "ballast.dev/provisioner";

/// A changed message for the same object and reason is written at most this often.
const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// Last message per (object uid, reason) and when it was written, uid and message by their
/// hash ([`digest`]): two entries per claim at 10,000 claims, the strings themselves would be
/// megabytes.
type Said = HashMap<(u64, &'static str), (u64, Instant)>;

/// A 64-bit hash of a uid or message: two that differ collide once in 2^64.
fn digest(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

pub struct Events {
    client: kube::Client,
    identity: String,
    said: Mutex<Said>,
}

impl Events {
    pub fn new(client: kube::Client, identity: &str) -> Self {
        Self {
            client,
            identity: identity.to_owned(),
            said: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Said> {
        // A poisoned map of last messages is still a valid map: at worst an event repeats.
        self.said.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a Normal event; see [`Self::say`].
    pub async fn normal(
        &self,
        obj: &ObjectReference,
        reason: &'static str,
        message: String,
    ) -> bool {
        self.say(obj, "Normal", reason, message).await
    }

    /// Records a Warning event; see [`Self::say`].
    pub async fn warning(
        &self,
        obj: &ObjectReference,
        reason: &'static str,
        message: String,
    ) -> bool {
        self.say(obj, "Warning", reason, message).await
    }

    /// Records an Event unless the same message was last said for this object and reason, or
    /// another one less than MIN_INTERVAL ago (messages quoting free space change often).
    /// Says whether it was new. Event failures are logged, never fatal.
    async fn say(
        &self,
        obj: &ObjectReference,
        type_: &str,
        reason: &'static str,
        message: String,
    ) -> bool {
        let key = (digest(obj.uid.as_deref().unwrap_or_default()), reason);
        let said_now = digest(&message);
        {
            let mut said = self.lock();
            let quiet = said
                .get(&key)
                .is_some_and(|(last, at)| *last == said_now || at.elapsed() < MIN_INTERVAL);
            if quiet {
                return false;
            }
            said.insert(key, (said_now, Instant::now()));
        }
        let target = format!(
            "{}/{}",
            obj.namespace.as_deref().unwrap_or(""),
            obj.name.as_deref().unwrap_or("")
        );
        tracing::info!(object = %target, reason, %message, "event");
        let now = Timestamp::now();
        let namespace = obj.namespace.clone().unwrap_or_else(|| "default".into());
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    obj.name.as_deref().unwrap_or(COMPONENT),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            action: Some("Provision".into()),
            reason: Some(reason.into()),
            note: Some(message),
            type_: Some(type_.into()),
            event_time: Some(MicroTime(now)),
            regarding: Some(obj.clone()),
            reporting_controller: Some(COMPONENT.into()),
            reporting_instance: Some(self.identity.clone()),
            ..Default::default()
        };
        let created = Api::<Event>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &ev)
            .await;
        if let Err(e) = created {
            tracing::warn!(object = %target, reason, error = %e, "failed to record event");
        }
        true
    }

    /// Forgets what was said about objects no longer alive.
    pub fn forget_all_but(&self, live: &HashSet<&str>) {
        let live: HashSet<u64> = live.iter().map(|uid| digest(uid)).collect();
        self.lock().retain(|(uid, _), _| live.contains(uid));
    }
}
