//! The `kube-sim` binary: `serve` writes a working kubeconfig, `node fail|restore` drive a
//! simulated node's heartbeats from another process.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;

const TIMEOUT: Duration = Duration::from_secs(20);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

async fn wait_ready(nodes: &Api<Node>, want: &str) {
    let start = Instant::now();
    loop {
        if let Ok(n) = nodes.get("node-1").await
            && ready_status(&n).as_deref() == Some(want)
        {
            return;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "node-1 never became Ready={want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_writes_a_kubeconfig_and_node_fail_and_restore_drive_heartbeats() {
    let bin = env!("CARGO_BIN_EXE_kube-sim");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let _server = Server(
        Command::new(bin)
            .args([
                "serve",
                "--nodes",
                "1",
                "--node-grace",
                "300ms",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !kubeconfig.exists() {
        assert!(
            start.elapsed() < TIMEOUT,
            "kube-sim serve wrote no kubeconfig"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ballast_runtime::tls::install_crypto_provider();
    let client = ballast_runtime::kubeclient::client(Some(&kubeconfig), None)
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client);
    wait_ready(&nodes, "True").await;

    let out = Command::new(bin)
        .args(["node", "fail", "node-1", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "node node-1: heartbeats stopped"
    );
    wait_ready(&nodes, "Unknown").await;

    let out = Command::new(bin)
        .args(["node", "restore", "node-1", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_ready(&nodes, "True").await;
}

/// `kube-sim control-plane -- COMMAND` runs COMMAND against a real control plane (binaries from
/// `E2E_K8S_BINARIES`), hands it the suite's variables, exits with its exit code, and leaves
/// nothing behind: no directory, no process listening. Skips with a message without binaries.
#[test]
fn control_plane_runs_a_command_against_it_and_leaves_nothing_behind() {
    let Some(binaries) = std::env::var_os("E2E_K8S_BINARIES").filter(|v| !v.is_empty()) else {
        eprintln!(
            "SKIPPED: kube-sim control-plane needs Kubernetes binaries (set E2E_K8S_BINARIES)"
        );
        return;
    };
    let bin = env!("CARGO_BIN_EXE_kube-sim");
    let script = "set -e; test -s \"$E2E_KUBECONFIG\"; \
                  grep -q 'server: https://127.0.0.1:' \"$E2E_KUBECONFIG\"; \
                  test \"$E2E_BACKEND\" = control-plane; \
                  echo \"$E2E_KUBECONFIG\"; grep 'server:' \"$E2E_KUBECONFIG\"; exit 7";
    let out = Command::new(bin)
        .args(["control-plane", "--binaries"])
        .arg(&binaries)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the command's own exit code:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let kubeconfig = std::path::PathBuf::from(lines.next().expect("the kubeconfig's path"));
    let server = lines
        .next()
        .and_then(|l| l.trim().strip_prefix("server: https://"))
        .expect("the API server's address")
        .to_owned();
    assert!(
        !kubeconfig.exists(),
        "{} was removed with its directory",
        kubeconfig.display()
    );
    assert!(
        std::net::TcpStream::connect(&server).is_err(),
        "nothing listens on {server} any more"
    );
}
