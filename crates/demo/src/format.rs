//! Pure text for the tour: tables, the grpcurl-style JSON, metric lines. No I/O here.

use ballast_control::{InterceptionState, Mode};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// Column widths of the `kubectl get podmanager`-like table (kubectl pads to the widest cell
/// plus three spaces; the sample's name is the widest here).
const PM_WIDTHS: [usize; 4] = [17, 10, 10, 8];

fn row(cells: &[&str], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        match widths.get(i) {
            Some(w) if i + 1 < cells.len() => line.push_str(&format!("{cell:<w$}")),
            _ => line.push_str(cell),
        }
    }
    line.trim_end().to_owned()
}

/// The header of [`podmanager_row`], like `kubectl get podmanager`'s printer columns.
pub fn podmanager_header() -> String {
    row(
        &["NAME", "DESIRED", "CURRENT", "READY", "IMAGE"],
        &PM_WIDTHS,
    )
}

/// One `kubectl get podmanager` line.
pub fn podmanager_row(name: &str, desired: i32, current: i32, ready: i32, image: &str) -> String {
    row(
        &[
            name,
            &desired.to_string(),
            &current.to_string(),
            &ready.to_string(),
            image,
        ],
        &PM_WIDTHS,
    )
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Auto => "MODE_AUTO",
        Mode::Disabled => "MODE_DISABLED",
        Mode::Forced => "MODE_FORCED",
    }
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// The `InterceptionStatus` message as grpcurl prints it: protobuf JSON (lowerCamelCase fields
/// in proto order, enum names, RFC 3339 timestamps, durations in seconds) with default values
/// left out. Pairs in field order; [`render_json_object`] prints them.
pub fn grpcurl_fields(state: &InterceptionState) -> Vec<(&'static str, Value)> {
    let mut m = Vec::new();
    m.push(("mode", json!(mode_name(state.mode))));
    if state.protecting {
        m.push(("protecting", json!(true)));
    }
    if !state.reason.is_empty() {
        m.push(("reason", json!(state.reason)));
    }
    if let Some(since) = state.since {
        m.push(("since", json!(timestamp(since))));
    }
    if state.threshold != 0 {
        m.push(("threshold", json!(state.threshold)));
    }
    if !state.window.is_zero() {
        m.push(("window", json!(duration(state.window))));
    }
    if !state.notready_nodes.is_empty() {
        m.push(("notreadyNodes", json!(state.notready_nodes)));
    }
    if !state.mode_changed_by.is_empty() {
        m.push(("modeChangedBy", json!(state.mode_changed_by)));
    }
    if !state.mode_reason.is_empty() {
        m.push(("modeReason", json!(state.mode_reason)));
    }
    if let Some(at) = state.mode_changed_at {
        m.push(("modeChangedAt", json!(timestamp(at))));
    }
    if state.synced {
        m.push(("synced", json!(true)));
    }
    if !state.protected_nodes.is_empty() {
        m.push(("protectedNodes", json!(state.protected_nodes)));
    }
    m
}

/// The same fields as one JSON object (key order is not kept).
pub fn grpcurl_json(state: &InterceptionState) -> Value {
    Value::Object(
        grpcurl_fields(state)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<Map<String, Value>>(),
    )
}

/// An object with its keys in the given order, two-space indent, as grpcurl prints messages.
pub fn render_json_object(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{\n");
    for (i, (key, value)) in fields.iter().enumerate() {
        let rendered = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
        let rendered = rendered.replace('\n', "\n  ");
        let comma = if i + 1 < fields.len() { "," } else { "" };
        out.push_str(&format!("  {}: {rendered}{comma}\n", Value::from(*key)));
    }
    out.push('}');
    out
}

/// A GetStatus response as grpcurl prints it: the state under `status`, fields in proto order.
pub fn render_get_status_response(state: &InterceptionState) -> String {
    let status = render_json_object(&grpcurl_fields(state)).replace('\n', "\n  ");
    format!("{{\n  \"status\": {status}\n}}")
}

fn series_name(line: &str) -> Option<&str> {
    if line.starts_with('#') {
        return None;
    }
    let end = line.find(['{', ' '])?;
    Some(&line[..end])
}

/// The sample lines of metric `name` in a Prometheus text exposition, in order.
pub fn metric_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| series_name(line) == Some(name))
        .collect()
}

/// The sum of every series of metric `name` (0 when absent).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    metric_lines(text, name)
        .iter()
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Whole seconds between two instants (the annotation keeps whole seconds), as `+2s`.
pub fn offset(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    format!("+{}s", (to - from).num_seconds())
}

/// `text` with every line indented by `by` spaces (blank lines stay blank).
pub fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
