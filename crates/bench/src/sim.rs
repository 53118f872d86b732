//! kube-sim as a child process, a client to it, and a TCP proxy in front of it whose
//! connections can be cut (to make the services' watches reconnect and, with a stale
//! resourceVersion, relist).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;

use crate::procs::{Cores, Env, Proc, ProcStats, spawn};

/// How long kube-sim may take to write its kubeconfig.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Sim {
    pub proc: Proc,
    pub kubeconfig: PathBuf,
    pub client: Client,
    pub port: u16,
}

impl Sim {
    /// `kube-sim serve` with `flags` (e.g. `--nodes 3 --pv-binder`), on any core.
    pub async fn start(env: &Env, name: &str, flags: &[&str]) -> anyhow::Result<Sim> {
        let kubeconfig = env.work.join(format!("{name}.kubeconfig"));
        let _ = std::fs::remove_file(&kubeconfig);
        let mut args = vec![
            "serve".to_owned(),
            "--kubeconfig".to_owned(),
            kubeconfig.display().to_string(),
        ];
        args.extend(flags.iter().map(|s| (*s).to_owned()));
        let mut proc = spawn(env, name, &env.bin("kube-sim"), &args, Cores::Any)?;
        // The kubeconfig is written once the server listens; the log line follows it.
        proc.wait_for_log("kube-sim serving at", START_TIMEOUT)
            .await?;
        let client = client(&kubeconfig).await?;
        let port = server_port(&kubeconfig)?;
        Ok(Sim {
            proc,
            kubeconfig,
            client,
            port,
        })
    }

    pub fn stats(&self) -> anyhow::Result<ProcStats> {
        self.proc.stats()
    }

    /// A copy of the kubeconfig pointing at `port` (a proxy) instead of the simulator.
    pub fn kubeconfig_via(&self, port: u16, path: &Path) -> anyhow::Result<PathBuf> {
        let text = std::fs::read_to_string(&self.kubeconfig)?;
        let from = format!(":{}", self.port);
        anyhow::ensure!(
            text.contains(&from),
            "kubeconfig names no port {}",
            self.port
        );
        std::fs::write(path, text.replace(&from, &format!(":{port}")))?;
        Ok(path.to_path_buf())
    }
}

/// A kube client from a kubeconfig file.
pub async fn client(path: &Path) -> anyhow::Result<Client> {
    let file = Kubeconfig::read_from(path)?;
    let mut config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .context("failed to read the simulator's kubeconfig")?;
    config.read_timeout = Some(Duration::from_secs(300));
    Ok(Client::try_from(config)?)
}

fn server_port(kubeconfig: &Path) -> anyhow::Result<u16> {
    let file = Kubeconfig::read_from(kubeconfig)?;
    let server = file
        .clusters
        .iter()
        .find_map(|c| c.cluster.as_ref()?.server.clone())
        .context("kubeconfig without a server")?;
    let uri: http::Uri = server.parse()?;
    uri.port_u16().context("server URL without a port")
}

/// A TCP proxy on loopback to `upstream`. `cut` closes every open connection.
#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    /// Bytes sent from upstream to clients since start.
    pub downstream_bytes: Arc<AtomicU64>,
    /// While set, new connections are closed at once (the API server looks down).
    paused: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: u16) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (tx, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(tx);
        let downstream_bytes = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, bytes, s, p) = (
            generation.clone(),
            downstream_bytes.clone(),
            stop.clone(),
            paused.clone(),
        );
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                if p.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let mut cut = g.subscribe();
                let (bytes, s) = (bytes.clone(), s.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::io::copy(&mut cr, &mut sw);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let n = sr.read(&mut buf).await?;
                            if n == 0 {
                                return std::io::Result::Ok(());
                            }
                            cw.write_all(&buf[..n]).await?;
                            bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut.changed() => {}
                        _ = s.cancelled() => {}
                    }
                });
            }
        });
        Ok(Proxy {
            port,
            generation,
            downstream_bytes,
            paused,
            stop,
        })
    }

    /// Cuts every connection and refuses new ones until [`Proxy::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
        self.cut();
    }

    pub fn resume(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Closes every connection open now; clients reconnect through the proxy.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn bytes(&self) -> u64 {
        self.downstream_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if Arc::strong_count(&self.generation) == 1 {
            self.stop.cancel();
        }
    }
}
