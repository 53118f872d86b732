//! The guard's live state: the worker nodes seen by the monitor and the mode, turned into a
//! [`Snapshot`] by [`storm::evaluate`] on every change and published to the webhook, the
//! callbacks and the control service (`watch` channels: readers always get the latest).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ballast_control::{
    ControlError, ControlState, InterceptionState, ModeChange, NodeHealthSnapshot,
};
use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::watch;

use crate::audit::{self, Audit};
use crate::metrics;
use crate::mode::{ModeRecord, ModeStore};
use crate::release::{Refusal, Refusals};
use crate::storm::{self, NodeState, Protection, Snapshot, StormConfig};

struct Inner {
    /// Shared with the published [`Snapshot`]: one copy of the cache, not two.
    workers: Arc<BTreeMap<String, NodeState>>,
    synced: bool,
    mode: ModeRecord,
    protection: Protection,
}

/// How the Node watch is doing. The cache keeps its last state through watch errors, so the
/// verdicts go on from it; this says when that state may be stale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeWatchHealth {
    /// The last watch result was an event, not an error. After an error it turns true again at
    /// the next node event (kubelets report their status at least every few minutes).
    pub healthy: bool,
    /// Watch errors since start.
    pub errors: u64,
    /// The last error, kept after recovery for the record.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// Shared by every task of one guard.
pub struct Guard {
    cfg: StormConfig,
    inner: Mutex<Inner>,
    node_watch: Mutex<NodeWatchHealth>,
    /// The node controller's evictions this replica refused (see [`crate::release`]).
    refusals: Mutex<Refusals>,
    /// Serialises mode writes so two callers of one replica do not race each other.
    mode_write: tokio::sync::Mutex<()>,
    store: Option<ModeStore>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    status: watch::Sender<InterceptionState>,
    nodes: watch::Sender<NodeHealthSnapshot>,
    /// The refusals' audit trail, and its lines until the writer task takes them.
    audit: Arc<Audit>,
    audit_lines: Mutex<Option<tokio::sync::mpsc::Receiver<audit::Line>>>,
}

impl Guard {
    /// `store` persists mode changes (None keeps them in memory: tests of the webhook alone).
    pub fn new(cfg: StormConfig, store: Option<ModeStore>) -> Arc<Self> {
        let (audit, audit_lines) = Audit::new();
        let guard = Guard {
            cfg,
            inner: Mutex::new(Inner {
                workers: Arc::default(),
                synced: false,
                mode: ModeRecord::default(),
                protection: Protection::default(),
            }),
            node_watch: Mutex::new(NodeWatchHealth::default()),
            refusals: Mutex::new(Refusals::default()),
            mode_write: tokio::sync::Mutex::new(()),
            store,
            snapshot: watch::Sender::new(Arc::new(Snapshot::default())),
            status: watch::Sender::new(InterceptionState::default()),
            nodes: watch::Sender::new(NodeHealthSnapshot::default()),
            audit: Arc::new(audit),
            audit_lines: Mutex::new(Some(audit_lines)),
        };
        guard.recompute(&mut guard.lock());
        Arc::new(guard)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &StormConfig {
        &self.cfg
    }

    /// The latest snapshot (cheap: an `Arc`).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.subscribe()
    }

    pub fn mode(&self) -> ModeRecord {
        self.lock().mode.clone()
    }

    /// The refusals' audit trail.
    pub fn audit(&self) -> &Arc<Audit> {
        &self.audit
    }

    /// Writes the audit trail until `shutdown` (the first caller only; later ones return).
    pub async fn write_audit(&self, shutdown: tokio_util::sync::CancellationToken) {
        let lines = self
            .audit_lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(lines) = lines {
            audit::run(self.audit.clone(), lines, shutdown).await;
        }
    }

    /// Evaluates again with no node change: an ending storm's settle period may be over.
    pub fn reevaluate(&self) {
        let mut inner = self.lock();
        self.recompute(&mut inner);
    }

    /// When the protection changes by itself unless nodes change first: the end of an ending
    /// storm's settle period.
    pub fn next_change(&self) -> Option<DateTime<Utc>> {
        self.lock().protection.next_change(self.cfg.settle)
    }

    /// Replaces every worker node (after a full list) and marks the cache synced.
    pub fn replace_workers(&self, workers: impl IntoIterator<Item = NodeState>) {
        let mut inner = self.lock();
        inner.workers = Arc::new(workers.into_iter().map(|n| (n.name.clone(), n)).collect());
        inner.synced = true;
        self.recompute(&mut inner);
    }

    /// A worker node was added or changed.
    pub fn upsert_worker(&self, node: NodeState) {
        let mut inner = self.lock();
        match inner.workers.get(&node.name) {
            Some(old) if *old == node => return,
            Some(old) if old.ready == node.ready => {}
            _ => tracing::info!(
                node = %node.name,
                ready = node.ready,
                reason = %node.reason,
                "worker node is {}",
                if node.ready { "Ready" } else { "NotReady" }
            ),
        }
        Arc::make_mut(&mut inner.workers).insert(node.name.clone(), node);
        self.recompute(&mut inner);
    }

    /// A node was deleted, or is no longer a worker.
    pub fn remove_worker(&self, name: &str) {
        let mut inner = self.lock();
        if inner.workers.contains_key(name) {
            Arc::make_mut(&mut inner.workers).remove(name);
            self.recompute(&mut inner);
        }
    }

    /// The Node watch failed (it retries with backoff); the cache may now be stale.
    pub fn node_watch_failed(&self, error: String) {
        let mut w = self.lock_node_watch();
        w.healthy = false;
        w.errors += 1;
        w.last_error = Some(error);
        w.last_error_at = Some(Utc::now().trunc_subsecs(0));
        metrics::node_watch(false);
    }

    /// The Node watch delivered an event: the cache is current.
    pub fn node_watch_ok(&self) {
        let mut w = self.lock_node_watch();
        if !w.healthy {
            if w.errors > 0 {
                tracing::info!(errors = w.errors, "node watch recovered");
            }
            w.healthy = true;
            metrics::node_watch(true);
        }
    }

    /// The node controller's eviction of a pod was refused.
    pub fn record_refusal(&self, refusal: Refusal) {
        self.lock_refusals().record(refusal);
    }

    /// The refusal on record for a pod uid.
    pub fn refusal(&self, uid: &str) -> Option<Refusal> {
        self.lock_refusals().get(uid).cloned()
    }

    /// The pod was released, or is gone.
    pub fn forget_refusal(&self, uid: &str) {
        self.lock_refusals().forget(uid);
    }

    /// Refusals on record.
    pub fn refusals(&self) -> usize {
        self.lock_refusals().len()
    }

    fn lock_refusals(&self) -> MutexGuard<'_, Refusals> {
        self.refusals.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node_watch(&self) -> NodeWatchHealth {
        self.lock_node_watch().clone()
    }

    fn lock_node_watch(&self) -> MutexGuard<'_, NodeWatchHealth> {
        self.node_watch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adopts a mode read from the store (another replica's write, or the value at start).
    pub fn apply_stored_mode(&self, record: ModeRecord) {
        let mut inner = self.lock();
        if inner.mode == record {
            return;
        }
        let was = inner.protection.protecting;
        inner.mode = record.clone();
        self.recompute_quietly(&mut inner, true);
        tracing::info!(
            target: "audit",
            mode = %record.mode,
            changed_by = %record.changed_by,
            reason = %record.reason,
            protecting_before = was,
            protecting = inner.protection.protecting,
            "interception mode loaded from the store"
        );
    }

    /// Persists and applies a mode change; one audit line per change.
    pub async fn change_mode(&self, change: ModeChange) -> Result<InterceptionState, ControlError> {
        let _serial = self.mode_write.lock().await;
        let previous = self.mode();
        let record = ModeRecord {
            mode: change.mode,
            changed_by: change.caller.clone(),
            reason: change.reason.clone(),
            // whole seconds, as stored, so our own write read back by the watch is no change
            changed_at: Some(Utc::now().trunc_subsecs(0)),
        };
        if let Some(store) = &self.store {
            store.store(&record).await.map_err(|e| match e {
                crate::Error::ModeConflict { .. } => ControlError::Conflict(e.to_string()),
                other => ControlError::Unavailable(error_chain(&other)),
            })?;
        }
        // setting the mode it already has changes nothing and is not counted
        if previous.mode != change.mode {
            metrics::mode_changed(change.mode);
        }
        let (was, now) = {
            let mut inner = self.lock();
            let was = inner.protection.protecting;
            inner.mode = record;
            self.recompute_quietly(&mut inner, true);
            (was, inner.protection.protecting)
        };
        // one audit line per mode change, with what it did to protection
        tracing::warn!(
            target: "audit",
            caller = %change.caller,
            client = %ballast_runtime::peer::display(change.client),
            from = %previous.mode,
            to = %change.mode,
            reason = %change.reason,
            protecting_before = was,
            protecting = now,
            "interception mode changed"
        );
        Ok(self.status.borrow().clone())
    }

    fn recompute(&self, inner: &mut Inner) {
        self.recompute_quietly(inner, false);
    }

    /// `mode_change`: the caller writes the one audit line for it.
    fn recompute_quietly(&self, inner: &mut Inner, mode_change: bool) {
        let workers: Vec<&NodeState> = inner.workers.values().collect();
        let next = storm::evaluate(
            &self.cfg,
            inner.mode.mode,
            &workers,
            Utc::now(),
            &inner.protection,
        );
        if next.protecting != inner.protection.protecting && !mode_change {
            tracing::warn!(
                target: "audit",
                protecting = next.protecting,
                mode = %next.mode,
                reason = %next.reason,
                notready = ?next.notready,
                "pod protection turned {}",
                if next.protecting { "on" } else { "off" }
            );
        } else if next.reason != inner.protection.reason {
            tracing::info!(protecting = next.protecting, reason = %next.reason, "interception state changed");
        }
        metrics::protection(&next, inner.synced);
        inner.protection = next;

        let snapshot = Snapshot {
            synced: inner.synced,
            protection: inner.protection.clone(),
            workers: Arc::clone(&inner.workers),
        };
        self.snapshot.send_if_modified(|s| {
            if **s == snapshot {
                false
            } else {
                *s = Arc::new(snapshot);
                true
            }
        });
        let p = &inner.protection;
        let status = InterceptionState {
            mode: p.mode,
            protecting: p.protecting,
            reason: p.reason.clone(),
            since: p.since,
            threshold: u32::try_from(self.cfg.threshold).unwrap_or(u32::MAX),
            window: self.cfg.window,
            notready_nodes: p.notready.iter().cloned().collect(),
            protected_nodes: p.protected.iter().cloned().collect(),
            mode_changed_by: inner.mode.changed_by.clone(),
            mode_reason: inner.mode.reason.clone(),
            mode_changed_at: inner.mode.changed_at,
            synced: inner.synced,
        };
        self.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
        let nodes = NodeHealthSnapshot {
            synced: inner.synced,
            nodes: inner
                .workers
                .values()
                .map(|n| {
                    (
                        n.name.clone(),
                        ballast_control::NodeHealth {
                            name: n.name.clone(),
                            ready: n.ready,
                            since: n.since,
                            reason: n.reason.clone(),
                            zone: n.zone.clone().unwrap_or_default(),
                        },
                    )
                })
                .collect(),
        };
        self.nodes.send_if_modified(|s| {
            if *s == nodes {
                false
            } else {
                *s = nodes;
                true
            }
        });
    }
}

pub(crate) use ballast_runtime::chain as error_chain;

/// The control service's view of the guard.
impl ControlState for Guard {
    fn status(&self) -> watch::Receiver<InterceptionState> {
        self.status.subscribe()
    }

    fn node_health(&self) -> watch::Receiver<NodeHealthSnapshot> {
        self.nodes.subscribe()
    }

    async fn set_mode(&self, change: ModeChange) -> Result<InterceptionState, ControlError> {
        self.change_mode(change).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_control::Mode;

    fn down(name: &str) -> NodeState {
        NodeState {
            name: name.to_owned(),
            ready: false,
            since: Some(Utc::now()),
            reason: "NodeStatusUnknown".to_owned(),
            zone: None,
            out_of_service: false,
        }
    }

    #[test]
    fn node_watch_health_follows_errors_and_recovery_and_keeps_the_last_error() {
        let guard = Guard::new(StormConfig::default(), None);
        assert_eq!(guard.node_watch(), NodeWatchHealth::default());
        guard.node_watch_ok();
        assert!(guard.node_watch().healthy);

        guard.node_watch_failed("403 Forbidden: nodes is forbidden".to_owned());
        guard.node_watch_failed("connection refused".to_owned());
        let w = guard.node_watch();
        assert!(!w.healthy);
        assert_eq!(w.errors, 2);
        assert_eq!(w.last_error.as_deref(), Some("connection refused"));
        assert!(w.last_error_at.is_some());

        guard.node_watch_ok();
        let w = guard.node_watch();
        assert!(w.healthy);
        assert_eq!(w.errors, 2, "the count is since start");
        assert_eq!(w.last_error.as_deref(), Some("connection refused"));
    }

    #[tokio::test]
    async fn publishes_protection_to_webhook_and_control_views_on_node_and_mode_changes() {
        let guard = Guard::new(StormConfig::default(), None);
        assert!(!guard.snapshot().synced);
        let status = ControlState::status(guard.as_ref());
        assert!(!status.borrow().synced);

        guard.replace_workers(["a", "b", "c", "d"].map(down));
        let snap = guard.snapshot();
        assert!(snap.synced && snap.protection.protecting);
        assert_eq!(snap.protection.protected.len(), 4);
        assert!(status.borrow().protecting);
        assert_eq!(status.borrow().notready_nodes, ["a", "b", "c", "d"]);
        assert_eq!(
            status.borrow().reason,
            "4 of 4 worker nodes NotReady within 5m"
        );
        assert_eq!(
            ControlState::node_health(guard.as_ref())
                .borrow()
                .nodes
                .len(),
            4
        );

        let state = ControlState::set_mode(
            guard.as_ref(),
            ModeChange {
                mode: Mode::Disabled,
                reason: "let the drain through".to_owned(),
                caller: "alice".to_owned(),
                client: None,
            },
        )
        .await
        .unwrap();
        assert!(!state.protecting);
        assert_eq!(state.mode_changed_by, "alice");
        assert!(guard.snapshot().protection.protected.is_empty());

        guard.remove_worker("a");
        guard.remove_worker("b");
        assert_eq!(status.borrow().notready_nodes, ["c", "d"]);
    }
}
