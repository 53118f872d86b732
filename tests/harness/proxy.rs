//! A TCP proxy in front of the API server for one service, to inject network faults into its
//! view of the cluster alone: cut (every open connection closed, new ones refused, until
//! restored) or slow (every byte from the API server held back a fixed time, in order, without
//! limiting throughput). TLS passes through untouched, so the service talks to the real API
//! server, certificate and all, at the proxy's loopback address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks read from one side at a time.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Cut,
    Delay(Duration),
}

/// A running proxy; dropped, it stops and closes every connection.
pub struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// Bumped to close every open connection.
    cuts: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let (cuts, _) = watch::channel(0u64);
        let (m, c) = (mode.clone(), cuts.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let now = *m.lock().unwrap_or_else(|e| e.into_inner());
                if now == Mode::Cut {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, upstream, m.clone(), c.subscribe()));
            }
        });
        FaultProxy {
            addr,
            mode,
            cuts,
            accept,
        }
    }

    /// Where the service connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones until [`FaultProxy::restore`].
    pub fn cut(&self) {
        self.set(Mode::Cut);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Holds every byte from the API server back `by` (a slow API server), until restored.
    pub fn delay(&self, by: Duration) {
        self.set(Mode::Delay(by));
    }

    /// Back to forwarding as it comes.
    pub fn restore(&self) {
        self.set(Mode::Pass);
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    /// A client of the scenario's cluster that connects through a new proxy, with the
    /// scenario's admin credentials; `None` (after recording the skip) when the API server is
    /// not on loopback, where its certificate may not name the proxy's address.
    pub async fn in_front_of(
        env: &crate::TestEnv,
        step: &str,
    ) -> Option<(FaultProxy, kube::Client)> {
        let mut config = crate::config_from(&env.kubeconfig).await;
        let host = config.cluster_url.host().unwrap_or_default().to_owned();
        let port = config.cluster_url.port_u16().unwrap_or(443);
        let upstream = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .ok()
            .and_then(|mut addrs| addrs.find(|a| a.ip().is_loopback()));
        let Some(upstream) = upstream else {
            env.skip(&format!(
                "{step} (its fault proxy needs an API server on loopback, not {host})"
            ));
            return None;
        };
        let proxy = FaultProxy::start(upstream).await;
        config.cluster_url = format!("https://{}", proxy.addr())
            .parse()
            .expect("the proxy's URL");
        config.default_retry = false;
        let client = kube::Client::try_from(config).expect("a client through the proxy");
        Some((proxy, client))
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

/// One connection: client to server as it comes, server to client through a delay line whose
/// bytes are all delivered before the connection closes (unless cut).
async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    mut cuts: watch::Receiver<u64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let (line, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let up = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down_read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let hold = match *mode.lock().unwrap_or_else(|e| e.into_inner()) {
                Mode::Delay(d) => d,
                _ => Duration::ZERO,
            };
            if line
                .send((Instant::now() + hold, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
        // `line` dropped here: the writer drains what is still held back, then stops.
    };
    let down_write = async move {
        while let Some((at, bytes)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if client_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = client_write.shutdown().await;
    };
    let down = async move {
        tokio::join!(down_read, down_write);
    };
    tokio::select! {
        _ = async move { tokio::join!(up, down) } => {}
        _ = cuts.changed() => {}
    }
}

/// Asserts that a watch of `api` resumed from `resource_version` is answered `410` (the
/// client must list again): the fault a scenario injected with
/// [`crate::TestEnv::expire_watches`] is the one the services meet.
pub async fn assert_resume_expired<K>(api: &kube::Api<K>, resource_version: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};
    let answer = match api
        .watch(&WatchParams::default().timeout(5), resource_version)
        .await
    {
        Err(kube::Error::Api(status)) => Some(status.code),
        Err(other) => panic!("resuming a watch from {resource_version} failed: {other}"),
        Ok(stream) => match stream.boxed().next().await {
            Some(Ok(WatchEvent::Error(e))) => Some(e.code),
            Some(Err(kube::Error::Api(status))) => Some(status.code),
            _ => None,
        },
    };
    assert_eq!(
        answer,
        Some(410),
        "a watch resumed from {resource_version} should be expired"
    );
}
