use super::*;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn report(node: &str, free: u64, renewed: i64) -> Arc<Lease> {
    Arc::new(capacity::report(
        "ns",
        node,
        "agent",
        free,
        at(renewed),
        capacity::default_lifetime(),
    ))
}

fn shown(free_bytes: Option<u64>, renewed: i64) -> NodeReport {
    NodeReport {
        free_bytes,
        renewed_ms: Some(at(renewed).as_millisecond()),
    }
}

#[test]
fn a_fresh_report_shows_its_free_bytes_and_renewal() {
    let got = node_reports(&BTreeMap::new(), &[report("a", 1000, 0)], at(5));
    assert_eq!(got, BTreeMap::from([("a".into(), shown(Some(1000), 0))]));
}

#[test]
fn an_expired_report_shows_no_free_bytes_but_keeps_its_last_renewal() {
    let lifetime = i64::from(capacity::LEASE_SECONDS);
    let reports = [report("a", 1000, 0)];
    let got = node_reports(&BTreeMap::new(), &reports, at(lifetime + 1));
    assert_eq!(
        got["a"],
        shown(None, 0),
        "NaN on /metrics, not the last value"
    );
    let got = node_reports(&BTreeMap::new(), &reports, at(lifetime));
    assert_eq!(
        got["a"],
        shown(Some(1000), 0),
        "fresh to the end of its lifetime"
    );
}

#[test]
fn a_node_whose_report_is_gone_keeps_its_series_without_free_bytes() {
    let before = node_reports(&BTreeMap::new(), &[report("a", 1000, 0)], at(0));
    let got = node_reports(&before, &[report("b", 5, 0)], at(1));
    assert_eq!(
        got,
        BTreeMap::from([
            ("a".into(), shown(None, 0)),
            ("b".into(), shown(Some(5), 0)),
        ])
    );
}

#[test]
fn a_report_without_a_node_or_readable_bytes_shows_no_free_bytes() {
    let mut nameless = (*report("a", 1, 0)).clone();
    nameless.metadata.annotations = None;
    let mut unreadable = (*report("b", 1, 0)).clone();
    unreadable
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(capacity::ANN_FREE_BYTES.into(), "lots".into());
    let got = node_reports(
        &BTreeMap::new(),
        &[Arc::new(nameless), Arc::new(unreadable)],
        at(0),
    );
    assert_eq!(got, BTreeMap::from([("b".into(), shown(None, 0))]));
}

#[test]
fn the_gauges_show_nan_once_a_report_expires() {
    let handle = ballast_runtime::metrics::prometheus();
    describe();
    let node = "metrics-test-node";
    let mut gauges = FreeSpace::default();
    gauges.update(&[report(node, 4096, 0)], at(1));
    let text = handle.render();
    let value = |text: &str, name| ballast_runtime::metrics::sample(text, name, &[("node", node)]);
    assert_eq!(value(&text, HOSTPATH_FREE_BYTES), Some(4096.0), "{text}");
    assert_eq!(
        value(&text, HOSTPATH_REPORT_RENEWED),
        Some(at(0).as_second() as f64)
    );
    assert!(text.contains(&format!("# HELP {HOSTPATH_FREE_BYTES} ")));
    gauges.update(&[], at(2));
    let text = handle.render();
    assert!(
        value(&text, HOSTPATH_FREE_BYTES).is_some_and(f64::is_nan),
        "{text}"
    );
    assert_eq!(
        value(&text, HOSTPATH_REPORT_RENEWED),
        Some(at(0).as_second() as f64)
    );
}
