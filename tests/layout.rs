//! The shape of the code, for every crate of the workspace: no production source file over 700
//! lines, and no import circle between a crate's top-level modules (in kube-sim: store,
//! resources, validation and defaults at the bottom, admission and controllers on narrow
//! interfaces, the API verbs above them, the HTTP server on top).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a production source file may be.
const MAX_LINES: usize = 700;

/// Every crate of the workspace: the directories under `crates/`.
fn crates() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("crates/ is readable")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    out.sort();
    assert!(
        out.len() >= 9,
        "found only {} crates in {}",
        out.len(),
        root.display()
    );
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Production sources: `src/**/*.rs` except test modules (`tests.rs`, anything under `tests/`).
fn production_files(krate: &Path) -> Vec<PathBuf> {
    let src = krate.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| {
        let rel = f.strip_prefix(&src).unwrap_or(f);
        f.file_name().is_some_and(|n| n != "tests.rs")
            && !rel.components().any(|c| c.as_os_str() == "tests")
    });
    files.sort();
    files
}

#[test]
fn no_production_file_is_over_700_lines() {
    let mut checked = 0;
    let mut too_long = Vec::new();
    for krate in crates() {
        for file in production_files(&krate) {
            let text = std::fs::read_to_string(&file).expect("source file is readable");
            let lines = text.lines().count();
            checked += 1;
            if lines > MAX_LINES {
                too_long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(checked > 100, "found only {checked} source files");
    assert!(
        too_long.is_empty(),
        "split these by role, under {MAX_LINES} lines each: {too_long:#?}"
    );
}

/// The top-level modules a source text names through `crate::` paths.
fn crate_paths(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end]
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or_default())
                    .collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                vec![&rest[..end]]
            };
            for name in names {
                // A name that is no module is an item of the crate root.
                let target = if modules.contains(name) { name } else { "lib" };
                out.insert(target.to_string());
            }
        }
    }
    out
}

/// Modules on an import circle (strongly connected components of more than one module).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reaches = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|m| (m, reaches(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for (m, r) in &reach {
        if done.contains(*m) || !r.contains(*m) {
            continue;
        }
        let circle: Vec<String> = reach
            .iter()
            .filter(|(o, ro)| r.contains(**o) && ro.contains(*m))
            .map(|(o, _)| (*o).clone())
            .collect();
        done.extend(circle.iter().cloned());
        out.push(circle);
    }
    out
}

/// A crate's top-level modules and the ones each names through `crate::` paths.
fn module_graph(krate: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let src = krate.join("src");
    let files = production_files(krate);
    let module_of = |f: &Path| -> String {
        let rel = f.strip_prefix(&src).unwrap_or(f);
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy());
        let first = first.unwrap_or_default();
        first.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|f| module_of(f))
        .filter(|m| m != "lib" && m != "main")
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(file);
        if from == "main" || from == "lib" || file.starts_with(src.join("bin")) {
            // binaries: `crate::` there is another crate; the crate root declares and wires its
            // modules, so it sits above all of them
            continue;
        }
        let text = std::fs::read_to_string(file).expect("source file is readable");
        // Unit tests inside a production file may reach anywhere.
        let text = text
            .split("#[cfg(test)]\nmod tests {")
            .next()
            .unwrap_or_default();
        let targets = crate_paths(text, &modules);
        let entry = edges.entry(from.clone()).or_default();
        entry.extend(targets.into_iter().filter(|t| *t != from));
    }
    edges
}

#[test]
fn no_crate_has_an_import_circle_between_its_modules() {
    let mut read = 0;
    let mut found = Vec::new();
    for krate in crates() {
        let edges = module_graph(&krate);
        read += edges.values().map(BTreeSet::len).sum::<usize>();
        for circle in circles(&edges) {
            found.push(format!("{}: {circle:?}", krate.display()));
        }
    }
    let sim = module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/kube-sim"));
    assert!(
        sim.get("server").is_some_and(|e| e.contains("apiserver")) && read > 50,
        "the module graphs were not read: {sim:#?}"
    );
    assert!(found.is_empty(), "import circles: {found:#?}");
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let edge = |a: &str, b: &str| (a.to_string(), BTreeSet::from([b.to_string()]));
    let edges = BTreeMap::from([
        edge("a", "b"),
        edge("b", "c"),
        edge("c", "a"),
        edge("d", "a"),
    ]);
    assert_eq!(circles(&edges), vec![vec!["a", "b", "c"]]);
    let modules = BTreeSet::from(["store".to_string(), "errors".to_string()]);
    let text = "use crate::store::{Store, object_rv};\nuse crate::{errors, store};\nlet x = crate::HEARTBEAT;";
    assert_eq!(
        crate_paths(text, &modules),
        BTreeSet::from(["store".into(), "errors".into(), "lib".into()])
    );
}
