//! Text output: the seed's tables for `inspect` and `ls`, with `-o wide` columns.
//!
//! The seed (a Go tabwriter) pads the DESIRED POD column to at least 31 characters and 6 past
//! its longest name, PHASE and STATUS to 3 past their longest value, and NAME in `ls` to at least
//! 46; the last column is never padded and lines carry no trailing blanks.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::Timestamp;

use crate::phases::{Inspection, Took};
use crate::timing::{Bar, ClaimTiming, ClassFigures, Distribution};

/// Shown where a value is absent, as kubectl's custom columns do.
const NONE: &str = "<none>";
/// Node column of a pod the scheduler has not placed yet.
const UNSCHEDULED: &str = "<unscheduled>";

/// One column: at least `min` wide, and `pad` blanks past its longest cell.
#[derive(Clone, Copy)]
struct Column {
    min: usize,
    pad: usize,
}

const fn col(min: usize, pad: usize) -> Column {
    Column { min, pad }
}

fn table(columns: &[Column], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.min).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let pad = columns.get(i).map_or(3, |c| c.pad);
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count() + pad);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let width = widths.get(i).copied().unwrap_or(0);
                let used = cell.chars().count();
                line.extend(std::iter::repeat_n(' ', width.saturating_sub(used).max(1)));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// `inspect` as a table: desired pods and nodes, then the four phases. A DURATION column
/// appears when the claim carries a `pvc-timing` annotation, and always with `wide`.
pub fn inspection(report: &Inspection, wide: bool) -> String {
    let mut pod_rows = Vec::new();
    if wide {
        pod_rows.push(row([
            "DESIRED POD",
            "DESIRED NODE",
            "READY",
            "STATUS",
            "MOUNT",
        ]));
    } else {
        pod_rows.push(row(["DESIRED POD", "DESIRED NODE"]));
    }
    for pod in &report.pods {
        let node = pod.node.as_deref().unwrap_or(UNSCHEDULED);
        if wide {
            pod_rows.push(row([
                &pod.name,
                node,
                &pod.ready,
                &pod.pod_phase,
                pod.mount.as_str(),
            ]));
        } else {
            pod_rows.push(row([&pod.name, node]));
        }
    }
    if report.pods.is_empty() {
        pod_rows.push(row([NONE]));
    }
    let pod_columns = [col(31, 6), col(0, 3), col(0, 3), col(0, 3), col(0, 3)];

    let timed = wide || report.phases.iter().any(|p| p.took.is_some());
    let mut phase_rows = Vec::new();
    if timed {
        phase_rows.push(row(["PHASE", "STATUS", "DURATION", "DETAIL"]));
    } else {
        phase_rows.push(row(["PHASE", "STATUS", "DETAIL"]));
    }
    for p in &report.phases {
        let detail = if wide { &p.evidence } else { &p.detail };
        if timed {
            let took = p.took.map_or_else(|| "-".to_owned(), duration);
            phase_rows.push(row([p.phase.as_str(), p.status.as_str(), &took, detail]));
        } else {
            phase_rows.push(row([p.phase.as_str(), p.status.as_str(), detail]));
        }
    }
    let phase_columns = [col(0, 3); 4];
    let mut out = table(&pod_columns, &pod_rows);
    out.push_str(&table(&phase_columns, &phase_rows));
    out
}

fn duration(took: Took) -> String {
    let text = human_duration(took.seconds);
    if took.finished {
        text
    } else {
        format!("{text} so far")
    }
}

/// kubectl's short duration style: `45s`, `3m12s`, `25m`, `4h10m`, `3d5h`, `200d`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// One line of `ls`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRow {
    pub namespace: String,
    pub name: String,
    pub volume: Option<String>,
    pub status: String,
    pub storage_class: Option<String>,
    pub capacity: Option<String>,
    pub age_seconds: Option<i64>,
}

impl ClaimRow {
    pub fn of(claim: &PersistentVolumeClaim, now: Timestamp) -> ClaimRow {
        let spec = claim.spec.as_ref();
        let status = claim.status.as_ref();
        ClaimRow {
            namespace: claim.metadata.namespace.clone().unwrap_or_default(),
            name: claim.metadata.name.clone().unwrap_or_default(),
            volume: spec
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty()),
            status: status
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".to_owned()),
            storage_class: spec
                .and_then(|s| s.storage_class_name.clone())
                .filter(|c| !c.is_empty()),
            capacity: status
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.clone()),
            age_seconds: claim
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| now.as_second() - t.0.as_second()),
        }
    }

    /// A claim the pod names but that does not exist.
    pub fn missing(namespace: &str, name: &str) -> ClaimRow {
        ClaimRow {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            volume: None,
            status: "Missing".to_owned(),
            storage_class: None,
            capacity: None,
            age_seconds: None,
        }
    }
}

/// `ls` as a table: NAME / VOLUME, plus STATUS, CLASS, CAPACITY, AGE with `wide`, and a
/// leading NAMESPACE column across all namespaces.
pub fn claims(rows: &[ClaimRow], wide: bool, all_namespaces: bool) -> String {
    let mut header = Vec::new();
    let mut columns = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE");
        columns.push(col(0, 3));
    }
    header.extend(["NAME", "VOLUME"]);
    columns.extend([col(46, 3), col(0, 3)]);
    if wide {
        header.extend(["STATUS", "CLASS", "CAPACITY", "AGE"]);
        columns.extend([col(0, 3); 4]);
    }
    let mut lines = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
    for r in rows {
        let mut line = Vec::new();
        if all_namespaces {
            line.push(r.namespace.clone());
        }
        line.push(r.name.clone());
        line.push(r.volume.clone().unwrap_or_else(|| NONE.to_owned()));
        if wide {
            line.push(r.status.clone());
            line.push(r.storage_class.clone().unwrap_or_else(|| NONE.to_owned()));
            line.push(r.capacity.clone().unwrap_or_default());
            line.push(
                r.age_seconds
                    .map_or_else(|| NONE.to_owned(), human_duration),
            );
        }
        lines.push(line);
    }
    table(&columns, &lines)
}

/// Cells of a claim's timeline bar: its whole life, creation to now.
const TIMELINE_WIDTH: usize = 30;
/// Cells of the longest histogram bar.
const BAR_WIDTH: usize = 40;
/// What a phase pvc-timing did not see begin shows instead of a time.
const NOT_OBSERVED: &str = "not observed";

fn class_name(class: Option<&str>) -> &str {
    class.unwrap_or(NONE)
}

/// The cells `[from, to)` seconds after creation take in a bar of `width` cells spanning `age`.
fn span_bar(from: i64, to: i64, age: i64, width: usize) -> String {
    let age = age.max(1) as f64;
    let cell = |s: i64| ((s.clamp(0, age as i64) as f64) * width as f64 / age) as usize;
    let start = cell(from).min(width.saturating_sub(1));
    let end = (((to.clamp(0, age as i64) as f64) * width as f64 / age).ceil() as usize)
        .clamp(start + 1, width);
    let mut bar = " ".repeat(start);
    bar.push_str(&"█".repeat(end - start));
    bar.push_str(&" ".repeat(width - end));
    format!("|{bar}|")
}

/// `timing NAME`: a line saying where the claim stands, then its phases in order with when
/// each began, how long after creation, how long it lasted, and a bar to scale.
pub fn claim_timing(t: &ClaimTiming) -> String {
    let class = class_name(t.storage_class.as_deref());
    let verdict = match (t.bound, t.seconds_to_bound) {
        (_, Some(s)) => format!("Bound {} after creation", human_duration(s)),
        ("notObserved", _) => {
            format!("time to Bound {NOT_OBSERVED}: bound while pvc-timing was not watching")
        }
        _ => format!(
            "not Bound yet, {} since creation",
            human_duration(t.age_seconds)
        ),
    };
    let mut out = format!(
        "persistentvolumeclaim {}/{} (class {class}) is {} now; {verdict}\n",
        t.namespace, t.name, t.phase
    );
    let mut rows = vec![row([
        "PHASE",
        "ENTERED",
        "AFTER CREATION",
        "LASTED",
        "TIMELINE",
    ])];
    for r in &t.timeline {
        let entered = match (&r.entered, &r.first_seen) {
            (Some(at), _) => at.clone(),
            (None, Some(seen)) => format!("{NOT_OBSERVED} (first seen {seen})"),
            (None, None) => NOT_OBSERVED.to_owned(),
        };
        let after = r
            .after_creation_seconds
            .map_or_else(|| "-".to_owned(), human_duration);
        let lasted = match r.lasted_seconds {
            Some(s) if r.current => format!("{} so far", human_duration(s)),
            Some(s) => human_duration(s),
            None if r.current => "-".to_owned(),
            None => NOT_OBSERVED.to_owned(),
        };
        let bar = match (r.after_creation_seconds, r.lasted_seconds) {
            (Some(from), Some(lasted)) => {
                span_bar(from, from + lasted, t.age_seconds, TIMELINE_WIDTH)
            }
            // when it began or ended was not seen: nothing to draw to scale
            _ => String::new(),
        };
        rows.push(vec![r.phase.clone(), entered, after, lasted, bar]);
    }
    out.push_str(&table(&[col(0, 3); 5], &rows));
    out
}

/// A bucket bound as Prometheus users write it: `5s`, `2m`, `1h`.
fn bound_label(seconds: i64) -> String {
    match seconds {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `≤ 5s`, `≤ 1m`, `> 1h`: the label of a histogram bar, after the one before it.
fn bar_label(bar: &Bar, previous: Option<i64>) -> String {
    match (bar.le_seconds, previous) {
        (Some(le), _) => format!("≤ {}", bound_label(le)),
        (None, Some(last)) => format!("> {}", bound_label(last)),
        (None, None) => "all".to_owned(),
    }
}

fn class_histogram(c: &ClassFigures) -> String {
    let mut out = format!(
        "{}: {} claim{} measured\n",
        class_name(c.storage_class.as_deref()),
        c.measured,
        if c.measured == 1 { "" } else { "s" }
    );
    let busy: Vec<usize> = (0..c.bars.len()).filter(|i| c.bars[*i].count > 0).collect();
    if let (Some(first), Some(last)) = (busy.first(), busy.last()) {
        let most = c.bars.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        for i in *first..=*last {
            let bar = &c.bars[i];
            let previous = i.checked_sub(1).and_then(|p| c.bars[p].le_seconds);
            let cells = match bar.count {
                0 => 0,
                n => (n * BAR_WIDTH).div_ceil(most).max(1),
            };
            let line = format!(
                "  {:<6} {:<BAR_WIDTH$} {}",
                bar_label(bar, previous),
                "█".repeat(cells),
                bar.count
            );
            out.push_str(&line);
            out.push('\n');
        }
    }
    let mut also = Vec::new();
    if c.pending > 0 {
        also.push(format!("{} not Bound yet", c.pending));
    }
    if c.not_observed > 0 {
        also.push(format!(
            "{} bound while pvc-timing was not watching ({NOT_OBSERVED}, not counted)",
            c.not_observed
        ));
    }
    if c.without_timing > 0 {
        also.push(format!(
            "{} without a pvc-timing annotation",
            c.without_timing
        ));
    }
    if !also.is_empty() {
        out.push_str(&format!("  also: {}\n", also.join(", ")));
    }
    out
}

/// `timing` without a name: percentiles per storage class, then each class's histogram.
pub fn distribution(d: &Distribution) -> String {
    let place = d.namespace.as_deref().map_or_else(
        || "all namespaces".to_owned(),
        |ns| format!("namespace {ns}"),
    );
    if d.claims.is_empty() {
        return format!("No claims in {place}.\n");
    }
    let mut out =
        format!("Time from creation to Bound, {place} (from the pvc-timing annotations)\n");
    let mut rows = vec![row([
        "CLASS", "CLAIMS", "MEASURED", "P50", "P90", "P99", "MAX",
    ])];
    let secs = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), human_duration);
    for c in &d.classes {
        rows.push(vec![
            class_name(c.storage_class.as_deref()).to_owned(),
            c.claims.to_string(),
            c.measured.to_string(),
            secs(c.p50_seconds),
            secs(c.p90_seconds),
            secs(c.p99_seconds),
            secs(c.max_seconds),
        ]);
    }
    out.push_str(&table(&[col(0, 3); 7], &rows));
    for c in &d.classes {
        out.push('\n');
        out.push_str(&class_histogram(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_follows_kubectl_steps() {
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(25 * 60), "25m");
        assert_eq!(human_duration(4 * 3600 + 600), "4h10m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 5 * 3600), "3d5h");
        assert_eq!(human_duration(200 * 86400), "200d");
        assert_eq!(human_duration(-5), "0s");
    }

    #[test]
    fn table_pads_to_minimum_and_trims_trailing_blanks() {
        let out = table(
            &[col(10, 3), col(0, 3)],
            &[row(["A", "B", ""]), row(["longer-than-ten", "x", "tail"])],
        );
        assert_eq!(out, "A                 B\nlonger-than-ten   x   tail\n");
    }
}
