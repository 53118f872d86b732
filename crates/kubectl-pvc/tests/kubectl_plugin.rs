//! End to end: `kubectl pvc ...` run through kubectl's own plugin lookup, with this package's
//! freshly built binary first on PATH, on both backends of the shared `ballast-e2e` harness:
//! kube-sim, and a real control plane (the cluster `E2E_KUBECONFIG` names, with the harness's
//! simulated nodes running the pods). Each test has its own namespace; the volumes and classes it
//! makes carry the namespace's name, and the harness removes them. The namespace-scoped user is
//! a service account with a token of its own, as `kubectl create token` mints it.
//!
//! It lives in this package rather than in the `tests/` crate because only a package's own
//! tests get `CARGO_BIN_EXE_kubectl-pvc`, which makes cargo build the binary and names exactly
//! that build; locating it from another crate would test whatever stale binary lies in target/.
//! Run it with `cargo test -p kubectl-pvc --test kubectl_plugin`; on a real control plane,
//! `kube-sim control-plane --binaries DIR -- cargo nextest run -p kubectl-pvc --test kubectl_plugin`.

use std::path::Path;
use std::time::Duration;

use ballast_e2e::{SimConfig, TestEnv, wait_for};
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use serde_json::json;

/// Generous for a loaded 2-core machine; each wait normally ends within a few seconds.
const WAIT: Duration = Duration::from_secs(60);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `kubectl pvc <args>` with `kubeconfig` in KUBECONFIG. kubectl refuses flags before a
/// plugin's name, so every flag goes after `pvc`. Without kubectl installed it runs the binary
/// directly, after saying that the plugin lookup is skipped.
async fn kubectl_pvc(kubeconfig: &Path, args: &[&str]) -> Run {
    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-pvc"));
    let dir = bin.parent().expect("the binary lives in a directory");
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH entries are joinable");
    let has_kubectl = std::env::split_paths(&path).any(|d| d.join("kubectl").is_file());
    let mut cmd = if has_kubectl {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("pvc");
        cmd
    } else {
        eprintln!(
            "SKIPPED: kubectl's plugin lookup: kubectl is not installed; running kubectl-pvc itself"
        );
        tokio::process::Command::new(bin)
    };
    cmd.args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KUBECTL_PVC_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().await.expect("kubectl pvc runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

async fn start() -> TestEnv {
    TestEnv::start(
        SimConfig::default()
            .nodes(2)
            .scheduler(true)
            .kubelet(true)
            .pv_binder(true),
    )
    .await
}

/// Creates a cluster-scoped StorageClass named after the test's namespace (so tests on a real
/// cluster do not collide) and returns its name.
async fn storage_class(env: &TestEnv, provisioner: &str, mode: &str) -> String {
    let name = format!("{}-{}", env.namespace, mode.to_lowercase());
    Api::<StorageClass>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode})),
        )
        .await
        .expect("storage class created");
    name
}

async fn create_claim(
    env: &TestEnv,
    name: &str,
    class: &str,
    volume: Option<&str>,
) -> PersistentVolumeClaim {
    env.api::<PersistentVolumeClaim>()
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": name},
                "spec": {"storageClassName": class, "volumeName": volume, "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}
            })),
        )
        .await
        .expect("claim created")
}

/// Writes to `out` a kubeconfig for the cluster of `admin` (its server and CA) that
/// authenticates with `token` alone, as a user given a token would write one.
fn write_kubeconfig_for_token(admin: &Path, token: &str, out: &Path) {
    let mut kc = kube::config::Kubeconfig::read_from(admin).expect("the cluster's kubeconfig");
    for named in &mut kc.auth_infos {
        named.auth_info = Some(obj(json!({ "token": token })));
    }
    let yaml = serde_yaml::to_string(&kc).expect("a kubeconfig serializes");
    std::fs::write(out, yaml).expect("kubeconfig written");
}

/// A pre-bound hostPath volume, claim `data` on it, and pod `web-0` mounting it, running.
/// Returns the volume's name and the pod's node.
async fn mounted_claim(env: &TestEnv) -> (String, String) {
    let class = storage_class(env, "kubernetes.io/no-provisioner", "Immediate").await;
    let pv = format!("pv-{}", env.namespace);
    Api::<PersistentVolume>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": pv},
                "spec": {"storageClassName": class, "capacity": {"storage": "1Gi"},
                         "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/ballast-e2e"},
                         "claimRef": {"namespace": env.namespace, "name": "data"}}
            })),
        )
        .await
        .expect("volume created");
    create_claim(env, "data", &class, Some(&pv)).await;
    let pods = env.api::<Pod>();
    pods.create(
        &PostParams::default(),
        &obj(json!({
            "metadata": {"name": "web-0"},
            "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
        })),
    )
    .await
    .expect("pod created");
    let claims = env.api::<PersistentVolumeClaim>();
    let node = wait_for("claim data Bound and pod web-0 running", WAIT, || {
        let (claims, pods) = (claims.clone(), pods.clone());
        async move {
            let bound = claims.get("data").await.ok()?.status?.phase? == "Bound";
            let pod = pods.get("web-0").await.ok()?;
            let running = pod.status?.phase? == "Running";
            (bound && running).then_some(pod.spec?.node_name?)
        }
    })
    .await;
    (pv, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_of_a_bound_and_mounted_claim_prints_every_phase_succeeded_and_exits_0() {
    let env = start().await;
    let (_, node) = mounted_claim(&env).await;
    assert!(
        env.nodes().contains(&node),
        "{node} is one of the test's nodes"
    );

    let run = kubectl_pvc(&env.kubeconfig, &["inspect", "data", "-n", &env.namespace]).await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let pod_line = format!("web-0{}{node}\n", " ".repeat(31 - "web-0".len()));
    assert_eq!(
        run.stdout,
        format!(
            "DESIRED POD                    DESIRED NODE\n{pod_line}\
PHASE       STATUS    DETAIL
Provision   success
Bind        success
Attach      n/a       hostPath volumes need no attach
Mount       success
"
        )
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_of_a_claim_whose_provisioning_failed_shows_the_event_text_and_exits_4() {
    let env = start().await;
    let class = storage_class(&env, "ebs.csi.example.com", "Immediate").await;
    let claim = create_claim(&env, "broken", &class, None).await;
    let message =
        format!("failed to provision volume with StorageClass \"{class}\": quota exceeded");
    env.api::<Event>()
        .create(
            &PostParams::default(),
            &obj(json!({
                "metadata": {"name": "broken.provisioning-failed"},
                "involvedObject": {"kind": "PersistentVolumeClaim", "namespace": env.namespace,
                                   "name": "broken", "uid": claim.metadata.uid, "apiVersion": "v1"},
                "reason": "ProvisioningFailed", "type": "Warning", "message": message,
                "source": {"component": "ebs.csi.example.com"}, "count": 1,
                "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"
            })),
        )
        .await
        .expect("event created");

    let run = kubectl_pvc(
        &env.kubeconfig,
        &["--namespace", &env.namespace, "inspect", "broken"],
    )
    .await;
    assert_eq!(
        run.code, 4,
        "a failed phase exits 4; stderr: {}",
        run.stderr
    );
    assert_eq!(
        run.stdout,
        format!(
            "DESIRED POD                    DESIRED NODE\n<none>\n\
PHASE       STATUS    DETAIL
Provision   fail      {message}
Bind        pending   waiting for Provision
Attach      n/a       no pod uses this claim
Mount       n/a       no pod uses this claim
"
        )
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_of_a_claim_waiting_for_its_first_consumer_is_pending_not_failed_and_exits_3() {
    let env = start().await;
    let class = storage_class(&env, "ballast.dev/hostpath", "WaitForFirstConsumer").await;
    create_claim(&env, "later", &class, None).await;

    let run = kubectl_pvc(&env.kubeconfig, &["inspect", "later", "-n", &env.namespace]).await;
    assert_eq!(
        run.code, 3,
        "a pending phase exits 3; stderr: {}",
        run.stderr
    );
    assert!(
        run.stdout.contains(
            "Provision   pending   waiting for first consumer to be created before binding\n"
        ),
        "{}",
        run.stdout
    );

    let run = kubectl_pvc(
        &env.kubeconfig,
        &["inspect", "later", "-n", &env.namespace, "-o", "json"],
    )
    .await;
    assert_eq!(run.code, 3);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json output");
    assert_eq!(report["outcome"], "pending");
    assert_eq!(report["phases"][1]["status"], "pending");
    assert_eq!(report["phases"][1]["detail"], "waiting for Provision");
    assert_eq!(report["phases"][3]["status"], "n/a");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_lists_the_namespace_claims_and_ls_p_only_those_the_pod_mounts() {
    let env = start().await;
    let (pv, _) = mounted_claim(&env).await;
    let class = storage_class(&env, "ballast.dev/hostpath", "WaitForFirstConsumer").await;
    create_claim(&env, "later", &class, None).await;
    let ns = env.namespace.as_str();

    let run = kubectl_pvc(&env.kubeconfig, &["ls", "-n", ns]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "NAME{}VOLUME\ndata{}{pv}\nlater{}<none>\n",
            " ".repeat(42),
            " ".repeat(42),
            " ".repeat(41)
        )
    );

    let run = kubectl_pvc(
        &env.kubeconfig,
        &["ls", "-p", "web-0", "-n", ns, "-o", "wide"],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert_eq!(
        rows[0],
        ["NAME", "VOLUME", "STATUS", "CLASS", "CAPACITY", "AGE"]
    );
    assert_eq!(rows[1][..3], ["data", pv.as_str(), "Bound"]);

    // --kubeconfig wins over a KUBECONFIG that points nowhere.
    let flag = env.kubeconfig.to_string_lossy().into_owned();
    let run = kubectl_pvc(
        Path::new("/nonexistent/kubeconfig"),
        &["ls", "-A", "--kubeconfig", &flag],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stdout.starts_with("NAMESPACE "), "{}", run.stdout);
    let later = run
        .stdout
        .lines()
        .find(|l| l.starts_with(ns) && l.contains(" later "))
        .unwrap_or_else(|| panic!("claim later listed across namespaces:\n{}", run.stdout));
    assert!(later.ends_with("<none>"), "{later}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_of_a_missing_claim_prints_kubectl_not_found_and_exits_1() {
    let env = start().await;
    let run = kubectl_pvc(&env.kubeconfig, &["inspect", "nope", "-n", &env.namespace]).await;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "Error from server (NotFound): persistentvolumeclaims \"nope\" not found\n"
    );
    assert_eq!(run.stdout, "");

    let run = kubectl_pvc(
        &env.kubeconfig,
        &["ls", "-p", "ghost", "-n", &env.namespace],
    )
    .await;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "Error from server (NotFound): pods \"ghost\" not found\n"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_user_who_cannot_read_volumes_still_gets_a_verdict_from_the_pods() {
    let env = start().await;
    let (pv, _) = mounted_claim(&env).await;
    // A developer (a service account with a token of its own, as `kubectl create token` mints
    // it) who may read claims, pods and events, and nothing cluster-scoped.
    let (dev, token) = env.service_account_token("dev", &[]).await;
    for resource in ["persistentvolumeclaims", "pods", "events"] {
        for verb in ["get", "list"] {
            env.allow(&dev, verb, "", resource).await;
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("dev.kubeconfig");
    write_kubeconfig_for_token(&env.kubeconfig, &token, &kubeconfig);

    let run = kubectl_pvc(
        &kubeconfig,
        &["inspect", "data", "-n", &env.namespace, "-o", "json"],
    )
    .await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json output");
    let evidence = |i: usize| {
        report["phases"][i]["evidence"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(report["phases"][0]["status"], "success");
    assert!(
        evidence(0).starts_with(&format!("persistentvolume {pv} (cannot read it: ")),
        "{}",
        evidence(0)
    );
    assert_eq!(report["phases"][2]["status"], "success");
    assert!(
        evidence(2).starts_with("every pod has mounted it (cannot read the persistentvolume: "),
        "{}",
        evidence(2)
    );
    env.shutdown().await;
}

/// A directory holding `kubectl_complete-pvc`, a symlink to this package's binary, as a user
/// makes it next to a krew-installed plugin; and the PATH with it and the binary's directory
/// first.
fn completion_path() -> (tempfile::TempDir, std::ffi::OsString) {
    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-pvc"));
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(bin, dir.path().join("kubectl_complete-pvc"))
        .expect("helper symlinked");
    let path = std::env::join_paths(
        [
            dir.path().to_path_buf(),
            bin.parent().expect("a directory").to_path_buf(),
        ]
        .into_iter()
        .chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .expect("PATH entries are joinable");
    (dir, path)
}

/// What kubectl's completion machinery (the `__complete` command every shell script of
/// `kubectl completion` calls) offers for `kubectl pvc WORDS`, the last word being completed.
async fn kubectl_complete(kubeconfig: &Path, words: &[&str]) -> (Vec<String>, String) {
    let (_dir, path) = completion_path();
    let out = tokio::process::Command::new("kubectl")
        .arg("__complete")
        .arg("pvc")
        .args(words)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    (lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn kubectl_installed() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Writes `value` as the claim's `pvc-timing` annotation, as pvc-timing's webhook keeps it.
async fn annotate_timing(env: &TestEnv, name: &str, value: &str) {
    env.api::<PersistentVolumeClaim>()
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"pvc-timing": value}}})),
        )
        .await
        .expect("annotation written");
}

/// The seed's shape: Pending at `created`, Bound `after` seconds later (or not observed).
fn timing_value(created: &str, after: Option<i64>, observed: bool) -> String {
    let start: k8s_openapi::jiff::Timestamp = created.parse().expect("RFC 3339");
    match after {
        None => format!(
            r#"{{"currentPhase":"Pending","timings":[{{"phase":"Pending","time":"{created}"}}]}}"#
        ),
        Some(s) => {
            let bound = start
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(s))
                .expect("in range");
            let unobserved = if observed { "" } else { r#","observed":false"# };
            format!(
                r#"{{"currentPhase":"Bound","timings":[{{"phase":"Pending","time":"{created}"}},{{"phase":"Bound","time":"{bound}"{unobserved}}}]}}"#
            )
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_shows_a_claims_phase_history_and_the_time_to_bound_per_class() {
    let env = start().await;
    let (_, _) = mounted_claim(&env).await;
    let class = storage_class(&env, "ballast.dev/hostpath", "WaitForFirstConsumer").await;
    for name in ["later", "restored", "quick"] {
        create_claim(&env, name, &class, None).await;
    }
    let created = |c: &PersistentVolumeClaim| {
        c.metadata
            .creation_timestamp
            .as_ref()
            .expect("created")
            .0
            .to_string()
    };
    let claims = env.api::<PersistentVolumeClaim>();
    let data = claims.get("data").await.expect("claim data");
    annotate_timing(&env, "data", &timing_value(&created(&data), Some(3), true)).await;
    let later = claims.get("later").await.expect("claim later");
    annotate_timing(&env, "later", &timing_value(&created(&later), None, true)).await;
    let restored = claims.get("restored").await.expect("claim restored");
    annotate_timing(
        &env,
        "restored",
        &timing_value(&created(&restored), Some(3600), false),
    )
    .await;
    let quick = claims.get("quick").await.expect("claim quick");
    annotate_timing(
        &env,
        "quick",
        &timing_value(&created(&quick), Some(40), true),
    )
    .await;
    let ns = env.namespace.as_str();

    let run = kubectl_pvc(&env.kubeconfig, &["timing", "data", "-n", ns]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!("persistentvolumeclaim {ns}/data (class ")),
        "{}",
        run.stdout
    );
    assert!(
        lines[0].ends_with("is Bound now; Bound 3s after creation"),
        "{}",
        run.stdout
    );
    assert!(
        lines[2].starts_with(&format!("Pending   {}", created(&data))),
        "{}",
        run.stdout
    );
    assert!(lines[3].starts_with("Bound     "), "{}", run.stdout);
    assert!(lines[3].contains(" so far "), "{}", run.stdout);

    let run = kubectl_pvc(
        &env.kubeconfig,
        &["timing", "restored", "-n", ns, "-o", "json"],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json output");
    assert_eq!(report["bound"], "notObserved");
    assert_eq!(report["secondsToBound"], serde_json::Value::Null);
    assert_eq!(report["timeline"][1]["observed"], false);
    assert_eq!(report["timeline"][1]["entered"], serde_json::Value::Null);

    // The namespace, per class: `data` (3s) in the mounted claim's class; 40s measured in the
    // other, where one claim is Pending and one was bound unobserved.
    let run = kubectl_pvc(&env.kubeconfig, &["timing", "-n", ns]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(
        run.stdout.starts_with(&format!(
            "Time from creation to Bound, namespace {ns} (from the pvc-timing annotations)\n"
        )),
        "{}",
        run.stdout
    );
    let row = |class: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{class} ")))
            .unwrap_or_else(|| panic!("a row for {class}:\n{}", run.stdout))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row(&class),
        [class.as_str(), "3", "1", "40s", "40s", "40s", "40s"],
        "{}",
        run.stdout
    );
    let immediate = format!("{ns}-immediate");
    assert_eq!(
        row(&immediate),
        [immediate.as_str(), "1", "1", "3s", "3s", "3s", "3s"],
        "{}",
        run.stdout
    );
    let bar = "█".repeat(40);
    assert!(
        run.stdout.contains(&format!("  ≤ 5s   {bar} 1\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("  ≤ 1m   {bar} 1\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "  also: 1 not Bound yet, 1 bound while pvc-timing was not watching (not observed, not counted)\n"
        ),
        "{}",
        run.stdout
    );

    // -A -o json for scripts: every claim of this namespace, with its figure.
    let run = kubectl_pvc(&env.kubeconfig, &["timing", "-A", "-o", "json"]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json output");
    assert_eq!(report["namespace"], serde_json::Value::Null);
    let mine: Vec<(String, serde_json::Value)> = report["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .filter(|c| c["namespace"] == ns)
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default().to_owned(),
                c["secondsToBound"].clone(),
            )
        })
        .collect();
    assert_eq!(
        mine,
        [
            ("data".to_owned(), json!(3)),
            ("later".to_owned(), serde_json::Value::Null),
            ("quick".to_owned(), json!(40)),
            ("restored".to_owned(), serde_json::Value::Null),
        ]
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_on_claims_pvc_timing_never_saw_says_pvc_timing_is_missing_and_exits_1() {
    let env = start().await;
    let class = storage_class(&env, "ballast.dev/hostpath", "WaitForFirstConsumer").await;
    create_claim(&env, "plain", &class, None).await;
    create_claim(&env, "other", &class, None).await;
    let ns = env.namespace.as_str();

    let run = kubectl_pvc(&env.kubeconfig, &["timing", "plain", "-n", ns]).await;
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with(&format!(
            "error: persistentvolumeclaim {ns}/plain has no pvc-timing annotation: pvc-timing, \
             the webhook that records each claim's phase history, is not installed in this \
             cluster or has not seen it yet"
        )),
        "{}",
        run.stderr
    );
    let run = kubectl_pvc(&env.kubeconfig, &["timing", "-n", ns]).await;
    assert_eq!(run.code, 1, "stdout: {}", run.stdout);
    assert!(
        run.stderr.starts_with(&format!(
            "error: none of the 2 claims in namespace {ns} has no pvc-timing annotation: "
        )),
        "{}",
        run.stderr
    );
    // A namespace without claims is no error.
    let run = kubectl_pvc(&env.kubeconfig, &["timing", "-n", &format!("{ns}-empty")]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, format!("No claims in namespace {ns}-empty.\n"));
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_completes_claim_names_pods_and_namespaces_through_kubectl_complete_pvc() {
    if !kubectl_installed() {
        ballast_e2e::record_skip(
            "any",
            "kubectl is not installed: no plugin completion to test",
        );
        return;
    }
    let env = start().await;
    let (_, _) = mounted_claim(&env).await;
    let class = storage_class(&env, "ballast.dev/hostpath", "WaitForFirstConsumer").await;
    create_claim(&env, "logs", &class, None).await;
    let ns = env.namespace.as_str();
    let kc = env.kubeconfig.as_path();

    let (claims, stderr) = kubectl_complete(kc, &["inspect", "-n", ns, ""]).await;
    assert_eq!(claims, ["data", "logs", ":4"], "{stderr}");
    let (claims, _) = kubectl_complete(kc, &["timing", "--namespace", ns, "l"]).await;
    assert_eq!(claims, ["logs", ":4"]);
    let (pods, _) = kubectl_complete(kc, &["ls", "-n", ns, "-p", ""]).await;
    assert_eq!(pods, ["web-0", ":4"]);
    let (namespaces, _) = kubectl_complete(kc, &["inspect", "-n", &ns[..ns.len() - 2]]).await;
    assert!(namespaces.contains(&ns.to_owned()), "{namespaces:?}");
    assert_eq!(namespaces.last().map(String::as_str), Some(":4"));
    let (subcommands, _) = kubectl_complete(kc, &[""]).await;
    assert_eq!(subcommands, ["help", "inspect", "ls", "timing", ":4"]);

    // The shells, through the scripts `kubectl completion SHELL` prints: bash (with the
    // bash-completion package) and fish; zsh's script calls the same `kubectl __complete`.
    let (_dir, path) = completion_path();
    let line = format!("kubectl pvc inspect -n {ns} ");
    let bash_setup = "/usr/share/bash-completion/bash_completion";
    if Path::new(bash_setup).is_file() {
        let script = format!(
            "source {bash_setup}\nsource <(kubectl completion bash)\n\
             COMP_WORDS=(kubectl pvc inspect -n {ns} '')\nCOMP_CWORD=5\n\
             COMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n\
             __start_kubectl kubectl '' {ns}\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
        );
        let out = tokio::process::Command::new("bash")
            .args(["-c", &script])
            .env("PATH", &path)
            .env("KUBECONFIG", kc)
            .output()
            .await
            .expect("bash runs");
        let words: Vec<&str> = std::str::from_utf8(&out.stdout)
            .expect("utf-8")
            .lines()
            .collect();
        assert_eq!(
            words,
            ["data", "logs"],
            "bash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        ballast_e2e::record_skip(
            "any",
            "bash completion: the bash-completion package is not installed",
        );
    }
    match tokio::process::Command::new("fish")
        .args([
            "-c",
            &format!("kubectl completion fish | source; complete -C '{line}'"),
        ])
        .env("PATH", &path)
        .env("KUBECONFIG", kc)
        .output()
        .await
    {
        Ok(out) => {
            let words: Vec<&str> = std::str::from_utf8(&out.stdout)
                .expect("utf-8")
                .lines()
                .map(|l| l.split('\t').next().unwrap_or_default())
                .collect();
            assert_eq!(
                words,
                ["data", "logs"],
                "fish: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => ballast_e2e::record_skip("any", "fish completion: fish is not installed"),
    }
    env.shutdown().await;
}
