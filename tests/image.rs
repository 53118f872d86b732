//! The service images: `scripts/image` and the Dockerfile describe the same images, kustomize and
//! deploy/ reference the tags the script writes, and the eviction-guard image — built with
//! buildah, run with podman against the test cluster (kube-sim, or the real control plane) —
//! serves readiness and a real AdmissionReview over TLS, as uid 65532 on a read-only root, with
//! its kubeconfig and certificates mounted.
//!
//! The image scenario needs buildah and podman (Debian: `apt-get install buildah podman runc`)
//! and skips with a message without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ballast_e2e::{SimConfig, TestEnv};
use serde_json::Value;

const SERVICES: [&str; 4] = ["eviction-guard", "pvc-timing", "provisioner", "podmanager"];
/// The size the project promises per service image, as a registry stores it and a node pulls
/// it (the OCI archive: compressed layer, config, manifest).
const MAX_IMAGE_BYTES: u64 = 15 * 1024 * 1024;
/// Container start plus the guard's first list of nodes, pods and its ConfigMap.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A real AdmissionReview the API server sends for `kubectl drain`'s eviction.
const EVICTION: &str = include_str!("../crates/eviction-guard/tests/data/pod-eviction-create.json");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

fn script() -> PathBuf {
    repo().join("scripts/image")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("failed to run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `scripts/image describe SERVICE` as key → value.
fn describe(service: &str) -> BTreeMap<String, String> {
    let out = run(Command::new(script()).args(["describe", service]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The lines of the Dockerfile stage `FROM runtime AS <service>`.
fn dockerfile_stage(dockerfile: &str, service: &str) -> Vec<String> {
    let header = format!("FROM runtime AS {service}");
    dockerfile
        .lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.starts_with("FROM "))
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn dockerfile_and_script_give_each_service_the_same_entrypoint_user_and_ports() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("USER 65532:65532"),
        "the Dockerfile runs as 65532"
    );
    assert!(
        dockerfile.contains("scripts/image rootfs"),
        "the Dockerfile lays out its root with scripts/image rootfs"
    );
    for service in SERVICES {
        let d = describe(service);
        assert_eq!(d["user"], "65532:65532", "{service}");
        let stage = dockerfile_stage(&dockerfile, service);
        assert!(
            stage.contains(&format!("EXPOSE {}", d["ports"])),
            "{service}: the Dockerfile exposes {stage:?}, the script {}",
            d["ports"]
        );
        assert!(
            stage.contains(&format!("ENTRYPOINT [\"{}\"]", d["entrypoint"])),
            "{service}: the Dockerfile's entrypoint is in {stage:?}, the script's {}",
            d["entrypoint"]
        );
    }
}

fn kustomizations(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("readable directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            kustomizations(&path, found);
        } else if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            found.push(path);
        }
    }
}

/// The service an image reference names (`registry/path/<service>:tag`).
fn service_of(reference: &str) -> &str {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    name.split(':').next().unwrap_or(name)
}

#[test]
fn kustomize_and_deploy_reference_the_tags_the_script_writes() {
    let tags: BTreeMap<&str, Vec<String>> = SERVICES
        .iter()
        .map(|s| {
            let d = describe(s);
            (*s, d["tags"].split(' ').map(str::to_owned).collect())
        })
        .collect();
    let mut files = Vec::new();
    kustomizations(&repo().join("kustomize"), &mut files);
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("kustomization readable");
        let k: serde_yaml::Value = serde_yaml::from_str(&text).expect("kustomization is YAML");
        let Some(images) = k.get("images").and_then(|i| i.as_sequence()) else {
            continue;
        };
        for image in images {
            let name = image["name"].as_str().expect("images[].name");
            let new_name = image
                .get("newName")
                .and_then(|n| n.as_str())
                .unwrap_or(name);
            let tag = image["newTag"].as_str().expect("images[].newTag");
            let reference = format!("{new_name}:{tag}");
            let service = service_of(&reference);
            let Some(expected) = tags.get(service) else {
                panic!("{}: {reference} is not a Ballast service", file.display());
            };
            assert!(
                expected.contains(&reference),
                "{}: {reference} is not a tag scripts/image writes ({expected:?})",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= SERVICES.len(),
        "every service has an images: entry"
    );
    for entry in std::fs::read_dir(repo().join("deploy"))
        .expect("deploy/")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("ballast-dev/")) {
            let Some(reference) = line.trim().strip_prefix("image: ") else {
                continue;
            };
            let service = service_of(reference);
            assert!(
                tags.get(service)
                    .is_some_and(|t| t.iter().any(|t| t == reference)),
                "{}: {reference} is not a tag scripts/image writes",
                entry.path().display()
            );
        }
    }
}

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The environment `scripts/image env` prints: podman and buildah on the script's store.
fn store_env() -> Vec<(String, String)> {
    let out = run(Command::new(script()).arg("env"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn podman(env: &[(String, String)], args: &[&str]) -> Output {
    run(Command::new("podman")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args))
}

/// A running container, removed when dropped (also when the test fails).
struct Container {
    name: String,
    env: Vec<(String, String)>,
}

impl Container {
    fn logs(&self) -> String {
        let out = Command::new("podman")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["logs", &self.name])
            .output();
        match out {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(no logs: {e})"),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Makes `path` readable by the container's user (65532), which owns nothing on this host.
fn world_readable(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("failed to chmod {}: {e}", path.display()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_guard_image_answers_admission_over_tls_as_65532_on_a_read_only_root() {
    if !installed("buildah") || !installed("podman") {
        ballast_e2e::record_skip(
            "any",
            "the image scenario needs buildah and podman (Debian: apt-get install buildah podman runc)",
        );
        return;
    }
    let version = describe("eviction-guard")["tags"]
        .split(' ')
        .next()
        .expect("a tag")
        .to_owned();
    let archives = tempfile::tempdir().expect("temp dir");
    // cargo test's per-package variables would change build scripts' inputs (ring's and cc's)
    // and rebuild the release binary a shell already built.
    let mut build = Command::new(script());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        if per_package
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
                "LD_LIBRARY_PATH",
            ]
            .contains(&name.as_ref())
        {
            build.env_remove(name.as_ref());
        }
    }
    run(build
        .arg("--oci-archive")
        .arg(archives.path())
        .arg("eviction-guard"));
    let store = store_env();

    // what the image says about itself
    let inspect = podman(&store, &["image", "inspect", &version]);
    let inspect: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    let image = &inspect[0];
    let config = &image["Config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/eviction-guard"])
    );
    for port in ["8080/tcp", "8443/tcp", "9090/tcp"] {
        assert!(
            config["ExposedPorts"].get(port).is_some(),
            "exposes {port}: {config}"
        );
    }
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/ballast-dev/ballast"
    );
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default();
    assert!(
        revision.len() >= 40 || revision == "unknown",
        "revision label is a commit: {revision:?}"
    );
    let unpacked = image["Size"].as_u64().expect("image size");
    let archive = archives.path().join("eviction-guard.tar");
    let packed = std::fs::metadata(&archive)
        .unwrap_or_else(|e| panic!("no OCI archive at {}: {e}", archive.display()))
        .len();
    eprintln!("{version}: {packed} bytes as an OCI archive, {unpacked} unpacked");
    assert!(
        packed <= MAX_IMAGE_BYTES,
        "{version} is {packed} bytes to pull, over {MAX_IMAGE_BYTES}"
    );

    let env = TestEnv::start(SimConfig::default().nodes(3)).await;

    // kubeconfig and serving certificate, mounted read-only. The API server (kube-sim, or the
    // suite's control plane, both on loopback with `localhost` in their certificates) is named
    // `localhost`, so the static binary resolves a name through the container's /etc/hosts.
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = std::fs::read_to_string(&env.kubeconfig)
        .expect("the cluster's kubeconfig")
        .replace("https://127.0.0.1:", "https://localhost:");
    assert!(
        kubeconfig.contains("https://localhost:") || !env.on_sim(),
        "{kubeconfig}"
    );
    let kubeconfig_path = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig).expect("kubeconfig written");
    world_readable(&kubeconfig_path, 0o644);
    let certs = dir.path().join("certs");
    let cert =
        ballast_runtime::tls::generate(&["127.0.0.1", "localhost"]).expect("serving certificate");
    let (crt, key) = cert.write_to(&certs).expect("certificate written");
    world_readable(&certs, 0o755);
    world_readable(&crt, 0o644);
    world_readable(&key, 0o644);

    let (webhook, admin, grpc) = (free_port(), free_port(), free_port());
    let container = Container {
        name: format!("ballast-image-test-{}", env.namespace),
        env: store.clone(),
    };
    let kubeconfig_mount = format!("{}:/etc/ballast/kubeconfig:ro", kubeconfig_path.display());
    let certs_mount = format!("{}:/etc/ballast/certs:ro", certs.display());
    let (webhook_port, admin_port, grpc_port) =
        (webhook.to_string(), admin.to_string(), grpc.to_string());
    podman(
        &store,
        &[
            "run",
            "--detach",
            "--name",
            &container.name,
            "--network",
            "host",
            "--read-only",
            "--volume",
            &kubeconfig_mount,
            "--volume",
            &certs_mount,
            "--env",
            "KUBECONFIG=/etc/ballast/kubeconfig",
            "--env",
            "CERT_DIR=/etc/ballast/certs",
            &version,
            "--bind-address",
            "127.0.0.1",
            "--webhook-port",
            &webhook_port,
            "--admin-port",
            &admin_port,
            "--grpc-port",
            &grpc_port,
            "--pod-namespace",
            &env.namespace,
        ],
    );

    // ready: the guard reached the API server by name and synced its caches
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert.ca_pem.as_bytes()).expect("CA certificate"),
        )
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    let ready = tokio::time::timeout(READY_TIMEOUT, async {
        loop {
            if let Ok(r) = http.get(&readyz).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if ready.is_err() {
        panic!(
            "the container was not ready within {READY_TIMEOUT:?}; its logs:\n{}",
            container.logs()
        );
    }

    // runs as 65532 on a read-only root
    let pid = podman(
        &store,
        &["inspect", "--format", "{{.State.Pid}}", &container.name],
    );
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let ids = |field: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    assert_eq!(ids("Uid:"), ["65532"; 4], "{status}");
    assert_eq!(ids("Gid:"), ["65532"; 4], "{status}");
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("process mounts");
    let root_options = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .and_then(|f| {
            f.get(5)
                .map(|o| o.split(',').map(str::to_owned).collect::<Vec<_>>())
        })
        .unwrap_or_else(|| panic!("no root mount in {mountinfo}"));
    assert!(
        root_options.iter().any(|o| o == "ro"),
        "root mounted {root_options:?}"
    );

    // a real AdmissionReview over TLS, verified against the mounted certificate's CA
    let review: Value = serde_json::from_str(EVICTION).expect("fixture JSON");
    let uid = review["request"]["uid"].clone();
    let resp = http
        .post(format!("https://localhost:{webhook}/validate"))
        .json(&review)
        .send()
        .await
        .expect("the webhook answers over TLS");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("AdmissionReview JSON");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{body}");
    assert_eq!(body["kind"], "AdmissionReview", "{body}");
    assert_eq!(body["response"]["uid"], uid, "{body}");
    assert_eq!(
        body["response"]["allowed"], true,
        "no node failed, the drain may go on: {body}"
    );

    drop(container);
    env.shutdown().await;
}
