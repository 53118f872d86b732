//! Ballast's benchmark suite. It drives the services' binaries as black boxes: starts kube-sim and
//! the services as child processes with their documented flags, loads them over the network
//! (HTTP/2 over TLS for the webhooks, the Kubernetes API for the controllers), reads their CPU
//! and memory from `/proc`, and writes one markdown section per area into BENCHMARKS.md.

pub mod apiserver;
pub mod areas;
pub mod cluster;
pub mod fixtures;
pub mod kubeops;
pub mod load;
pub mod null_webhook;
pub mod plan;
pub mod procs;
pub mod report;
pub mod services;
pub mod sim;
pub mod stats;

use std::time::Duration;

/// The machine and its load, for the head of each section.
pub fn machine_line(area_took: Duration) -> String {
    let cores = procs::rustix_cores();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "Measured {} on {cores} cores ({cpu}), {:.1} GiB memory; load average {} at the end \
         (1, 5, 15 min); the area took {:.0} s.",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        mem_kib as f64 / 1024.0 / 1024.0,
        load.join(" / "),
        area_took.as_secs_f64()
    )
}
