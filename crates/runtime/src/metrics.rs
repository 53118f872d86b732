//! The process-wide Prometheus recorder.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) for every `*_seconds` histogram: admission calls are expected in
/// milliseconds, reconciles and provisioning in seconds, time-to-bind in minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first call. Every service running in one
/// process (the demo, the end-to-end tests) shares it, so tests assert counter deltas.
/// Call it at the start of a service's `run`, before anything is recorded: until a recorder is
/// installed, `metrics::counter!` and friends record nothing.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("the bucket list is a non-empty constant");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder was installed first; the handle still renders
            // what this recorder sees, which is then nothing: say so once.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            describe_runtime();
            handle
        })
        .clone()
}

/// The source revision the binary was built from: `BALLAST_REVISION` at build time (an image
/// build passes the commit), `unknown` otherwise.
pub const REVISION: &str = match option_env!("BALLAST_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// Sets `<service>_build_info{version, revision} 1`, the usual gauge for "what is running
/// where" (join it onto other series with `* on (pod) group_left (version)`). `service` is
/// the service's name (`eviction-guard`), made metric-safe. Call once at start-up.
pub fn build_info(service: &str, version: &'static str) {
    prometheus();
    let name = format!("{}_build_info", service.replace('-', "_"));
    metrics::describe_gauge!(
        name.clone(),
        "Always 1; its labels say which version and source revision is running."
    );
    metrics::gauge!(name, "version" => version, "revision" => REVISION).set(1.0);
}

/// HELP texts of the families the runtime itself records (admission).
fn describe_runtime() {
    metrics::describe_histogram!(
        "admission_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer one AdmissionReview, by webhook and operation."
    );
    metrics::describe_counter!(
        "admission_malformed_total",
        "Requests to an admission webhook that were not a readable AdmissionReview, by webhook and error."
    );
    metrics::describe_gauge!(
        "leader_election_master_status",
        "1 while this replica leads the election of the Lease `name` (namespace/name), else 0."
    );
}

/// Reads one sample from Prometheus text output: the value of `name` whose label set contains
/// every `labels` pair. For tests and the demo, which check what a user would see on /metrics.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all_match = labels.iter().all(|(k, v)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            });
            if all_match { value.parse().ok() } else { None }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_finds_labelled_and_plain_series() {
        let text = "# TYPE a counter\na{op=\"delete\",x=\"1\"} 3\na{op=\"evict\"} 5\nb 7\n";
        assert_eq!(sample(text, "a", &[("op", "evict")]), Some(5.0));
        assert_eq!(sample(text, "a", &[("op", "delete")]), Some(3.0));
        assert_eq!(sample(text, "b", &[]), Some(7.0));
        assert_eq!(sample(text, "a", &[("op", "create")]), None);
        assert_eq!(sample(text, "c", &[]), None);
    }

    #[test]
    fn recorder_renders_recorded_counters_and_histogram_buckets() {
        let handle = prometheus();
        metrics::counter!("runtime_test_counter_total", "case" => "render").increment(2);
        metrics::histogram!("runtime_test_latency_seconds").record(0.003);
        let text = handle.render();
        assert_eq!(
            sample(&text, "runtime_test_counter_total", &[("case", "render")]),
            Some(2.0)
        );
        assert_eq!(
            sample(
                &text,
                "runtime_test_latency_seconds_bucket",
                &[("le", "0.005")]
            ),
            Some(1.0),
            "histograms are rendered with buckets, not as summaries:\n{text}"
        );
    }

    #[test]
    fn build_info_names_the_service_version_and_revision() {
        build_info("pvc-timing", "1.2.3");
        let text = prometheus().render();
        assert_eq!(
            sample(
                &text,
                "pvc_timing_build_info",
                &[("version", "1.2.3"), ("revision", REVISION)]
            ),
            Some(1.0),
            "{text}"
        );
    }
}
