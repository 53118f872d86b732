//! The demo end to end: `ballast-demo --no-wait` played in-process on kube-sim — and, on the
//! real-control-plane pass (`E2E_K8S_BINARIES` names the Kubernetes binaries), with
//! `--control-plane` on a control plane of its own — its narration captured; every step must
//! show its real evidence, and the whole tour must stay well under the two minutes CI allows it.

use std::time::{Duration, Instant};

use ballast_demo::{Options, Summary};

#[path = "dashboards.rs"]
#[allow(dead_code)]
mod dashboards;

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
    // ... and kubectl pvc timing: claim data's timeline, then both classes measured.
    assert_shows(&text, "$ kubectl pvc timing data -n demo");
    assert_shows(&text, "$ kubectl pvc timing -n demo");
    let timing = &summary.timing_tables;
    assert!(
        timing.contains("persistentvolumeclaim demo/data (class hostpath) is Bound now; Bound "),
        "{timing}"
    );
    assert!(
        timing.contains(
            "Time from creation to Bound, namespace demo (from the pvc-timing annotations)"
        ),
        "{timing}"
    );
    for class in ["hostpath", "nfs"] {
        let row: Vec<&str> = timing
            .lines()
            .find(|l| l.starts_with(&format!("{class} ")))
            .unwrap_or_else(|| panic!("a row for {class}:\n{timing}"))
            .split_whitespace()
            .collect();
        assert_eq!(row[1..3], ["1", "1"], "one claim, measured: {timing}");
        assert!(
            timing.contains(&format!("{class}: 1 claim measured\n")),
            "{timing}"
        );
    }

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

/// Metrics a dashboard reads that a service exports only from their first event on (errors the
/// scenario below cannot cause): for these, the service's metrics module must declare the name.
const FIRST_EVENT_ONLY: &[(&str, &str)] = &[
    ("pvc-timing", "pvc_timing_webhook_errors_total"),
    ("pvc-timing", "pvc_timing_controller_errors_total"),
];

/// Series names and families in Prometheus text output.
fn exported_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every metric a shipped Grafana dashboard queries is one the service really exports: the
/// demo cluster's services, after traffic that moves each family (claims bound on both classes
/// and one deleted, one claim the provisioner cannot place, a claim carrying a copied history,
/// a PodManager, pods created and deleted through the guard, node-1's agent reporting its free
/// space; podmanager's conversion counter is exported at 0, as the demo serves no conversion
/// webhook), scraped on /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_a_metric_its_service_exports() {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    use kube::api::{DeleteParams, PostParams};
    ballast_runtime::tls::install_crypto_provider();
    let binaries = kube_sim::control_plane::ControlPlaneConfig::from_env().map(|c| c.binaries);
    let cluster = ballast_demo::cluster::Cluster::start(None, binaries.as_deref())
        .await
        .unwrap_or_else(|e| panic!("the demo cluster failed: {}", ballast_demo::chain(&e)));
    let ns = ballast_demo::cluster::DEMO_NAMESPACE;
    let claims: kube::Api<PersistentVolumeClaim> =
        kube::Api::namespaced(cluster.client.clone(), ns);
    let claim = |name: &str, class: &str, node: Option<&str>, annotations: serde_json::Value| {
        let mut annotations = annotations;
        if let Some(node) = node {
            annotations["volume.kubernetes.io/selected-node"] = serde_json::json!(node);
        }
        serde_json::from_value::<PersistentVolumeClaim>(serde_json::json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Mi"}}}
        }))
        .expect("a claim")
    };
    let copied = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2020-01-01T00:00:00Z"},{"phase":"Bound","time":"2020-01-01T00:00:03Z"}]}"#;
    for c in [
        claim("dash-nfs", "nfs", None, serde_json::json!({})),
        claim(
            "dash-copied",
            "nfs",
            None,
            serde_json::json!({ "pvc-timing": copied }),
        ),
        claim(
            "dash-hostpath",
            "hostpath",
            Some(ballast_demo::cluster::AGENT_NODE),
            serde_json::json!({}),
        ),
        // no agent runs on node-5: provisioning there fails
        claim(
            "dash-nowhere",
            "hostpath",
            Some("node-5"),
            serde_json::json!({}),
        ),
    ] {
        claims
            .create(&PostParams::default(), &c)
            .await
            .expect("claim created");
    }
    ballast_e2e::wait_for(
        "claims dash-nfs, dash-copied and dash-hostpath Bound",
        std::time::Duration::from_secs(60),
        || {
            let claims = claims.clone();
            async move {
                for name in ["dash-nfs", "dash-copied", "dash-hostpath"] {
                    if claims.get(name).await.ok()?.status?.phase? != "Bound" {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
    claims
        .delete("dash-nfs", &DeleteParams::default())
        .await
        .expect("claim deleted");
    let pms: kube::Api<podmanager::PodManager> = kube::Api::namespaced(cluster.client.clone(), ns);
    let pm: podmanager::PodManager = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps.mycompany.com/v1", "kind": "PodManager",
        "metadata": {"name": "dash"}, "spec": {"replicas": 1, "image": "nginx:1.21"}
    }))
    .expect("a PodManager");
    pms.create(&PostParams::default(), &pm)
        .await
        .expect("PodManager created");
    let pods: kube::Api<Pod> = kube::Api::namespaced(cluster.client.clone(), ns);
    let pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "dash"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}))
    .expect("valid pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    pods.delete("dash", &DeleteParams::default())
        .await
        .expect("pod deleted");

    let http = reqwest::Client::new();
    let scrape = |service: &'static str| {
        let addr = cluster
            .admin_endpoints()
            .into_iter()
            .find(|(s, _)| *s == service)
            .map(|(_, a)| a)
            .expect("a service of the demo");
        let http = http.clone();
        async move {
            http.get(format!("http://{addr}/metrics"))
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .unwrap_or_else(|e| panic!("{service}: /metrics: {e}"))
                .text()
                .await
                .unwrap_or_else(|e| panic!("{service}: /metrics body: {e}"))
        }
    };
    let service_of = |component: &str| match component {
        "provisioner-hostpath" | "provisioner-nfs" => "provisioner",
        "eviction-guard" => "eviction-guard",
        "pvc-timing" => "pvc-timing",
        "podmanager" => "podmanager",
        other => panic!("a dashboard for {other}, which the demo does not run"),
    };
    // every family moves within seconds of the traffic above; wait for the slowest (the
    // controller's deletion and the failed placement)
    let wanted: Vec<(&'static str, String)> = dashboards::all()
        .iter()
        .flat_map(|d| {
            let text = std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(d.path()),
            )
            .expect("the dashboard file");
            let model: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            let service = service_of(d.component);
            dashboards::expressions(&model)
                .iter()
                .flat_map(|e| dashboards::metric_names(e))
                .map(|m| (service, m))
                .collect::<Vec<_>>()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(wanted.len() > 20, "{wanted:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        let mut missing = Vec::new();
        for service in ["eviction-guard", "pvc-timing", "provisioner", "podmanager"] {
            let names = exported_names(&scrape(service).await);
            missing.extend(
                wanted
                    .iter()
                    .filter(|(s, m)| {
                        *s == service
                            && !names.contains(m)
                            && !FIRST_EVENT_ONLY.contains(&(service, m.as_str()))
                    })
                    .cloned(),
            );
        }
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "dashboard queries name metrics their service does not export: {missing:?}"
    );
    // And the per-node free space is the agent's live report, not a placeholder: node-1's
    // agent runs in the demo (every demo cluster's node-1 reports real free space, so this
    // holds whatever else shares the process's recorder).
    let free = ballast_e2e::wait_for(
        "provisioner_hostpath_free_bytes of the demo's agent node",
        Duration::from_secs(30),
        || {
            let text = scrape("provisioner");
            async move {
                ballast_runtime::metrics::sample(
                    &text.await,
                    "provisioner_hostpath_free_bytes",
                    &[("node", ballast_demo::cluster::AGENT_NODE)],
                )
                .filter(|bytes| bytes.is_finite() && *bytes > 0.0)
            }
        },
    )
    .await;
    eprintln!(
        "provisioner: {} reports {free} free bytes",
        ballast_demo::cluster::AGENT_NODE
    );
    for (service, name) in FIRST_EVENT_ONLY {
        let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../crates/{service}/src/metrics.rs"));
        let code = std::fs::read_to_string(&module).expect("the metrics module");
        assert!(
            code.contains(&format!("\"{name}\"")),
            "{service} no longer declares {name}"
        );
        eprintln!("{service}: {name} is declared; it appears on /metrics with its first error");
    }
    eprintln!(
        "{} metric names of the dashboards found on the services' /metrics",
        wanted.len()
    );
    cluster.stop().await;
}
