//! The audit trail of refusals, off the review's path. During a storm the node controller sends
//! the same refused status update for every protected pod every few seconds, and a drain retries
//! its evictions: one log line per refusal would be thousands a second. So the first refusal of
//! a series — same pod, same operation, same node, same object version — is written in full,
//! the repeats are counted and summarised (count, first and last time) once per
//! [`FLUSH_EVERY`], as Kubernetes folds repeated Events into a series. A review only updates a
//! map and, for a first refusal, hands a line to the writer task through a bounded queue
//! (dropped and counted when full): it never waits for a write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often repeats are summarised.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Lines waiting for the writer at most: a few seconds of a burst of first refusals.
const QUEUE: usize = 4096;
/// Series tracked at most: a storm over a large cluster's pods, with room to spare. Past it,
/// repeats of new series are counted together.
const MAX_SERIES: usize = 100_000;

/// One refused request, as the webhook saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub user: String,
    pub operation: &'static str,
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub code: u16,
    pub dry_run: bool,
    /// The pod's resourceVersion as the request carried it (empty when it carried none): a
    /// changed object starts a new series.
    pub version: String,
    /// Why pods are protected, in the guard's words.
    pub reason: String,
}

/// What the writer logs.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// The first refusal of a series, in full.
    First(Refused),
    /// Repeats of a series since the last summary.
    Repeated {
        refused: Refused,
        count: u64,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
    },
    /// Lines the queue could not take, and repeats past [`MAX_SERIES`].
    Lost { dropped: u64, untracked: u64 },
}

type Key = (String, String, &'static str, String);

#[derive(Debug)]
struct Series {
    latest: Refused,
    repeats: u64,
    first_repeat: Option<DateTime<Utc>>,
    last: DateTime<Utc>,
    /// Summaries since the last refusal: an idle series is forgotten after one.
    idle: u32,
}

/// The refusal audit: [`Audit::refused`] on the review's path, [`Audit::flush`] and the writer
/// task ([`run`]) off it.
pub struct Audit {
    series: Mutex<HashMap<Key, Series>>,
    queue: mpsc::Sender<Line>,
    dropped: AtomicU64,
    untracked: AtomicU64,
}

impl Audit {
    /// The audit and the receiving end of its queue (for [`run`], or a test).
    pub fn new() -> (Audit, mpsc::Receiver<Line>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let audit = Audit {
            series: Mutex::new(HashMap::new()),
            queue,
            dropped: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        };
        (audit, rx)
    }

    /// Records a refusal: a first one is queued for the writer, a repeat counted.
    pub fn refused(&self, r: Refused, at: DateTime<Utc>) {
        let key = (
            r.namespace.clone(),
            r.name.clone(),
            r.operation,
            r.node.clone(),
        );
        let first = {
            let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            let full = series.len() >= MAX_SERIES;
            match series.get_mut(&key) {
                Some(s) if s.latest.version == r.version => {
                    s.repeats += 1;
                    s.first_repeat.get_or_insert(at);
                    s.last = at;
                    s.idle = 0;
                    s.latest = r;
                    return;
                }
                Some(s) => {
                    // the object changed: a new series
                    s.latest = r.clone();
                    s.last = at;
                    s.idle = 0;
                    r
                }
                None if full => {
                    self.untracked.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                None => {
                    series.insert(
                        key,
                        Series {
                            latest: r.clone(),
                            repeats: 0,
                            first_repeat: None,
                            last: at,
                            idle: 0,
                        },
                    );
                    r
                }
            }
        };
        if self.queue.try_send(Line::First(first)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The summaries due now: one per series with repeats since the last one, and what was
    /// lost; series idle since the previous flush are forgotten.
    pub fn flush(&self) -> Vec<Line> {
        let mut out = Vec::new();
        {
            let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
            series.retain(|_, s| {
                if s.repeats > 0 {
                    out.push(Line::Repeated {
                        refused: s.latest.clone(),
                        count: s.repeats,
                        first: s.first_repeat.unwrap_or(s.last),
                        last: s.last,
                    });
                    s.repeats = 0;
                    s.first_repeat = None;
                    true
                } else {
                    s.idle += 1;
                    s.idle < 2
                }
            });
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let untracked = self.untracked.swap(0, Ordering::Relaxed);
        if dropped + untracked > 0 {
            out.push(Line::Lost { dropped, untracked });
        }
        out
    }
}

/// Writes the audit's lines, and its summaries every [`FLUSH_EVERY`], until `shutdown` (then
/// the last summaries).
pub async fn run(
    audit: std::sync::Arc<Audit>,
    mut lines: mpsc::Receiver<Line>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            line = lines.recv() => match line {
                Some(line) => write(&line),
                None => break,
            },
            _ = tick.tick() => audit.flush().iter().for_each(write),
        }
    }
    while let Ok(line) = lines.try_recv() {
        write(&line);
    }
    audit.flush().iter().for_each(write);
}

fn write(line: &Line) {
    match line {
        Line::First(r) => tracing::warn!(
            target: "audit",
            user = %r.user,
            operation = r.operation,
            namespace = %r.namespace,
            name = %r.name,
            node = %r.node,
            code = r.code,
            dry_run = r.dry_run,
            reason = %r.reason,
            "refused {} of pod {}/{}",
            r.operation,
            r.namespace,
            r.name
        ),
        Line::Repeated {
            refused: r,
            count,
            first,
            last,
        } => tracing::warn!(
            target: "audit",
            user = %r.user,
            operation = r.operation,
            namespace = %r.namespace,
            name = %r.name,
            node = %r.node,
            code = r.code,
            count,
            first = %first.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            last = %last.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            reason = %r.reason,
            "refused {} of pod {}/{} {count} more time{}",
            r.operation,
            r.namespace,
            r.name,
            if *count == 1 { "" } else { "s" }
        ),
        Line::Lost { dropped, untracked } => tracing::warn!(
            target: "audit",
            dropped,
            untracked,
            "audit lines lost under load: {dropped} first refusals not written, {untracked} \
             refusals not counted in a series"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(name: &str, version: &str) -> Refused {
        Refused {
            user: "system:serviceaccount:kube-system:node-controller".into(),
            operation: "status",
            namespace: "shop".into(),
            name: name.into(),
            node: "node-1".into(),
            code: 403,
            dry_run: false,
            version: version.into(),
            reason: "3 of 5 worker nodes NotReady within 5m".into(),
        }
    }

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + i64::from(s), 0).unwrap()
    }

    #[test]
    fn ten_thousand_identical_refusals_write_one_line_and_one_summary() {
        let (audit, mut rx) = Audit::new();
        for i in 0..10_000 {
            audit.refused(refusal("web-1", "41"), at(i / 1000));
        }
        let mut written = Vec::new();
        while let Ok(l) = rx.try_recv() {
            written.push(l);
        }
        assert_eq!(written, vec![Line::First(refusal("web-1", "41"))]);
        let summary = audit.flush();
        assert_eq!(
            summary,
            vec![Line::Repeated {
                refused: refusal("web-1", "41"),
                count: 9_999,
                first: at(0),
                last: at(9),
            }]
        );
        assert!(audit.flush().is_empty(), "nothing new: nothing to say");
    }

    #[test]
    fn a_changed_object_or_another_pod_starts_its_own_series() {
        let (audit, mut rx) = Audit::new();
        audit.refused(refusal("web-1", "41"), at(0));
        audit.refused(refusal("web-1", "42"), at(1));
        audit.refused(refusal("web-2", "7"), at(1));
        let mut firsts = 0;
        while let Ok(Line::First(_)) = rx.try_recv() {
            firsts += 1;
        }
        assert_eq!(firsts, 3);
    }

    #[test]
    fn idle_series_are_forgotten_and_a_full_queue_drops_lines_without_blocking() {
        let (audit, mut rx) = Audit::new();
        for i in 0..(QUEUE + 10) {
            audit.refused(refusal(&format!("web-{i}"), "1"), at(0));
        }
        let lost = audit.flush();
        assert_eq!(
            lost,
            vec![Line::Lost {
                dropped: 10,
                untracked: 0
            }]
        );
        assert_eq!(audit.series.lock().unwrap().len(), QUEUE + 10);
        audit.flush();
        assert!(
            audit.series.lock().unwrap().is_empty(),
            "idle for two summaries"
        );
        assert!(matches!(rx.try_recv(), Ok(Line::First(_))));
    }
}
