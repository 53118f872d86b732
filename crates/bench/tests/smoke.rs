//! The suite's smallest run (the transport floor only; no other binary needed), so the bench
//! code cannot rot between real runs: it must start the null webhook on the runtime's TLS +
//! HTTP/2 server, load it, check every answer and write its tables into the given file while
//! keeping what the file held.

use std::process::Command;

#[test]
fn smoke_run_measures_the_floor_and_keeps_the_rest_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    std::fs::write(&out, "# Benchmarks\n\n## Service images\n\nkept\n").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ballast-bench"))
        .arg("--smoke")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let doc = std::fs::read_to_string(&out).unwrap();
    assert!(
        doc.starts_with("# Benchmarks\n\n## Service images\n\nkept\n"),
        "{doc}"
    );
    assert!(
        doc.contains("## Admission against the transport floor"),
        "{doc}"
    );
    let floor = doc
        .lines()
        .find(|l| l.starts_with("| null webhook (floor) | guard: taint-eviction DELETE (6.7 KB) |"))
        .unwrap_or_else(|| panic!("no floor row in:\n{doc}"));
    let rps: f64 = floor.split('|').nth(3).unwrap().trim().parse().unwrap();
    assert!(rps > 0.0, "{floor}");
    assert!(
        doc.contains("| null webhook (floor) | guard: taint-eviction DELETE | 1000/s |"),
        "{doc}"
    );
    // A second run replaces its section instead of adding one.
    let again = Command::new(env!("CARGO_BIN_EXE_ballast-bench"))
        .args(["--smoke", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(again.status.success());
    let doc = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        doc.matches("## Admission against the transport floor")
            .count(),
        1,
        "{doc}"
    );
}
