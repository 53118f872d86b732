//! The krew manifest in deploy/krew/ is what `deploy/krew/package.sh` writes: it must stay a
//! valid krew Plugin for this crate's version, installing this binary on every platform.

use serde_yaml::Value;

fn manifest() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/krew/pvc.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/krew/pvc.yaml exists");
    serde_yaml::from_str(&text).expect("the manifest is YAML")
}

#[test]
fn krew_manifest_names_the_pvc_plugin_at_this_crate_version() {
    let m = manifest();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    // krew installs it as kubectl-pvc, which is what `kubectl pvc` looks up.
    assert_eq!(m["metadata"]["name"], "pvc");
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        m["spec"]["version"].as_str(),
        Some(version.as_str()),
        "stale manifest: run deploy/krew/package.sh"
    );
    assert!(
        m["spec"]["shortDescription"]
            .as_str()
            .is_some_and(|d| d.len() <= 50)
    );
}

#[test]
fn every_krew_platform_points_at_its_own_archive_and_checksum() {
    let m = manifest();
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let platforms = m["spec"]["platforms"].as_sequence().expect("platforms");
    assert!(!platforms.is_empty());
    for p in platforms {
        let labels = &p["selector"]["matchLabels"];
        let (os, arch) = (
            labels["os"].as_str().expect("os"),
            labels["arch"].as_str().expect("arch"),
        );
        let uri = p["uri"].as_str().expect("uri");
        assert!(
            uri.ends_with(&format!("/{version}/kubectl-pvc-{os}-{arch}.tar.gz")),
            "{uri}"
        );
        let sha = p["sha256"].as_str().expect("sha256");
        assert!(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{sha}"
        );
        assert_eq!(p["bin"], "kubectl-pvc");
    }
}
