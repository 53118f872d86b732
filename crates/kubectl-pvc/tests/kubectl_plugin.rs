//! End to end on kube-sim: `kubectl pvc ...` run through kubectl's own plugin lookup, with this
//! package's freshly built binary first on PATH.
//!
//! It lives in this package rather than in the `tests/` crate because only a package's own
//! tests get `CARGO_BIN_EXE_kubectl-pvc`, which makes cargo build the binary and names exactly
//! that build; locating it from another crate would test whatever stale binary lies in target/.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, PostParams};
use serde_json::json;

/// Generous for a loaded 2-core machine; each wait normally ends within a second.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `kubectl pvc <args>` with the sim's kubeconfig in KUBECONFIG.
async fn kubectl_pvc(kubeconfig: &Path, args: &[&str]) -> Run {
    let bin = Path::new(env!("CARGO_BIN_EXE_kubectl-pvc"));
    let dir = bin.parent().expect("the binary lives in a directory");
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH entries are joinable");
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("pvc")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KUBECTL_PVC_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().await.expect("kubectl runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_pvc_inspects_and_lists_claims_on_kube_sim() {
    let sim = kube_sim::KubeSim::start(
        kube_sim::SimConfig::default()
            .nodes(2)
            .scheduler(true)
            .kubelet(true)
            .pv_binder(true),
    )
    .await
    .expect("kube-sim starts");
    let client = sim.client();
    let ns = "pvc-e2e";
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &obj(json!({"metadata": {"name": ns}})))
        .await
        .expect("namespace created");
    let classes: Api<StorageClass> = Api::all(client.clone());
    for (name, provisioner, mode) in [
        ("manual", "kubernetes.io/no-provisioner", "Immediate"),
        ("fast", "ebs.csi.example.com", "Immediate"),
        ("local-wait", "ballast.dev/hostpath", "WaitForFirstConsumer"),
    ] {
        classes
            .create(&pp, &obj(json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode})))
            .await
            .expect("storage class created");
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = |name: &str, class: &str, volume: Option<&str>| -> PersistentVolumeClaim {
        obj(json!({
            "metadata": {"name": name},
            "spec": {"storageClassName": class, "volumeName": volume, "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
    };

    // 1. A pre-bound hostPath volume, its claim, and a pod that mounts it.
    Api::<PersistentVolume>::all(client.clone())
        .create(
            &pp,
            &obj(json!({
                "metadata": {"name": "pv-data"},
                "spec": {"storageClassName": "manual", "capacity": {"storage": "1Gi"},
                         "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/srv/data"},
                         "claimRef": {"namespace": ns, "name": "data"}}
            })),
        )
        .await
        .expect("volume created");
    claims
        .create(&pp, &claim("data", "manual", Some("pv-data")))
        .await
        .expect("claim created");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(
        &pp,
        &obj(json!({
            "metadata": {"name": "web-0"},
            "spec": {"containers": [{"name": "web", "image": "nginx"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
        })),
    )
    .await
    .expect("pod created");

    // 2. A claim whose provisioner reported a failure.
    let broken = claims
        .create(&pp, &claim("broken", "fast", None))
        .await
        .expect("claim created");
    let message = "failed to provision volume with StorageClass \"fast\": quota exceeded";
    Api::<Event>::namespaced(client.clone(), ns)
        .create(&pp, &obj(json!({
            "metadata": {"name": "broken.provisioning-failed"},
            "involvedObject": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": "broken",
                               "uid": broken.metadata.uid, "apiVersion": "v1"},
            "reason": "ProvisioningFailed", "type": "Warning", "message": message,
            "source": {"component": "ebs.csi.example.com"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z", "count": 1
        })))
        .await
        .expect("event created");

    // 3. A claim of a WaitForFirstConsumer class that no pod uses yet.
    claims
        .create(&pp, &claim("later", "local-wait", None))
        .await
        .expect("claim created");

    wait_for("claim data Bound and pod web-0 running", || {
        let (claims, pods) = (claims.clone(), pods.clone());
        async move {
            let bound = claims.get("data").await.ok()?.status?.phase? == "Bound";
            let running = pods.get("web-0").await.ok()?.status?.phase? == "Running";
            (bound && running).then_some(())
        }
    })
    .await;
    let kubeconfig = sim.kubeconfig_path().to_path_buf();

    let run = kubectl_pvc(&kubeconfig, &["inspect", "data", "-n", ns]).await;
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let node = pods
        .get("web-0")
        .await
        .expect("pod")
        .spec
        .and_then(|s| s.node_name)
        .expect("scheduled");
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

    let run = kubectl_pvc(&kubeconfig, &["-n", ns, "inspect", "broken"]).await;
    assert_eq!(
        run.code, 4,
        "a failed phase exits 4; stderr: {}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains(&format!("Provision   fail      {message}\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Bind        pending   waiting for Provision\n"),
        "{}",
        run.stdout
    );

    let run = kubectl_pvc(
        &kubeconfig,
        &["inspect", "later", "--namespace", ns, "-o", "json"],
    )
    .await;
    assert_eq!(
        run.code, 3,
        "a pending phase exits 3; stderr: {}",
        run.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json output");
    assert_eq!(report["outcome"], "pending");
    assert_eq!(report["phases"][0]["status"], "pending");
    assert_eq!(
        report["phases"][0]["detail"],
        "waiting for first consumer to be created before binding"
    );
    assert_eq!(report["phases"][2]["status"], "n/a");

    let run = kubectl_pvc(&kubeconfig, &["ls", "-n", ns]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let names: Vec<&str> = run
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["broken", "data", "later"], "{}", run.stdout);
    assert!(
        run.stdout
            .starts_with(&format!("NAME{}VOLUME\n", " ".repeat(42))),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("data{}pv-data\n", " ".repeat(42))),
        "{}",
        run.stdout
    );

    let run = kubectl_pvc(&kubeconfig, &["ls", "-p", "web-0", "-n", ns, "-o", "wide"]).await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "VOLUME", "STATUS", "CLASS", "CAPACITY", "AGE"]
    );
    assert_eq!(rows.len(), 2, "{}", run.stdout);
    assert_eq!(rows[1][..4], ["data", "pv-data", "Bound", "manual"]);

    // --kubeconfig wins over a KUBECONFIG that points nowhere.
    let flag = kubeconfig.to_string_lossy().into_owned();
    let run = kubectl_pvc(
        Path::new("/nonexistent/kubeconfig"),
        &["ls", "-A", "--kubeconfig", &flag],
    )
    .await;
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(
        run.stdout.starts_with("NAMESPACE   NAME "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("pvc-e2e     later{}<none>\n", " ".repeat(41))),
        "{}",
        run.stdout
    );

    let run = kubectl_pvc(&kubeconfig, &["inspect", "nope", "-n", ns]).await;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        "Error from server (NotFound): persistentvolumeclaims \"nope\" not found\n"
    );
    assert_eq!(run.stdout, "");

    sim.shutdown().await;
}
