//! The taint eviction controller (`taint-eviction-controller`, acting as the node controller's
//! service account), modelled on Kubernetes' `pkg/controller/tainteviction`:
//! - it reacts to *changes*: of a node's NoExecute taints (every pod on the node is looked at
//!   again) and of a pod's node or tolerations; nothing else (labels, a webhook that starts
//!   allowing) makes it look again;
//! - a pod that does not tolerate every NoExecute taint is due at once; one that tolerates them
//!   for a while is due after the shortest `tolerationSeconds`, counted from when the controller
//!   saw the taints; one that tolerates them forever is left alone;
//! - a due pod gets [`ATTEMPTS`] attempts, each of them: read the pod, patch the
//!   `DisruptionTarget` condition through `/status` unless it is already set, DELETE. After the
//!   last refused attempt the work is dropped ("timed worker failed") and the pod stays until the
//!   node's NoExecute taints (or the pod's tolerations) change.
//!
//! [`TaintEviction`] is the pure bookkeeping (what is due when); [`spawn`] does the calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{NodeTimings, TICK, list, s, sleep_or_stop, tolerates};
use crate::apiserver::{ApiRequest, Sim, Verb, now};
use crate::auth::UserInfo;
use crate::defaults::condition;
use crate::errors::ApiError;
use crate::patch::PatchType;

/// Attempts per due pod before the controller gives up on it (`retries` in Kubernetes).
pub const ATTEMPTS: u32 = 5;
/// What the controller writes on the pod before deleting it, as Kubernetes does.
pub const DISRUPTION_REASON: &str = "DeletionByTaintManager";
pub const DISRUPTION_MESSAGE: &str = "Taint manager: deleting due to NoExecute taint";
/// Event source component, as in Kubernetes.
const COMPONENT: &str = "taint-eviction-controller";

/// When a pod on a node with NoExecute taints is to be deleted (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delay {
    /// A taint is not tolerated, or a matching toleration has `tolerationSeconds <= 0`.
    Now,
    /// The shortest `tolerationSeconds` of the tolerations that match.
    After(Duration),
    /// Every taint is tolerated without a time limit.
    Never,
}

/// `GetMatchingTolerations` followed by `getMinTolerationTime`, as in Kubernetes.
pub fn eviction_delay(taints: &[Value], tolerations: &[Value]) -> Delay {
    let mut used: Vec<&Value> = Vec::new();
    for taint in taints {
        match tolerations.iter().find(|t| tolerates_one(t, taint)) {
            Some(t) => used.push(t),
            None => return Delay::Now,
        }
    }
    if used.is_empty() {
        return Delay::Now;
    }
    let mut min: Option<i64> = None;
    for t in used {
        if let Some(secs) = t.get("tolerationSeconds").and_then(Value::as_i64) {
            if secs <= 0 {
                return Delay::Now;
            }
            min = Some(min.map_or(secs, |m| m.min(secs)));
        }
    }
    match min {
        Some(secs) => Delay::After(Duration::from_secs(secs.unsigned_abs())),
        None => Delay::Never,
    }
}

fn tolerates_one(toleration: &Value, taint: &Value) -> bool {
    tolerates(&json!({"spec": {"tolerations": [toleration]}}), taint)
}

/// The NoExecute taints of a node, in order.
pub fn no_execute_taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter(|t| s(t, "/effect") == "NoExecute")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// What the controller knows of a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// `namespace/name`.
    pub key: String,
    pub node: String,
    pub tolerations: Vec<Value>,
}

impl PodView {
    pub fn from_pod(pod: &Value) -> Self {
        PodView {
            key: format!(
                "{}/{}",
                s(pod, "/metadata/namespace"),
                s(pod, "/metadata/name")
            ),
            node: s(pod, "/spec/nodeName").to_string(),
            tolerations: pod
                .pointer("/spec/tolerations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// One scheduled deletion (a `TimedWorker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub created: Instant,
    pub fire_at: Instant,
    /// Handed out by [`TaintEviction::take_due`]; its attempts are running.
    pub started: bool,
}

/// The controller's state between passes (pure: fed with what the informers would see).
#[derive(Debug, Default)]
pub struct TaintEviction {
    /// Last seen NoExecute taints of every node.
    nodes: HashMap<String, Vec<Value>>,
    /// Last seen node and tolerations of every pod.
    pods: HashMap<String, PodView>,
    work: HashMap<String, Work>,
}

impl TaintEviction {
    /// Takes in the current nodes (name, NoExecute taints) and pods, reacting to what changed
    /// since the last call the way the controller reacts to informer events: node updates first.
    pub fn observe(&mut self, nodes: &[(String, Vec<Value>)], pods: &[PodView], now: Instant) {
        for (name, taints) in nodes {
            if self.nodes.get(name) == Some(taints) {
                continue;
            }
            self.nodes.insert(name.clone(), taints.clone());
            for pod in pods.iter().filter(|p| &p.node == name) {
                if taints.is_empty() {
                    self.work.remove(&pod.key);
                } else {
                    self.process(&pod.key, &pod.tolerations, taints, now);
                }
            }
        }
        self.nodes
            .retain(|n, _| nodes.iter().any(|(name, _)| name == n));
        for pod in pods {
            if self.pods.get(&pod.key) == Some(pod) {
                continue;
            }
            self.pods.insert(pod.key.clone(), pod.clone());
            if let Some(taints) = self.nodes.get(&pod.node).filter(|t| !t.is_empty()) {
                let taints = taints.clone();
                self.process(&pod.key, &pod.tolerations, &taints, now);
            }
        }
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|k| !pods.iter().any(|p| &p.key == *k))
            .cloned()
            .collect();
        for key in gone {
            self.pods.remove(&key);
            self.work.remove(&key);
        }
    }

    /// `processPodOnNode`.
    fn process(&mut self, key: &str, tolerations: &[Value], taints: &[Value], now: Instant) {
        match eviction_delay(taints, tolerations) {
            Delay::Never => {
                self.work.remove(key);
            }
            Delay::Now => {
                self.cancel_unstarted(key);
                self.add(key, now, now);
            }
            Delay::After(d) => {
                if let Some(w) = self.work.get(key) {
                    if w.started || w.created < now {
                        return;
                    }
                    self.work.remove(key);
                }
                self.add(key, now, now + d);
            }
        }
    }

    fn cancel_unstarted(&mut self, key: &str) {
        if self.work.get(key).is_some_and(|w| !w.started) {
            self.work.remove(key);
        }
    }

    /// `AddWork`: an existing entry is kept.
    fn add(&mut self, key: &str, created: Instant, fire_at: Instant) {
        self.work.entry(key.to_string()).or_insert(Work {
            created,
            fire_at,
            started: false,
        });
    }

    /// The pods whose time has come; each is handed out once.
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, Instant)> {
        let mut due: Vec<(String, Instant)> = Vec::new();
        for (key, w) in &mut self.work {
            if !w.started && w.fire_at <= now {
                w.started = true;
                due.push((key.clone(), w.created));
            }
        }
        due.sort();
        due
    }

    /// The attempts on `key` handed out with `created` are over (deleted or given up).
    pub fn finished(&mut self, key: &str, created: Instant) {
        if self
            .work
            .get(key)
            .is_some_and(|w| w.started && w.created == created)
        {
            self.work.remove(key);
        }
    }

    /// The scheduled deletion of `key`, if any.
    pub fn work(&self, key: &str) -> Option<Work> {
        self.work.get(key).copied()
    }
}

/// Runs the controller until the simulator stops.
pub fn spawn(sim: Arc<Sim>, timings: NodeTimings) {
    tokio::spawn(async move {
        let user = UserInfo::service_account("kube-system", "node-controller");
        let mut state = TaintEviction::default();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
        while sleep_or_stop(&sim, TICK).await {
            while let Ok((key, created)) = done_rx.try_recv() {
                state.finished(&key, created);
            }
            let nodes: Vec<(String, Vec<Value>)> = list(&sim, "", "nodes")
                .iter()
                .map(|n| (s(n, "/metadata/name").to_string(), no_execute_taints(n)))
                .collect();
            let pods: Vec<PodView> = list(&sim, "", "pods")
                .iter()
                .filter(|p| !s(p, "/spec/nodeName").is_empty())
                .map(PodView::from_pod)
                .collect();
            let now = Instant::now();
            state.observe(&nodes, &pods, now);
            for (key, created) in state.take_due(now) {
                let (sim, user, done) = (sim.clone(), user.clone(), done_tx.clone());
                let pause = timings.eviction_retry;
                tokio::spawn(async move {
                    delete_with_retries(&sim, &user, &key, pause).await;
                    let _ = done.send((key, created));
                });
            }
        }
    });
}

/// `deletePodHandler`: an event, then up to [`ATTEMPTS`] attempts `pause` apart.
async fn delete_with_retries(sim: &Arc<Sim>, user: &UserInfo, key: &str, pause: Duration) {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    tracing::info!(namespace = %ns, name = %name, "taint eviction: deleting pod");
    record_event(sim, user, ns, name).await;
    let mut last = None;
    for attempt in 1..=ATTEMPTS {
        match condition_and_delete(sim, user, ns, name).await {
            Ok(()) => {
                tracing::info!(namespace = %ns, name = %name, attempt, "taint eviction: pod deleted");
                return;
            }
            Err(e) => {
                tracing::info!(namespace = %ns, name = %name, attempt, code = e.code, error = %e.message, "taint eviction attempt refused");
                last = Some(e);
            }
        }
        if !sleep_or_stop(sim, pause).await {
            return;
        }
    }
    if let Some(e) = last {
        tracing::warn!(namespace = %ns, name = %name, attempts = ATTEMPTS, code = e.code, error = %e.message,
            "taint eviction: timed worker failed; the pod stays until the node's NoExecute taints change");
    }
}

/// `addConditionAndDeletePod`.
async fn condition_and_delete(
    sim: &Arc<Sim>,
    user: &UserInfo,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let get = ApiRequest::new(Verb::Get, "v1", "pods", user.clone())
        .ns(ns)
        .name(name);
    let pod = sim.call(get).await?;
    if condition(&pod, "DisruptionTarget") != Some("True") {
        let mut cond = json!({"type": "DisruptionTarget", "status": "True",
            "lastProbeTime": null, "lastTransitionTime": now(),
            "reason": DISRUPTION_REASON, "message": DISRUPTION_MESSAGE});
        if let Some(g) = pod.pointer("/metadata/generation") {
            cond["observedGeneration"] = g.clone();
        }
        let patch = json!({"metadata": {"uid": s(&pod, "/metadata/uid")},
                           "status": {"conditions": [cond]}});
        let req = ApiRequest::new(
            Verb::Patch(PatchType::Strategic),
            "v1",
            "pods",
            user.clone(),
        )
        .ns(ns)
        .name(name)
        .subresource("status")
        .body(&patch);
        sim.call(req).await?;
    }
    let req = ApiRequest::new(Verb::Delete, "v1", "pods", user.clone())
        .ns(ns)
        .name(name);
    sim.call(req).await.map(|_| ())
}

/// `TaintManagerEviction` "Marking for deletion Pod ns/name", as the controller records it.
async fn record_event(sim: &Arc<Sim>, user: &UserInfo, ns: &str, name: &str) {
    let t = now();
    let event = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name},
        "reason": "TaintManagerEviction", "message": format!("Marking for deletion Pod {ns}/{name}"),
        "type": "Normal", "source": {"component": COMPONENT}, "count": 1,
        "firstTimestamp": t, "lastTimestamp": t, "reportingComponent": COMPONENT});
    let req = ApiRequest::new(Verb::Create, "v1", "events", user.clone())
        .ns(ns)
        .body(&event);
    if let Err(e) = sim.call(req).await {
        tracing::debug!(namespace = %ns, name = %name, error = %e, "failed to record taint eviction event");
    }
}

#[cfg(test)]
mod tests;
