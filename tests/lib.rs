//! End-to-end harness: a [`TestEnv`] per test — kube-sim started in-process (or the cluster named
//! by `E2E_KUBECONFIG`) and a fresh random namespace — plus polling helpers.
//!
//! Tests in one file run in parallel in one process: every `TestEnv` has its own simulator on its
//! own port, and its own namespace. Scenario steps that need the simulator (failing a node) go
//! through [`TestEnv::sim_or_skip`], which says clearly why it skips on a real cluster.
//!
//! Webhooks served in-process listen where [`TestEnv::webhook_host_or_skip`] says: loopback on
//! kube-sim; on a real cluster the address named by `E2E_WEBHOOK_HOST` (one the API server can
//! reach), or the scenario skips with a message when it is unset.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

pub use kube_sim::{KubeSim, SimConfig};

/// Environment variable naming a real cluster's kubeconfig; unset means kube-sim.
pub const E2E_KUBECONFIG: &str = "E2E_KUBECONFIG";
/// Environment variable naming the address (IP or DNS name of this host) a real cluster's API
/// server calls to reach webhooks the scenarios serve in-process, e.g. `127.0.0.1` when the API
/// server runs on this machine. Ignored on kube-sim, which always calls loopback.
pub const E2E_WEBHOOK_HOST: &str = "E2E_WEBHOOK_HOST";
/// Poll period of [`wait_for`]: short, the simulator reacts in about 100ms.
const POLL: Duration = Duration::from_millis(50);

/// One test's cluster and namespace.
pub struct TestEnv {
    /// Admin client for the cluster.
    pub client: Client,
    /// A namespace created for this test (`e2e-xxxxxx`).
    pub namespace: String,
    /// Kubeconfig of the cluster (for kubectl and services started in-process).
    pub kubeconfig: PathBuf,
    /// The simulator, unless running against a real cluster.
    pub sim: Option<KubeSim>,
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rng.random_range(0..27)]))
        .collect()
}

impl TestEnv {
    /// Starts kube-sim with `cfg` (or connects to `E2E_KUBECONFIG`, ignoring `cfg`) and creates
    /// a fresh namespace. Panics with the reason when the environment cannot be set up.
    pub async fn start(cfg: SimConfig) -> TestEnv {
        let (client, kubeconfig, sim) = match std::env::var_os(E2E_KUBECONFIG) {
            Some(path) => {
                let path = PathBuf::from(path);
                let kc = kube::config::Kubeconfig::read_from(&path)
                    .unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()));
                let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap_or_else(|e| panic!("failed to load {}: {e}", path.display()));
                // As kube-sim's clients: no silent retries of 429s, tests assert on them.
                config.default_retry = false;
                let client = Client::try_from(config).unwrap_or_else(|e| {
                    panic!("failed to build a client for {}: {e}", path.display())
                });
                (client, path, None)
            }
            None => {
                let sim = KubeSim::start(cfg)
                    .await
                    .unwrap_or_else(|e| panic!("failed to start kube-sim: {e}"));
                (sim.client(), sim.kubeconfig_path().to_path_buf(), Some(sim))
            }
        };
        let namespace = format!("e2e-{}", random_suffix());
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(namespace.clone()),
                labels: Some([("ballast.dev/e2e".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("failed to create namespace {namespace}: {e}"));
        TestEnv {
            client,
            namespace,
            kubeconfig,
            sim,
        }
    }

    /// Whether this runs on kube-sim.
    pub fn on_sim(&self) -> bool {
        self.sim.is_some()
    }

    /// The simulator, or `None` after printing why `step` is skipped on a real cluster.
    pub fn sim_or_skip(&self, step: &str) -> Option<&KubeSim> {
        if self.sim.is_none() {
            eprintln!("SKIPPED: {step}: needs kube-sim (E2E_KUBECONFIG points at a real cluster)");
        }
        self.sim.as_ref()
    }

    /// Where to serve a webhook the API server must call, or `None` after printing why `step` is
    /// skipped (a real cluster and no `E2E_WEBHOOK_HOST`).
    pub fn webhook_host_or_skip(&self, step: &str) -> Option<WebhookHost> {
        let from_env = std::env::var(E2E_WEBHOOK_HOST).ok();
        let host = webhook_host(!self.on_sim(), from_env.as_deref());
        if host.is_none() {
            eprintln!(
                "SKIPPED: {step}: serves a webhook in-process; set {E2E_WEBHOOK_HOST} to an \
                 address of this host the cluster's API server can reach"
            );
        }
        host
    }

    /// An API in this test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Deletes the namespace (on a real cluster) and stops the simulator.
    pub async fn shutdown(self) {
        match self.sim {
            Some(sim) => sim.shutdown().await,
            None => {
                let namespaces: Api<Namespace> = Api::all(self.client.clone());
                if let Err(e) = namespaces
                    .delete(&self.namespace, &DeleteParams::default())
                    .await
                {
                    eprintln!("failed to delete namespace {}: {e}", self.namespace);
                }
            }
        }
    }
}

/// Where a scenario's in-process webhook listens and the host the API server calls it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookHost {
    /// Host put in webhook URLs and in the serving certificate's SANs.
    pub host: String,
    /// Local address to listen on: the host itself when it is an IP, every interface otherwise.
    pub bind: IpAddr,
}

impl WebhookHost {
    /// Loopback, for kube-sim.
    pub fn loopback() -> Self {
        Self::named("127.0.0.1")
    }

    /// The webhook host `host` (an IP address or a DNS name of this machine).
    pub fn named(host: &str) -> Self {
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        let bind = host
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Self {
            host: host.to_owned(),
            bind,
        }
    }

    /// A listening address on `port` (0: any free port).
    pub fn bind_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.bind, port)
    }

    /// `https://host:port/path`, brackets around an IPv6 address.
    pub fn url(&self, port: u16, path: &str) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("https://[{}]:{port}{path}", self.host),
            _ => format!("https://{}:{port}{path}", self.host),
        }
    }

    /// Names for a serving certificate: the host, plus loopback names for local clients.
    pub fn cert_names(&self) -> Vec<&str> {
        let mut names = vec![self.host.as_str()];
        for n in ["127.0.0.1", "localhost"] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }
}

/// The webhook host for a run: loopback on kube-sim (`real_cluster` false); on a real cluster
/// the value of `E2E_WEBHOOK_HOST`, or `None` when unset or empty.
pub fn webhook_host(real_cluster: bool, e2e_webhook_host: Option<&str>) -> Option<WebhookHost> {
    if !real_cluster {
        return Some(WebhookHost::loopback());
    }
    e2e_webhook_host
        .filter(|h| !h.trim().is_empty())
        .map(WebhookHost::named)
}

/// Polls `check` until it returns `Some`, or panics naming `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs the installed `kubectl` against `kubeconfig`; `None` (after saying so) when kubectl is
/// not installed.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Option<Output> {
    kubectl_with_input(kubeconfig, args, None)
}

/// [`kubectl`] with `stdin` piped in (for `-f -`).
pub fn kubectl_with_input(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Option<Output> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: kubectl is not installed");
            return None;
        }
        Err(e) => panic!("failed to run kubectl: {e}"),
    };
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("failed to write kubectl's stdin: {e}"));
    }
    Some(
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("failed to wait for kubectl: {e}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_listen_on_loopback_for_kube_sim_whatever_the_environment_says() {
        assert_eq!(
            webhook_host(false, Some("10.1.2.3")),
            Some(WebhookHost::loopback())
        );
    }

    #[test]
    fn a_real_cluster_needs_e2e_webhook_host() {
        assert_eq!(webhook_host(true, None), None);
        assert_eq!(webhook_host(true, Some(" ")), None);
        let ip = webhook_host(true, Some("172.18.0.1")).unwrap();
        assert_eq!(ip.bind_addr(0).to_string(), "172.18.0.1:0");
        assert_eq!(ip.url(8443, "/review"), "https://172.18.0.1:8443/review");
        assert_eq!(ip.cert_names(), ["172.18.0.1", "127.0.0.1", "localhost"]);
        let name = webhook_host(true, Some("host.docker.internal")).unwrap();
        assert_eq!(name.bind_addr(9).to_string(), "0.0.0.0:9");
        let v6 = webhook_host(true, Some("[fd00::1]")).unwrap();
        assert_eq!(v6.url(1, "/x"), "https://[fd00::1]:1/x");
    }
}
