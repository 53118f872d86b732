//! The controller's event writer: events.k8s.io/v1 Events as kube's `Recorder` writes them
//! (same name scheme, reporting controller and instance), plus what it last said per object, so
//! each outcome is recorded once (a changed message at most every [`MIN_INTERVAL`]).
//!
//! Not the `Recorder` itself: it keeps every event it wrote for six minutes and scans them all
//! on each write, to patch repeats into a series; in a burst of N claims that is ~1 KB and a
//! full scan per event (quadratic), and our own map already writes each outcome once.
//!
//! Recording never waits for the API server, as with client-go's event broadcaster: events
//! queue (at most [`QUEUE`]) for a writer task ([`ballast_runtime::backlog`]), so a claim's
//! volume is not created one event write later. Past that, new events are dropped, counted
//! (`provisioner_events_dropped_total`) and logged at most every 30 s.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ballast_runtime::backlog::Backlog;
use tokio_util::sync::CancellationToken;

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

/// Events waiting for the writer, at most (client-go's broadcaster queues 1,000 too).
pub const QUEUE: usize = 1000;

/// Event writes in flight at once: with 4, a burst of 10,000 claims on a real control plane
/// dropped 4,000–13,000 of its 20,000 events; with 16, about 200 (BENCHMARKS.md).
const WRITERS: usize = 16;

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
    identity: String,
    said: Mutex<Said>,
    queue: Backlog<Event>,
}

impl Events {
    /// The recorder, and the writer to run as a task: it writes what is recorded until every
    /// recorder is gone and the queue is empty, or `shutdown`.
    pub fn new(
        client: kube::Client,
        identity: &str,
        shutdown: CancellationToken,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, writer) = Backlog::new(
            QUEUE,
            WRITERS,
            crate::metrics::EVENTS_DROPPED,
            shutdown,
            move |ev| write(client.clone(), ev),
        );
        let events = Self {
            identity: identity.to_owned(),
            said: Mutex::default(),
            queue,
        };
        (events, writer)
    }

    fn lock(&self) -> MutexGuard<'_, Said> {
        // A poisoned map of last messages is still a valid map: at worst an event repeats.
        self.said.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a Normal event; see [`Self::say`].
    pub fn normal(&self, obj: &ObjectReference, reason: &'static str, message: String) -> bool {
        self.say(obj, "Normal", reason, message)
    }

    /// Records a Warning event; see [`Self::say`].
    pub fn warning(&self, obj: &ObjectReference, reason: &'static str, message: String) -> bool {
        self.say(obj, "Warning", reason, message)
    }

    /// Records an Event unless the same message was last said for this object and reason, or
    /// another one less than MIN_INTERVAL ago (messages quoting free space change often).
    /// Says whether it was new. The write happens later, in the writer; failures are logged,
    /// never fatal.
    fn say(
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
        self.queue.send(ev, &target);
        true
    }

    /// Forgets what was said about objects no longer alive.
    pub fn forget_all_but(&self, live: &HashSet<&str>) {
        let live: HashSet<u64> = live.iter().map(|uid| digest(uid)).collect();
        self.lock().retain(|(uid, _), _| live.contains(uid));
    }
}

/// Writes one queued event; a failure is logged.
async fn write(client: kube::Client, ev: Event) {
    let namespace = ev.metadata.namespace.clone().unwrap_or_default();
    let target = ev
        .regarding
        .as_ref()
        .map(|r| format!("{namespace}/{}", r.name.as_deref().unwrap_or("")))
        .unwrap_or_default();
    let reason = ev.reason.clone().unwrap_or_default();
    if let Err(e) = Api::<Event>::namespaced(client, &namespace)
        .create(&PostParams::default(), &ev)
        .await
    {
        tracing::warn!(object = %target, %reason, error = %e, "failed to record event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(i: usize) -> ObjectReference {
        ObjectReference {
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some("ns".into()),
            name: Some(format!("c{i}")),
            uid: Some(format!("uid-{i}")),
            ..Default::default()
        }
    }

    /// A client for an address nothing listens on: building it connects nowhere.
    fn unreachable() -> kube::Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        kube::Client::try_from(config).expect("a client")
    }

    #[tokio::test]
    async fn recording_queues_without_waiting_and_a_full_queue_drops_and_counts() {
        // No writer runs: nothing leaves the queue.
        let (events, _writer) = Events::new(unreachable(), "test", CancellationToken::new());
        for i in 0..QUEUE + 3 {
            assert!(events.normal(&claim(i), "Provisioning", "provisioning".into()));
        }
        assert_eq!(events.queue.dropped(), 3);
        // Said once: the same message again is neither queued nor dropped.
        assert!(!events.normal(&claim(0), "Provisioning", "provisioning".into()));
        assert_eq!(events.queue.dropped(), 3);
    }

    #[tokio::test]
    async fn the_writer_stops_on_shutdown_with_events_still_queued() {
        let shutdown = CancellationToken::new();
        let (events, writer) = Events::new(unreachable(), "test", shutdown.clone());
        events.warning(&claim(1), "ProvisioningFailed", "no space".into());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer ends on shutdown");
    }

    #[tokio::test]
    async fn the_writer_ends_once_every_recorder_is_gone_and_its_queue_written() {
        let (events, writer) = Events::new(unreachable(), "test", CancellationToken::new());
        drop(events);
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the writer ends with its recorders");
    }
}
