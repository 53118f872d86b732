use super::*;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn taint(key: &str) -> Value {
    json!({"key": key, "effect": "NoExecute"})
}

fn tol(key: &str, secs: Option<i64>) -> Value {
    let mut t = json!({"key": key, "operator": "Exists", "effect": "NoExecute"});
    if let Some(s) = secs {
        t["tolerationSeconds"] = json!(s);
    }
    t
}

fn pod(key: &str, node: &str, tolerations: Vec<Value>) -> PodView {
    PodView {
        key: key.into(),
        node: node.into(),
        tolerations,
    }
}

fn node(name: &str, taints: &[&str]) -> (String, Vec<Value>) {
    (name.into(), taints.iter().map(|k| taint(k)).collect())
}

#[test]
fn the_delay_is_now_for_an_untolerated_taint_the_shortest_seconds_or_never() {
    let t = [taint(UNREACHABLE)];
    assert_eq!(eviction_delay(&t, &[]), Delay::Now);
    assert_eq!(
        eviction_delay(&t, &[tol(UNREACHABLE, Some(300)), tol("", Some(30))]),
        Delay::After(Duration::from_secs(300)),
        "the first matching toleration is the one used"
    );
    assert_eq!(
        eviction_delay(
            &[taint(UNREACHABLE), taint("other")],
            &[tol(UNREACHABLE, Some(300)), tol("other", Some(20))]
        ),
        Delay::After(Duration::from_secs(20))
    );
    assert_eq!(eviction_delay(&t, &[tol(UNREACHABLE, None)]), Delay::Never);
    assert_eq!(eviction_delay(&t, &[tol(UNREACHABLE, Some(0))]), Delay::Now);
    assert_eq!(
        eviction_delay(
            &[taint(UNREACHABLE), taint("other")],
            &[tol(UNREACHABLE, None)]
        ),
        Delay::Now,
        "one untolerated taint is enough"
    );
}

#[test]
fn a_pod_on_a_tainted_node_is_due_after_its_toleration_and_handed_out_once() {
    let t0 = Instant::now();
    let mut c = TaintEviction::default();
    let pods = [pod("ns/a", "n1", vec![tol(UNREACHABLE, Some(2))])];
    c.observe(&[node("n1", &[])], &pods, t0);
    assert_eq!(c.work("ns/a"), None, "no taint, no work");
    let t1 = t0 + Duration::from_secs(1);
    c.observe(&[node("n1", &[UNREACHABLE])], &pods, t1);
    assert_eq!(c.take_due(t1 + Duration::from_millis(1999)), vec![]);
    let t3 = t1 + Duration::from_secs(2);
    assert_eq!(c.take_due(t3), vec![("ns/a".to_string(), t1)]);
    assert_eq!(c.take_due(t3), vec![], "handed out once");
    // nothing changes: the pod is not handed out again, even after its attempts failed
    c.finished("ns/a", t1);
    c.observe(
        &[node("n1", &[UNREACHABLE])],
        &pods,
        t3 + Duration::from_secs(60),
    );
    assert_eq!(c.take_due(t3 + Duration::from_secs(60)), vec![]);
}

#[test]
fn only_a_change_of_the_node_no_execute_taints_or_the_pod_tolerations_restarts_a_given_up_pod() {
    let t0 = Instant::now();
    let mut c = TaintEviction::default();
    let pods = [pod("ns/a", "n1", vec![])];
    c.observe(&[node("n1", &[UNREACHABLE])], &pods, t0);
    assert_eq!(c.take_due(t0), vec![("ns/a".to_string(), t0)]);
    c.finished("ns/a", t0);
    // a NoSchedule taint is not a NoExecute change
    let mut n = node("n1", &[UNREACHABLE]);
    let with_no_schedule = json!({"spec": {"taints": [taint(UNREACHABLE),
        {"key": UNREACHABLE, "effect": "NoSchedule"}]}});
    assert_eq!(no_execute_taints(&with_no_schedule), n.1);
    let t1 = t0 + Duration::from_secs(1);
    c.observe(&[n.clone()], &pods, t1);
    assert_eq!(c.take_due(t1), vec![]);
    // a NoExecute taint added: every pod on the node is looked at again
    n.1.push(taint("example.com/maintenance"));
    c.observe(&[n.clone()], &pods, t1);
    assert_eq!(c.take_due(t1), vec![("ns/a".to_string(), t1)]);
    c.finished("ns/a", t1);
    // the pod's tolerations change: looked at again
    let t2 = t1 + Duration::from_secs(1);
    let changed = [pod("ns/a", "n1", vec![tol("other", None)])];
    c.observe(&[n], &changed, t2);
    assert_eq!(c.take_due(t2), vec![("ns/a".to_string(), t2)]);
}

#[test]
fn taints_removed_or_a_forever_toleration_cancel_scheduled_work_and_deleted_pods_are_forgotten() {
    let t0 = Instant::now();
    let mut c = TaintEviction::default();
    let pods = [
        pod("ns/a", "n1", vec![tol(UNREACHABLE, Some(5))]),
        pod("ns/b", "n1", vec![tol(UNREACHABLE, Some(5))]),
    ];
    c.observe(&[node("n1", &[UNREACHABLE])], &pods, t0);
    assert!(c.work("ns/a").is_some() && c.work("ns/b").is_some());
    c.observe(&[node("n1", &[])], &pods, t0);
    assert_eq!(
        (c.work("ns/a"), c.work("ns/b")),
        (None, None),
        "node recovered"
    );
    c.observe(&[node("n1", &[UNREACHABLE])], &pods, t0);
    let forever = [
        pod("ns/a", "n1", vec![tol(UNREACHABLE, None)]),
        pods[1].clone(),
    ];
    c.observe(&[node("n1", &[UNREACHABLE])], &forever, t0);
    assert_eq!(c.work("ns/a"), None, "tolerates forever now");
    c.observe(&[node("n1", &[UNREACHABLE])], &forever[..1], t0);
    assert_eq!(c.work("ns/b"), None, "pod gone");
    assert_eq!(c.take_due(t0 + Duration::from_secs(10)), vec![]);
}

#[test]
fn an_earlier_scheduled_deletion_is_kept_when_the_taints_change() {
    let t0 = Instant::now();
    let mut c = TaintEviction::default();
    let pods = [pod("ns/a", "n1", vec![tol("", Some(10))])];
    c.observe(&[node("n1", &[UNREACHABLE])], &pods, t0);
    let t1 = t0 + Duration::from_secs(4);
    c.observe(&[node("n1", &[UNREACHABLE, "x"])], &pods, t1);
    assert_eq!(
        c.work("ns/a").map(|w| w.fire_at),
        Some(t0 + Duration::from_secs(10))
    );
}
