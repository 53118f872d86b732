//! Generated artefacts stay current: the committed CRD is what `podmanager crd` prints, and the
//! sample parses as a PodManager.

use std::path::PathBuf;

use podmanager::PodManager;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn committed_crd_equals_what_the_library_renders() {
    let path = repo_file("../../deploy/crds/podmanager.yaml");
    let committed = std::fs::read_to_string(&path).expect("read deploy/crds/podmanager.yaml");
    let generated = podmanager::crd::crd_yaml().expect("render CRD");
    assert!(
        committed == generated,
        "deploy/crds/podmanager.yaml is stale: run `cargo run -p podmanager -- crd > deploy/crds/podmanager.yaml`"
    );
}

#[test]
fn podmanager_crd_subcommand_prints_the_committed_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podmanager"))
        .arg("crd")
        .output()
        .expect("run podmanager crd");
    assert!(out.status.success(), "podmanager crd failed: {out:?}");
    let committed = std::fs::read_to_string(repo_file("../../deploy/crds/podmanager.yaml"))
        .expect("read deploy/crds/podmanager.yaml");
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

#[test]
fn sample_is_the_seeds_podmanager_with_its_app_label() {
    let text = std::fs::read_to_string(repo_file("config/samples/apps_v1_podmanager.yaml"))
        .expect("read sample");
    let pm: PodManager = serde_yaml::from_str(&text).expect("sample parses as a PodManager");
    assert_eq!(pm.metadata.name.as_deref(), Some("my-pod-manager"));
    assert_eq!(pm.spec.replicas, 3);
    assert_eq!(pm.spec.image, "nginx:1.21");
    assert_eq!(
        pm.metadata
            .labels
            .unwrap_or_default()
            .get("app")
            .map(String::as_str),
        Some("my-app")
    );
}
