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

/// The linux/amd64 archive `scripts/image --oci-archive DIR kubectl-pvc` builds from this tree
/// (a static release build: minutes the first time, seconds once built) is the one the
/// manifest names: same sha256, and it holds the plugin, its licence and the completion
/// helper. A stale manifest fails here: `just krew` rewrites it.
#[test]
fn the_manifest_checksum_is_that_of_the_archive_scripts_image_builds() {
    use std::process::Command;
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        eprintln!("SKIPPED: the manifest's built archive is linux/amd64; this is another platform");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut build = Command::new(root.join("scripts/image"));
    // cargo test's per-package variables would change build scripts' inputs and rebuild the
    // release binary a shell already built (as in tests/image.rs).
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
    let out = build
        .arg("--oci-archive")
        .arg(dir.path())
        .arg("kubectl-pvc")
        .output()
        .expect("scripts/image runs");
    assert!(
        out.status.success(),
        "scripts/image kubectl-pvc failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = dir.path().join("kubectl-pvc-linux-amd64.tar.gz");
    let listing = Command::new("tar")
        .arg("tzf")
        .arg(&archive)
        .output()
        .expect("tar runs");
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "LICENSE\nkubectl-pvc\nkubectl_complete-pvc\n"
    );
    let sha = Command::new("sha256sum")
        .arg(&archive)
        .output()
        .expect("sha256sum runs");
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    let m = manifest();
    let linux = m["spec"]["platforms"]
        .as_sequence()
        .expect("platforms")
        .iter()
        .find(|p| {
            p["selector"]["matchLabels"]["os"] == "linux"
                && p["selector"]["matchLabels"]["arch"] == "amd64"
        })
        .expect("a linux/amd64 entry")
        .clone();
    assert_eq!(
        linux["sha256"].as_str(),
        Some(sha.as_str()),
        "stale krew manifest: run `just krew` (scripts/image, then deploy/krew/package.sh manifest)"
    );
}

#[test]
fn the_manifest_tells_krew_users_how_to_enable_completion() {
    let m = manifest();
    let caveats = m["spec"]["caveats"].as_str().expect("caveats");
    assert!(
        caveats
            .contains(r#"ln -sf kubectl-pvc "${KREW_ROOT:-$HOME/.krew}/bin/kubectl_complete-pvc""#),
        "{caveats}"
    );
}
