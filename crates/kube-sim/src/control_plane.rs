//! A real Kubernetes control plane as a test fixture, the envtest way: etcd, kube-apiserver,
//! kube-controller-manager and kube-scheduler from one directory of binaries, on free loopback
//! ports, everything written under one temporary directory, and nothing left running when it
//! stops (or when this process dies: the processes get a parent-death signal where `setpriv`
//! exists). There is no kubelet: pair it with [`crate::kubelets`].
//!
//! In: a directory holding `etcd`, `kube-apiserver`, `kube-controller-manager` and
//! `kube-scheduler` (any Kubernetes server release; etcd 3.5 or newer). Out: a kubeconfig for
//! `system:masters`, and the environment the end-to-end suite reads ([`ControlPlane::env`]).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// Environment variable naming the directory of control plane binaries.
pub const BINARIES_ENV: &str = "E2E_K8S_BINARIES";
/// Longest wait for each component to come up: the API server needs 2–5s on a quiet machine,
/// many times that on a loaded 2-core one.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a component gets to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "failed to find {binary} in {dir} (set {BINARIES_ENV} to a directory with etcd, kube-apiserver, kube-controller-manager and kube-scheduler)"
    )]
    Missing { binary: String, dir: PathBuf },
    #[error("failed to prepare the control plane's files in {path}")]
    Files {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to generate the control plane's keys")]
    Keys(#[source] rcgen::Error),
    #[error("failed to find a free port")]
    Port(#[source] std::io::Error),
    #[error("failed to start {component}")]
    Spawn {
        component: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{component} did not become ready within {timeout:?}; the end of its log ({log}):\n{tail}"
    )]
    NotReady {
        component: &'static str,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("{component} exited ({status}) while starting; the end of its log ({log}):\n{tail}")]
    Exited {
        component: &'static str,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    #[error("failed to build a client for the control plane")]
    Client(#[source] crate::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The components, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    Scheduler,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Etcd,
        Component::ApiServer,
        Component::ControllerManager,
        Component::Scheduler,
    ];

    /// The binary's file name.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
        }
    }
}

/// What to start and the timings the controllers run with.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// Directory of the four binaries.
    pub binaries: PathBuf,
    /// `--node-monitor-grace-period`: how long after its last heartbeat a node goes NotReady
    /// (50s by default in Kubernetes; short here so node failures take seconds).
    pub node_monitor_grace: Duration,
    /// `--node-monitor-period`: how often the node lifecycle controller looks (5s in Kubernetes).
    pub node_monitor_period: Duration,
    /// The API server's default not-ready/unreachable `tolerationSeconds` (300 in Kubernetes).
    pub default_toleration_seconds: u64,
    /// `--node-eviction-rate`: nodes tainted per second in a healthy zone (0.1 in Kubernetes).
    pub node_eviction_rate: f32,
    /// Client QPS of the controller manager and scheduler (20 and 50 in Kubernetes, which
    /// throttle the PV controller in bulk scenarios; production clusters raise them too).
    pub kube_api_qps: u32,
    /// The components to run, in start order (all four by default).
    pub components: Vec<Component>,
}

impl ControlPlaneConfig {
    /// The binaries in `dir`, with the timings the end-to-end suite uses.
    pub fn new(binaries: impl Into<PathBuf>) -> Self {
        Self {
            binaries: binaries.into(),
            node_monitor_grace: Duration::from_secs(6),
            node_monitor_period: Duration::from_secs(1),
            default_toleration_seconds: 2,
            node_eviction_rate: 0.1,
            kube_api_qps: 200,
            components: Component::ALL.to_vec(),
        }
    }

    /// etcd and the API server only: no controllers, no scheduler (envtest's default), for
    /// tests of what the API server itself accepts.
    pub fn api_only(mut self) -> Self {
        self.components = vec![Component::Etcd, Component::ApiServer];
        self
    }

    /// The binaries named by `E2E_K8S_BINARIES`, if it is set.
    pub fn from_env() -> Option<Self> {
        std::env::var_os(BINARIES_ENV)
            .filter(|v| !v.is_empty())
            .map(Self::new)
    }
}

struct Process {
    component: Component,
    child: Child,
}

/// A running control plane. Dropping it kills every component and removes its directory.
pub struct ControlPlane {
    config: ControlPlaneConfig,
    dir: tempfile::TempDir,
    etcd_port: u16,
    etcd_peer_port: u16,
    apiserver_port: u16,
    kubeconfig: PathBuf,
    ca_pem: String,
    client: kube::Client,
    processes: Vec<Process>,
}

impl ControlPlane {
    /// Starts the four components and waits until the API server is ready and the controller
    /// manager has published `kube-root-ca.crt`.
    pub async fn start(config: ControlPlaneConfig) -> Result<ControlPlane> {
        // A port found free can be taken by another process before the component binds it
        // (tests start control planes side by side): start again on other ports.
        let mut attempt = 1;
        loop {
            match Self::start_once(config.clone()).await {
                Err(e) if attempt < START_ATTEMPTS && e.is_port_taken() => {
                    tracing::warn!(attempt, error = %e, "a control plane port was taken; starting again on other ports");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(mut config: ControlPlaneConfig) -> Result<ControlPlane> {
        ballast_runtime::tls::install_crypto_provider();
        // Absolute, so the environment handed to commands holds wherever they run.
        if let Ok(abs) = std::fs::canonicalize(&config.binaries) {
            config.binaries = abs;
        }
        for c in Component::ALL {
            let path = config.binaries.join(c.binary());
            if !path.is_file() {
                return Err(Error::Missing {
                    binary: c.binary().to_owned(),
                    dir: config.binaries.clone(),
                });
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("control-plane-")
            .tempdir()
            .map_err(|source| Error::Files {
                path: std::env::temp_dir(),
                source,
            })?;
        let files = Files::write(dir.path())?;
        let (etcd_port, etcd_peer_port, apiserver_port) =
            (free_port()?, free_port()?, free_port()?);
        let url = format!("https://127.0.0.1:{apiserver_port}");
        let yaml = crate::kubeconfig::render(&url, &files.ca_pem, "admin", &files.token);
        let kubeconfig = dir.path().join("kubeconfig");
        write(&kubeconfig, &yaml)?;
        let client = crate::client_for(&yaml).await.map_err(Error::Client)?;
        let mut cp = ControlPlane {
            config,
            dir,
            etcd_port,
            etcd_peer_port,
            apiserver_port,
            kubeconfig,
            ca_pem: files.ca_pem,
            client,
            processes: Vec::new(),
        };
        for c in cp.config.components.clone() {
            cp.start_component(c).await?;
        }
        Ok(cp)
    }

    /// Starts one component (again, after [`ControlPlane::kill`]) and waits until it is ready.
    pub async fn start_component(&mut self, component: Component) -> Result<()> {
        let log = self.dir.path().join(format!("{}.log", component.binary()));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| Error::Files {
                path: log.clone(),
                source,
            })?;
        let err = out.try_clone().map_err(|source| Error::Files {
            path: log.clone(),
            source,
        })?;
        let mut cmd = parent_death_command(&self.config.binaries.join(component.binary()));
        cmd.args(self.args(component))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            component: component.binary(),
            source,
        })?;
        tracing::info!(
            component = component.binary(),
            pid = child.id(),
            "control plane component started"
        );
        self.processes.push(Process { component, child });
        self.wait_ready(component, &log).await
    }

    fn args(&self, component: Component) -> Vec<String> {
        let d = self.dir.path().display();
        let cfg = &self.config;
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let etcd = format!("http://127.0.0.1:{}", self.etcd_port);
        let v: Vec<String> = match component {
            Component::Etcd => vec![
                format!("--data-dir={d}/etcd"),
                format!("--listen-client-urls={etcd}"),
                format!(
                    "--listen-peer-urls=http://127.0.0.1:{}",
                    self.etcd_peer_port
                ),
            ],
            Component::ApiServer => vec![
                format!("--etcd-servers={etcd}"),
                format!("--secure-port={}", self.apiserver_port),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--cert-dir={d}/certs"),
                format!("--tls-cert-file={d}/apiserver.crt"),
                format!("--tls-private-key-file={d}/apiserver.key"),
                format!("--token-auth-file={d}/tokens.csv"),
                // As kubeadm sets it up: kubelets are authorized by the Node authorizer.
                "--authorization-mode=Node,RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={d}/sa.pub"),
                format!("--service-account-signing-key-file={d}/sa.key"),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                format!("--client-ca-file={d}/ca.crt"),
                format!(
                    "--default-not-ready-toleration-seconds={}",
                    cfg.default_toleration_seconds
                ),
                format!(
                    "--default-unreachable-toleration-seconds={}",
                    cfg.default_toleration_seconds
                ),
                // Scenarios pin their namespaces' pods to their own simulated nodes.
                "--enable-admission-plugins=NodeRestriction,PodNodeSelector".into(),
                "--profiling=false".into(),
            ],
            Component::ControllerManager => vec![
                format!("--kubeconfig={d}/kubeconfig"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                format!("--service-account-private-key-file={d}/sa.key"),
                format!("--root-ca-file={d}/ca.crt"),
                format!("--cluster-signing-cert-file={d}/ca.crt"),
                format!("--cluster-signing-key-file={d}/ca.key"),
                format!(
                    "--node-monitor-grace-period={}",
                    secs(cfg.node_monitor_grace)
                ),
                format!("--node-monitor-period={}", secs(cfg.node_monitor_period)),
                format!("--node-eviction-rate={}", cfg.node_eviction_rate),
                "--use-service-account-credentials=true".into(),
                "--controllers=*,-service-ca-certificate-publisher-controller".into(),
                format!("--kube-api-qps={}", cfg.kube_api_qps),
                format!("--kube-api-burst={}", cfg.kube_api_qps * 2),
                "--profiling=false".into(),
            ],
            Component::Scheduler => vec![
                format!("--kubeconfig={d}/kubeconfig"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
                format!("--kube-api-qps={}", cfg.kube_api_qps),
                format!("--kube-api-burst={}", cfg.kube_api_qps * 2),
                "--profiling=false".into(),
            ],
        };
        v
    }

    async fn wait_ready(&mut self, component: Component, log: &Path) -> Result<()> {
        let start = Instant::now();
        loop {
            let exited = self
                .processes
                .iter_mut()
                .rfind(|p| p.component == component)
                .and_then(|p| p.child.try_wait().ok().flatten());
            let ready = exited.is_none() && self.is_ready(component).await;
            if ready {
                tracing::info!(component = component.binary(), after = ?start.elapsed(), "control plane component ready");
                return Ok(());
            }
            if let Some(status) = exited {
                return Err(Error::Exited {
                    component: component.binary(),
                    status,
                    log: log.to_path_buf(),
                    tail: tail(log, 30),
                });
            }
            if start.elapsed() >= START_TIMEOUT {
                return Err(Error::NotReady {
                    component: component.binary(),
                    timeout: START_TIMEOUT,
                    log: log.to_path_buf(),
                    tail: tail(log, 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn is_ready(&self, component: Component) -> bool {
        match component {
            Component::Etcd => std::net::TcpStream::connect(("127.0.0.1", self.etcd_port)).is_ok(),
            Component::ApiServer => {
                let req = http::Request::get("/readyz").body(Vec::new());
                match req {
                    Ok(req) => self
                        .client
                        .request_text(req)
                        .await
                        .is_ok_and(|t| t.trim() == "ok"),
                    Err(_) => false,
                }
            }
            // The root CA publisher runs in every namespace once the controllers are up.
            Component::ControllerManager => {
                Api::<ConfigMap>::namespaced(self.client.clone(), "default")
                    .get_opt("kube-root-ca.crt")
                    .await
                    .is_ok_and(|c| c.is_some())
            }
            // The scheduler serves nothing here (--secure-port=0): a live process is all there
            // is to see; pods wait for it like for any scheduler.
            Component::Scheduler => true,
        }
    }

    /// Sends `signal` to a running component (SIGSTOP/SIGCONT to stall etcd, SIGKILL to crash
    /// the API server); `false` when it is not running.
    pub fn signal(&self, component: Component, signal: rustix::process::Signal) -> bool {
        let Some(p) = self.processes.iter().rfind(|p| p.component == component) else {
            return false;
        };
        let Some(pid) = i32::try_from(p.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        else {
            return false;
        };
        rustix::process::kill_process(pid, signal).is_ok()
    }

    /// Kills a component (SIGKILL) and waits for it; [`ControlPlane::start_component`] brings it
    /// back on the same ports and data.
    pub fn kill(&mut self, component: Component) {
        let mut kept = Vec::new();
        for mut p in self.processes.drain(..) {
            if p.component == component {
                let _ = p.child.kill();
                let _ = p.child.wait();
            } else {
                kept.push(p);
            }
        }
        self.processes = kept;
    }

    /// Stops every component (scheduler and controller manager first, etcd last), each with
    /// SIGTERM and then SIGKILL after a grace, and removes the directory.
    pub fn stop(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        while let Some(mut p) = self.processes.pop() {
            let pid = i32::try_from(p.child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let start = Instant::now();
            while start.elapsed() < STOP_GRACE {
                if p.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
            tracing::info!(
                component = p.component.binary(),
                "control plane component stopped"
            );
        }
    }

    /// The kubeconfig for `system:masters`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// An admin client; it does not retry 429s, so callers see them.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// The CA of the API server's serving certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// etcd's client URL (for compaction in watch-expiry scenarios).
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    /// Where the components write their logs.
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The timings the controllers run with.
    pub fn config(&self) -> &ControlPlaneConfig {
        &self.config
    }

    /// The environment of a test process run against this control plane: the kubeconfig, the
    /// webhook host (loopback), simulated nodes allowed, and the timings scenarios wait on.
    pub fn env(&self) -> Vec<(String, String)> {
        let c = &self.config;
        vec![
            (
                "E2E_KUBECONFIG".into(),
                self.kubeconfig.display().to_string(),
            ),
            ("E2E_WEBHOOK_HOST".into(), "127.0.0.1".into()),
            ("E2E_SIMULATED_NODES".into(), "1".into()),
            ("E2E_BACKEND".into(), "control-plane".into()),
            (
                "E2E_NODE_GRACE".into(),
                format!(
                    "{}ms",
                    (c.node_monitor_grace + c.node_monitor_period).as_millis()
                ),
            ),
            (
                "E2E_DEFAULT_TOLERATION_SECONDS".into(),
                c.default_toleration_seconds.to_string(),
            ),
            (
                "E2E_NODE_EVICTION_RATE".into(),
                c.node_eviction_rate.to_string(),
            ),
            ("E2E_ETCD_URL".into(), self.etcd_url()),
            (
                BINARIES_ENV.into(),
                self.config.binaries.display().to_string(),
            ),
        ]
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// The keys, certificates and tokens the components share.
struct Files {
    ca_pem: String,
    token: String,
}

impl Files {
    fn write(dir: &Path) -> Result<Files> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType,
            ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(Error::Keys)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "control-plane-ca");
        ca.distinguished_name = name;
        let ca_key = KeyPair::generate().map_err(Error::Keys)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(Error::Keys)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);

        let mut serving = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "10.96.0.1".to_owned(),
        ])
        .map_err(Error::Keys)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "kube-apiserver");
        serving.distinguished_name = name;
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate().map_err(Error::Keys)?;
        let serving_cert = serving
            .signed_by(&serving_key, &issuer)
            .map_err(Error::Keys)?;

        let sa = KeyPair::generate().map_err(Error::Keys)?;
        let token = crate::random_token();
        let files = [
            ("ca.crt", ca_cert.pem()),
            ("ca.key", ca_key_pem),
            ("apiserver.crt", serving_cert.pem()),
            ("apiserver.key", serving_key.serialize_pem()),
            ("sa.key", sa.serialize_pem()),
            ("sa.pub", sa.public_key_pem()),
            (
                "tokens.csv",
                format!("{token},admin,admin,system:masters\n"),
            ),
        ];
        for (file, body) in files {
            write(&dir.join(file), &body)?;
        }
        Ok(Files {
            ca_pem: ca_cert.pem(),
            token,
        })
    }
}

fn write(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, body).map_err(|source| Error::Files {
        path: path.to_path_buf(),
        source,
    })
}

/// How often [`ControlPlane::start`] tries when a port it picked was taken meanwhile.
const START_ATTEMPTS: u32 = 3;

impl Error {
    /// Whether a component failed because a port picked for it was taken meanwhile.
    fn is_port_taken(&self) -> bool {
        match self {
            Error::NotReady { tail, .. } | Error::Exited { tail, .. } => {
                tail.contains("address already in use")
            }
            _ => false,
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).map_err(Error::Port)?;
    Ok(l.local_addr().map_err(Error::Port)?.port())
}

/// `binary` run so that it gets SIGKILL when the thread that started it goes (util-linux
/// `setpriv --pdeathsig`), so a crashed test run leaves no control plane behind; plain where
/// `setpriv` is missing.
fn parent_death_command(binary: &Path) -> Command {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file());
    match setpriv {
        Some(setpriv) => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "KILL", "--"]).arg(binary);
            cmd
        }
        None => Command::new(binary),
    }
}

/// The last `lines` lines of a log file.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests;
