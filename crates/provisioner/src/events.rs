//! The controller's event writer: kube's `Recorder` plus what it last said per object, so each
//! outcome is recorded once (a changed message at most every [`MIN_INTERVAL`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Events name this component, as external provisioners do.
pub const COMPONENT: &str = "ballast.dev/provisioner";

/// A changed message for the same object and reason is written at most this often.
const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// Last message per (object uid, reason) and when it was written.
type Said = HashMap<(String, &'static str), (String, Instant)>;

pub struct Events {
    recorder: Recorder,
    said: Mutex<Said>,
}

impl Events {
    pub fn new(client: kube::Client, identity: &str) -> Self {
        let reporter = Reporter {
            controller: COMPONENT.into(),
            instance: Some(identity.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
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
        self.say(obj, EventType::Normal, reason, message).await
    }

    /// Records a Warning event; see [`Self::say`].
    pub async fn warning(
        &self,
        obj: &ObjectReference,
        reason: &'static str,
        message: String,
    ) -> bool {
        self.say(obj, EventType::Warning, reason, message).await
    }

    /// Records an Event unless the same message was last said for this object and reason, or
    /// another one less than MIN_INTERVAL ago (messages quoting free space change often).
    /// Says whether it was new. Event failures are logged, never fatal.
    async fn say(
        &self,
        obj: &ObjectReference,
        type_: EventType,
        reason: &'static str,
        message: String,
    ) -> bool {
        let key = (obj.uid.clone().unwrap_or_default(), reason);
        {
            let mut said = self.lock();
            let quiet = said
                .get(&key)
                .is_some_and(|(last, at)| *last == message || at.elapsed() < MIN_INTERVAL);
            if quiet {
                return false;
            }
            said.insert(key, (message.clone(), Instant::now()));
        }
        let target = format!(
            "{}/{}",
            obj.namespace.as_deref().unwrap_or(""),
            obj.name.as_deref().unwrap_or("")
        );
        tracing::info!(object = %target, reason, %message, "event");
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(message),
            action: "Provision".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, obj).await {
            tracing::warn!(object = %target, reason, error = %e, "failed to record event");
        }
        true
    }

    /// Forgets what was said about objects no longer alive.
    pub fn forget_all_but(&self, live: &HashSet<&str>) {
        self.lock()
            .retain(|(uid, _), _| live.contains(uid.as_str()));
    }
}
