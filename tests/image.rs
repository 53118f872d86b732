//! The service images: `scripts/image` and the Dockerfile describe the same images, kustomize and
//! deploy/ reference the tags the script writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SERVICES: [&str; 4] = ["eviction-guard", "pvc-timing", "provisioner", "podmanager"];

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
