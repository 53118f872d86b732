//! Child processes: the binaries under test, started with their documented flags, pinned to cores
//! with `taskset`, measured from `/proc`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long a service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the binaries are and which cores the servers and the load get.
#[derive(Clone, Debug)]
pub struct Env {
    pub bin_dir: PathBuf,
    /// The core servers under test are pinned to (None: not pinned, one-core machine).
    pub server_core: Option<usize>,
    /// The core of the load generator and of everything else.
    pub load_core: Option<usize>,
    pub work: PathBuf,
    /// Extra environment of every child (e.g. `MALLOC_ARENA_MAX` for a memory variant).
    pub child_env: Vec<(String, String)>,
}

impl Env {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// Pins the calling thread (and so every thread it starts later) to `core`.
pub fn pin_self(core: usize) -> anyhow::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    rustix::thread::sched_setaffinity(None, &set).context("failed to set CPU affinity")
}

/// A running child; killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

/// Which cores a child may use.
#[derive(Clone, Copy, Debug)]
pub enum Cores {
    One(usize),
    Any,
}

/// Starts `bin args` on `cores`, its stdout and stderr in `<work>/<name>.log`.
pub fn spawn(
    env: &Env,
    name: &str,
    bin: &Path,
    args: &[String],
    cores: Cores,
) -> anyhow::Result<Proc> {
    let log = env.work.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).with_context(|| format!("failed to create {log:?}"))?;
    let err = out.try_clone()?;
    let all = (0..rustix_cores()).map(|c| c.to_string());
    let list = match cores {
        Cores::One(c) => c.to_string(),
        Cores::Any => all.collect::<Vec<_>>().join(","),
    };
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(list).arg(bin).args(args);
    cmd.envs(env.child_env.iter().map(|(k, v)| (k, v)));
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("failed to start {}", bin.display()))?;
    let pid = child.id().context("child exited at once")?;
    Ok(Proc {
        name: name.to_owned(),
        child,
        pid,
        log,
    })
}

/// Cores of the machine (not of this process, which may be pinned).
pub fn rustix_cores() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or(1)
}

/// The number of CPUs in a list such as `0-3,5`.
pub fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => n += b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1,
            None => {
                part.parse::<usize>().ok()?;
                n += 1
            }
        }
    }
    Some(n)
}

impl Proc {
    /// Fails with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ends:\n{}",
                self.name,
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    pub fn stats(&self) -> anyhow::Result<ProcStats> {
        ProcStats::read(self.pid)
    }

    /// Resets the peak RSS (VmHWM) to the current RSS.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5")
            .context("failed to reset the peak RSS (clear_refs)")
    }

    /// Waits until the process's log holds `line` (what it prints once it serves), failing
    /// with the log's tail when it exits first or `limit` passes.
    pub async fn wait_for_log(&mut self, line: &str, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while !std::fs::read_to_string(&self.log)?.contains(line) {
            self.check_alive()?;
            if started.elapsed() > limit {
                bail!(
                    "{} did not start in {limit:?}: {}",
                    self.name,
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Polls `http://127.0.0.1:<admin>/readyz` until it answers 200.
    pub async fn wait_ready(&mut self, admin_port: u16) -> anyhow::Result<()> {
        let url = "/readyz";
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok(200) = http_get_status(admin_port, url).await {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} not ready after {READY_TIMEOUT:?}; its log ends:\n{}",
                    self.name,
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A plain-HTTP GET on loopback with HTTP/1.1, returning the status code.
pub async fn http_get_status(port: u16, path: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await??;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(32)]).into_owned();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head:?}"))
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Memory and CPU of a process from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// The anonymous part of the RSS (heap, stacks): what the process allocated, apart from
    /// the pages of its executable and libraries.
    pub anon_kib: u64,
    /// User + system CPU time.
    pub cpu: Duration,
}

impl ProcStats {
    pub fn read(pid: u32) -> anyhow::Result<ProcStats> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("failed to read /proc/{pid}/status"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("failed to read /proc/{pid}/stat"))?;
        parse_stats(&status, &stat, rustix::param::clock_ticks_per_second())
            .with_context(|| format!("unexpected /proc/{pid} contents"))
    }
}

/// Parses VmRSS and VmHWM (kB) from `status` and utime + stime (ticks) from `stat`.
pub fn parse_stats(status: &str, stat: &str, ticks_per_second: u64) -> Option<ProcStats> {
    let kib = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are 12 and 13 after the name (state is field 3).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let ticks = ticks_per_second.max(1);
    Some(ProcStats {
        rss_kib: kib("VmRSS:")?,
        hwm_kib: kib("VmHWM:")?,
        anon_kib: kib("RssAnon:").unwrap_or(0),
        cpu: Duration::from_millis((utime + stime) * 1000 / ticks),
    })
}

/// Waits until the RSS of `proc` stops moving (two samples 500 ms apart within 1 %) or
/// `limit` passes, and returns the last reading.
pub async fn settle(proc: &Proc, limit: Duration) -> anyhow::Result<ProcStats> {
    let started = Instant::now();
    let mut last = proc.stats()?;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = proc.stats()?;
        let diff = now.rss_kib.abs_diff(last.rss_kib);
        if diff * 100 <= last.rss_kib || started.elapsed() > limit {
            return Ok(now);
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_peak_and_cpu_from_proc() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   17285 kB\nRssAnon:\t    6000 kB\n";
        let stat = "42 (eviction guard) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 3 0";
        let s = parse_stats(status, stat, 100).unwrap();
        assert_eq!(s.rss_kib, 17285);
        assert_eq!(s.hwm_kib, 20480);
        assert_eq!(s.anon_kib, 6000);
        assert_eq!(s.cpu, Duration::from_secs(2));
        assert_eq!(parse_stats("VmRSS: 1 kB\n", stat, 100), None);
    }

    #[test]
    fn counts_cpus_in_a_list() {
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,5"), Some(5));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
