//! The demo end to end: `ballast-demo --no-wait` played in-process on kube-sim — and, on the
//! real-control-plane pass (`E2E_K8S_BINARIES` names the Kubernetes binaries), with
//! `--control-plane` on a control plane of its own — its narration captured; every step must
//! show its real evidence, and the whole tour must stay well under the two minutes CI allows it.

use std::time::{Duration, Instant};

use ballast_demo::{Options, Summary};

/// CI runs the demo on 2 busy cores; the tour itself takes a few seconds.
const BUDGET: Duration = Duration::from_secs(90);

fn position(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("the tour shows {needle:?}:\n{text}"))
}

fn assert_shows(text: &str, needle: &str) {
    position(text, needle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_tour_runs_unattended_and_shows_each_steps_evidence() {
    ballast_runtime::tls::install_crypto_provider();
    let started = Instant::now();
    let mut out = Vec::new();
    let opts = Options {
        no_wait: true,
        control_plane: kube_sim::control_plane::ControlPlaneConfig::from_env().map(|c| c.binaries),
        ..Options::default()
    };
    let result = tokio::time::timeout(BUDGET, ballast_demo::run(opts, &mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let summary: Summary = match result {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => panic!("the demo failed: {}\n{text}", ballast_demo::chain(&e)),
        Err(_) => panic!("the demo took longer than {BUDGET:?}:\n{text}"),
    };
    let took = started.elapsed();
    eprintln!(
        "demo: tour {:.1}s, whole run {:.1}s",
        summary.elapsed.as_secs_f64(),
        took.as_secs_f64()
    );

    // Every step header, in order, each before its evidence.
    let mut last = 0;
    for n in 1..=6 {
        let at = position(&text, &format!("=== Step {n}/6: "));
        assert!(at > last, "step {n} comes after step {}", n - 1);
        last = at;
    }

    // 1. Both claims Bound, with Pending then Bound in pvc-timing, and their directories.
    assert_eq!(summary.claims.len(), 2, "{:?}", summary.claims);
    for claim in &summary.claims {
        assert!(
            claim
                .timing
                .starts_with(r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","#),
            "{}: {}",
            claim.name,
            claim.timing
        );
        assert!(
            claim.timing.contains(r#"{"phase":"Bound","#),
            "{}",
            claim.timing
        );
        assert_shows(&text, &format!("pvc-timing: {}", claim.timing));
        assert_shows(&text, &format!("on disk:    {}", claim.directory.display()));
    }
    let classes: Vec<&str> = summary.claims.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(classes, ["nfs", "hostpath"]);
    assert_shows(
        &text,
        r#"pvc-timing: {"currentPhase":"Pending","timings":[{"phase":"Pending","#,
    );
    assert_shows(
        &text,
        "volume:     nfs nfs.demo.ballast.dev:/exports/ballast/pvc-",
    );

    // 2. kubectl pvc inspect: every phase accounted for, exit code 0.
    for row in [
        "Provision   success",
        "Bind        success",
        "Mount       success",
    ] {
        assert!(
            summary.inspect_table.lines().any(|l| l.starts_with(row)),
            "{row:?} in\n{}",
            summary.inspect_table
        );
    }
    assert_eq!(summary.inspect_exit_code, 0);
    assert_shows(&text, "$ kubectl pvc inspect data -n demo");
    assert_shows(
        &text,
        "exit code 0: every phase succeeded or does not apply",
    );

    // 3. The PodManager settled at 3, then 5, then 2.
    let settled: Vec<(i32, i32, i32)> = summary
        .scaling
        .iter()
        .copied()
        .filter(|(d, c, r)| d == c && c == r)
        .collect();
    for target in [(3, 3, 3), (5, 5, 5), (2, 2, 2)] {
        assert!(settled.contains(&target), "{:?}", summary.scaling);
    }
    assert_shows(
        &text,
        "my-pod-manager   5         5         5       nginx:1.21",
    );

    // 4. Protection on, taint eviction refused, drain refused with 429, healthy eviction allowed.
    assert_eq!(
        summary.protection_reason,
        "3 of 5 worker nodes NotReady within 5m"
    );
    assert_shows(&text, "reason: 3 of 5 worker nodes NotReady within 5m");
    assert!(summary.taint_refusals >= 3.0, "{}", summary.taint_refusals);
    for pod in ["app-1", "app-2", "app-3"] {
        assert!(
            summary.protected_pods.iter().any(|p| p == pod),
            "{pod} kept: {:?}",
            summary.protected_pods
        );
    }
    let refusal = &summary.eviction_refusal;
    assert_eq!((refusal.code, refusal.node.as_str()), (429, "node-1"));
    assert!(
        refusal
            .message
            .contains("eviction-guard refused eviction of pod demo/app-1: node node-1 is NotReady"),
        "{}",
        refusal.message
    );
    assert_shows(
        &text,
        &format!("HTTP 429 Too Many Requests\n    {}", refusal.message),
    );
    assert_eq!(summary.evicted_pod, "app-4");
    assert_shows(&text, "app-4 on node-4 (Ready) was evicted as usual");

    // 5. GetStatus over gRPC, as grpcurl would print it.
    assert_eq!(summary.grpc_status["protecting"], true);
    assert_eq!(
        summary.grpc_status["notreadyNodes"],
        serde_json::json!(["node-1", "node-2", "node-3"])
    );
    assert_shows(&text, "$ grpcurl -plaintext 127.0.0.1:");
    assert_shows(&text, "  \"mode\": \"MODE_AUTO\",");

    // 6. Recovery: protection off by itself, counters on /metrics.
    assert!(
        !summary.protecting_after_recovery,
        "{}",
        summary.recovery_reason
    );
    assert_shows(&text, "eviction-guard: protection OFF");
    assert!(summary.intercepted_total > 0.0);
    assert!(summary.allowed_total > 0.0);
    assert_eq!(summary.notready_count, 0.0);
    assert_shows(
        &text,
        "eviction_intercepted_total{operation=\"eviction\"} 1",
    );
    assert_shows(&text, "node_notready_count 0");

    // And where to poke at it next.
    assert_shows(&text, "get pods -A");
    assert_shows(&text, "--no-wait: stopping everything now.");
    assert!(took < BUDGET, "took {took:?}");
}

/// `promtool check metrics` on the `/metrics` of every service the demo starts: HELP text on
/// every family, names as Prometheus advises. The only finding allowed is the seed's gauge name
/// `node_notready_count`, kept for compatibility. Skipped (with a message) without promtool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_services_metrics_pass_promtool() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    if Command::new("promtool").arg("--version").output().is_err() {
        ballast_e2e::record_skip(
            "any",
            "promtool is not installed (Debian package `prometheus`)",
        );
        return;
    }
    let binaries = kube_sim::control_plane::ControlPlaneConfig::from_env().map(|c| c.binaries);
    let cluster = ballast_demo::cluster::Cluster::start(None, binaries.as_deref())
        .await
        .unwrap_or_else(|e| panic!("the demo cluster failed: {}", ballast_demo::chain(&e)));
    // traffic for the admission families (they appear with their first sample): a PVC through
    // pvc-timing, a pod create and delete through eviction-guard
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    use kube::api::{DeleteParams, PostParams};
    let ns = ballast_demo::cluster::DEMO_NAMESPACE;
    let pvcs: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(cluster.client.clone(), ns);
    let pvc = serde_json::from_value(serde_json::json!({"metadata": {"name": "promtool"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}}))
    .expect("valid claim");
    pvcs.create(&PostParams::default(), &pvc)
        .await
        .expect("claim created");
    let pods: kube::Api<Pod> = kube::Api::namespaced(cluster.client.clone(), ns);
    let pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "promtool"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}))
    .expect("valid pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    pods.delete("promtool", &DeleteParams::default())
        .await
        .expect("pod deleted");
    let http = reqwest::Client::new();
    for (service, addr) in cluster.admin_endpoints() {
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("{service}: /metrics: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{service}: /metrics body: {e}"));
        assert!(
            text.contains("# HELP admission_duration_seconds "),
            "{service}: the admission histogram described:\n{text}"
        );
        if service == "eviction-guard" {
            // every series an operator alerts on exists from start-up, at 0 until it counts
            for name in ["eviction_intercepted_total", "eviction_allowed_total"] {
                for op in ["delete", "eviction", "update", "status"] {
                    assert!(
                        ballast_runtime::metrics::sample(&text, name, &[("operation", op)])
                            .is_some(),
                        "{name}{{operation={op:?}}} missing:\n{text}"
                    );
                }
            }
            for name in [
                "eviction_guard_pod_lookup_errors_total",
                "eviction_guard_node_watch_errors_total",
                "eviction_guard_released_total",
                "eviction_guard_release_errors_total",
            ] {
                assert!(
                    ballast_runtime::metrics::sample(&text, name, &[]).is_some(),
                    "{name} missing:\n{text}"
                );
            }
        }
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("metrics written to promtool");
        let out = child.wait_with_output().expect("promtool finished");
        let findings: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("node_notready_count"))
            .map(str::to_owned)
            .collect();
        assert!(
            findings.is_empty(),
            "{service}: promtool check metrics found:\n{}",
            findings.join("\n")
        );
        eprintln!("{service}: promtool check metrics: clean");
    }
    cluster.stop().await;
}
