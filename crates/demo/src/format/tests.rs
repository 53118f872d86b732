use std::time::Duration;

use chrono::TimeZone;

use super::*;

fn state() -> InterceptionState {
    InterceptionState {
        mode: Mode::Auto,
        protecting: true,
        reason: "3 of 5 worker nodes NotReady within 5m".into(),
        since: Some(Utc.with_ymd_and_hms(2026, 11, 23, 10, 40, 1).unwrap()),
        threshold: 3,
        window: Duration::from_secs(300),
        notready_nodes: vec!["node-1".into(), "node-2".into(), "node-3".into()],
        protected_nodes: vec!["node-1".into(), "node-2".into(), "node-3".into()],
        mode_changed_by: String::new(),
        mode_reason: String::new(),
        mode_changed_at: None,
        synced: true,
    }
}

#[test]
fn grpcurl_json_uses_proto_json_names_and_leaves_defaults_out() {
    let json = grpcurl_json(&state());
    assert_eq!(
        json,
        json!({
            "mode": "MODE_AUTO",
            "protecting": true,
            "reason": "3 of 5 worker nodes NotReady within 5m",
            "since": "2026-11-23T10:40:01Z",
            "threshold": 3,
            "window": "300s",
            "notreadyNodes": ["node-1", "node-2", "node-3"],
            "synced": true,
            "protectedNodes": ["node-1", "node-2", "node-3"]
        })
    );
}

#[test]
fn grpcurl_json_of_a_quiet_cluster_omits_protecting_and_nodes() {
    let mut s = state();
    s.protecting = false;
    s.notready_nodes.clear();
    s.protected_nodes.clear();
    s.mode = Mode::Disabled;
    s.mode_changed_by = "oncall".into();
    let json = grpcurl_json(&s);
    assert_eq!(json["mode"], "MODE_DISABLED");
    assert_eq!(json["modeChangedBy"], "oncall");
    assert!(json.get("protecting").is_none());
    assert!(json.get("notreadyNodes").is_none());
}

#[test]
fn podmanager_rows_line_up_under_the_header() {
    let header = podmanager_header();
    let line = podmanager_row("my-pod-manager", 5, 4, 3, "nginx:1.21");
    assert_eq!(header, "NAME             DESIRED   CURRENT   READY   IMAGE");
    assert_eq!(
        line,
        "my-pod-manager   5         4         3       nginx:1.21"
    );
    assert_eq!(header.find("READY"), line.find('3'));
}

const METRICS: &str = "# HELP eviction_intercepted_total refused\n\
# TYPE eviction_intercepted_total counter\n\
eviction_intercepted_total{operation=\"eviction\"} 1\n\
eviction_intercepted_total{operation=\"status\"} 7\n\
eviction_intercepted_total_other 100\n\
node_notready_count 0\n";

#[test]
fn metric_lines_pick_every_series_of_exactly_that_name() {
    assert_eq!(
        metric_lines(METRICS, "eviction_intercepted_total"),
        [
            "eviction_intercepted_total{operation=\"eviction\"} 1",
            "eviction_intercepted_total{operation=\"status\"} 7"
        ]
    );
    assert_eq!(metric_sum(METRICS, "eviction_intercepted_total"), 8.0);
    assert_eq!(
        metric_lines(METRICS, "node_notready_count"),
        ["node_notready_count 0"]
    );
    assert_eq!(metric_sum(METRICS, "eviction_allowed_total"), 0.0);
}

#[test]
fn offsets_and_indents_read_naturally() {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let t1 = t0 + chrono::Duration::seconds(2);
    assert_eq!(offset(t0, t1), "+2s");
    assert_eq!(indent("a\n\nb", 2), "  a\n\n  b");
}

#[test]
fn grpcurl_rendering_keeps_proto_field_order_and_indents_lists() {
    let text = render_json_object(&grpcurl_fields(&state()));
    assert_eq!(
        text,
        "{\n  \"mode\": \"MODE_AUTO\",\n  \"protecting\": true,\n  \"reason\": \"3 of 5 worker nodes NotReady within 5m\",\n  \"since\": \"2026-11-23T10:40:01Z\",\n  \"threshold\": 3,\n  \"window\": \"300s\",\n  \"notreadyNodes\": [\n    \"node-1\",\n    \"node-2\",\n    \"node-3\"\n  ],\n  \"synced\": true,\n  \"protectedNodes\": [\n    \"node-1\",\n    \"node-2\",\n    \"node-3\"\n  ]\n}"
    );
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed, grpcurl_json(&state()));
}

#[test]
fn get_status_response_wraps_the_state_under_status_as_grpcurl_prints_it() {
    let text = render_get_status_response(&state());
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(parsed["status"], grpcurl_json(&state()));
    assert!(
        text.starts_with("{\n  \"status\": {\n    \"mode\": "),
        "{text}"
    );
}
