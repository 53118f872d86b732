//! A client of the control API that keeps WatchStatus and WatchNodeHealth open, reconnecting with
//! capped exponential backoff, and publishes the latest state as `watch` receivers.
//!
//! `None` in a receiver means unknown: not connected yet, or the stream was lost. A value is
//! only ever one the server sent on the stream that is open now, so nothing stale looks fresh.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::nodes;
use crate::pb;
use crate::pb::control_service_client::ControlServiceClient as GrpcClient;
use crate::types::{ConvertError, InterceptionState, Mode, NodeHealth, NodeHealthSnapshot};

/// Time to establish a TCP connection before counting the attempt as failed.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time a one-shot call may take; the server answers from memory, so this is generous.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect delay: quick enough to ride out a guard rollout.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest reconnect delay, so a returning server is noticed within about this long.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// HTTP/2 pings find a silently dead server (no FIN, e.g. node lost) on an idle watch stream.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach the control API.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// e.g. `http://eviction-guard.ballast-system.svc:9090`.
    pub endpoint: String,
    /// Sent as `authorization: Bearer <token>` on every call (SetMode needs it in a cluster).
    pub token: Option<String>,
    /// A file holding the token, read again for every call and every watch (re)connection, so a
    /// projected service account token the kubelet rotates is followed. Wins over `token`.
    pub token_file: Option<PathBuf>,
    /// Keep WatchStatus and WatchNodeHealth open in the background; off for one-shot tools.
    pub watch: bool,
    /// PEM CA certificates to trust: connect over TLS (use an `https://` endpoint). Plain
    /// HTTP/2 when `None`.
    pub ca_pem: Option<String>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl ClientOptions {
    /// Watching on, no token, default timeouts and backoff.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            token: None,
            token_file: None,
            watch: true,
            ca_pem: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
        }
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Read the bearer token from this file for every call (see [`ClientOptions::token_file`]).
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Trust these PEM CA certificates and connect over TLS.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }
}

/// Flags of a service that reads the control API (podmanager, provisioner), for
/// `#[command(flatten)]`.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlClientArgs {
    /// PEM CA certificate(s) to trust for the control API, which is then reached over TLS (an
    /// `https://` CONTROL_ENDPOINT), e.g. `ca.crt` of Secret eviction-guard-tls.
    #[arg(long, env = "CONTROL_CA_FILE")]
    pub control_ca_file: Option<PathBuf>,
    /// File with the bearer token for the control API, read for every call so a rotated
    /// projected token is followed (a projected service account token with audience
    /// control.ballast.dev; needed when the guard requires auth for reads).
    #[arg(long, env = "CONTROL_TOKEN_FILE")]
    pub control_token_file: Option<PathBuf>,
}

impl ControlClientArgs {
    /// Options for `endpoint` with this CA and token file; fails when the CA file cannot be
    /// read (the token file is read at each call, and may appear later).
    pub fn options(&self, endpoint: impl Into<String>) -> Result<ClientOptions> {
        let mut opts = ClientOptions::new(endpoint);
        if let Some(path) = &self.control_ca_file {
            let pem = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                path: path.clone(),
                source,
            })?;
            opts = opts.ca_pem(pem);
        }
        if let Some(path) = &self.control_token_file {
            opts = opts.token_file(path.clone());
        }
        Ok(opts)
    }
}

/// Where the bearer token of each call comes from.
#[derive(Clone, Debug)]
enum Credentials {
    None,
    Token(MetadataValue<Ascii>),
    File(Arc<PathBuf>),
}

impl Credentials {
    fn new(token: Option<String>, file: Option<PathBuf>) -> Result<Self> {
        if let Some(path) = file {
            return Ok(Credentials::File(Arc::new(path)));
        }
        Ok(match token {
            Some(t) => Credentials::Token(bearer(&t).ok_or(Error::InvalidToken)?),
            None => Credentials::None,
        })
    }

    /// The `authorization` value for the next call; a token file that cannot be read or holds
    /// no usable token sends none (the server then answers UNAUTHENTICATED), with a warning.
    fn header(&self) -> Option<MetadataValue<Ascii>> {
        match self {
            Credentials::None => None,
            Credentials::Token(v) => Some(v.clone()),
            Credentials::File(path) => read_token(path),
        }
    }
}

fn bearer(token: &str) -> Option<MetadataValue<Ascii>> {
    format!("Bearer {}", token.trim()).parse().ok()
}

fn read_token(path: &Path) -> Option<MetadataValue<Ascii>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            let value = bearer(&text);
            if value.is_none() {
                warn!(file = %path.display(), "control API token file holds no valid token");
            }
            value
        }
        Ok(_) => {
            warn!(file = %path.display(), "control API token file is empty");
            None
        }
        Err(error) => {
            warn!(file = %path.display(), %error, "failed to read the control API token file");
            None
        }
    }
}

/// The latest node health by node name; `None` while unknown.
pub type NodeHealthView = Option<BTreeMap<String, NodeHealth>>;

/// A control API client. Background watch tasks stop when the client is dropped or the shutdown
/// token is cancelled; the receivers then read `None`.
pub struct ControlClient {
    grpc: GrpcClient<Channel>,
    auth: Credentials,
    request_timeout: Duration,
    status: watch::Receiver<Option<InterceptionState>>,
    nodes: watch::Receiver<NodeHealthView>,
    _stop: DropGuard,
}

impl ControlClient {
    /// Sets up the connection (made lazily, on first use) and, when `opts.watch`, starts the
    /// watch tasks. Must be called inside a tokio runtime.
    pub fn start(opts: ClientOptions, shutdown: &CancellationToken) -> Result<Self> {
        let ClientOptions {
            endpoint,
            token,
            token_file,
            watch: watch_streams,
            ca_pem,
            connect_timeout,
            request_timeout,
            backoff_min,
            backoff_max,
        } = opts;
        let auth = Credentials::new(token, token_file)?;
        let ep = Endpoint::from_shared(endpoint.clone())
            .map_err(|source| Error::Endpoint {
                endpoint: endpoint.clone(),
                source,
            })?
            .connect_timeout(connect_timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let channel = match ca_pem {
            Some(pem) => ep.connect_with_connector_lazy(tls::connector(&pem)?),
            None => ep.connect_lazy(),
        };
        let grpc = GrpcClient::new(channel);

        let stop = shutdown.child_token();
        let (status_tx, status) = watch::channel(None);
        let (nodes_tx, nodes) = watch::channel(None);
        if watch_streams {
            let backoff = ExponentialBuilder::new()
                .with_min_delay(backoff_min)
                .with_max_delay(backoff_max)
                .with_jitter()
                .without_max_times();
            let watcher = Watcher {
                endpoint: endpoint.clone(),
                backoff,
                backoff_max,
                stop: stop.clone(),
            };
            let (g, a) = (grpc.clone(), auth.clone());
            tokio::spawn(watcher.clone().run(
                "status",
                status_tx,
                move || {
                    let (mut g, req) = (g.clone(), with_auth(&a, pb::WatchStatusRequest {}));
                    async move { g.watch_status(req).await }
                },
                apply_status,
            ));
            let (g, a) = (grpc.clone(), auth.clone());
            tokio::spawn(watcher.run(
                "node health",
                nodes_tx,
                move || {
                    let (mut g, req) = (g.clone(), with_auth(&a, pb::WatchNodeHealthRequest {}));
                    async move { g.watch_node_health(req).await }
                },
                nodes::apply,
            ));
        }
        Ok(Self {
            grpc,
            auth,
            request_timeout,
            status,
            nodes,
            _stop: stop.drop_guard(),
        })
    }

    /// The latest interception state from WatchStatus; `None` while unknown.
    pub fn status(&self) -> watch::Receiver<Option<InterceptionState>> {
        self.status.clone()
    }

    /// The latest node health from WatchNodeHealth; `None` while unknown.
    pub fn node_health(&self) -> watch::Receiver<NodeHealthView> {
        self.nodes.clone()
    }

    /// One GetStatus call.
    pub async fn get_status(&self) -> Result<InterceptionState> {
        const METHOD: &str = "GetStatus";
        let req = with_auth(&self.auth, pb::GetStatusRequest {});
        let resp = self.call(METHOD, self.grpc.clone().get_status(req)).await?;
        crate::types::state_from(resp.status).map_err(|source| Error::Decode {
            method: METHOD,
            source,
        })
    }

    /// One SetMode call; returns the state after the change.
    pub async fn set_mode(&self, mode: Mode, reason: &str) -> Result<InterceptionState> {
        const METHOD: &str = "SetMode";
        let req = with_auth(
            &self.auth,
            pb::SetModeRequest {
                mode: pb::Mode::from(mode).into(),
                reason: reason.to_owned(),
            },
        );
        let resp = self.call(METHOD, self.grpc.clone().set_mode(req)).await?;
        crate::types::state_from(resp.status).map_err(|source| Error::Decode {
            method: METHOD,
            source,
        })
    }

    /// One ListNodeHealth call.
    pub async fn list_node_health(&self) -> Result<NodeHealthSnapshot> {
        const METHOD: &str = "ListNodeHealth";
        let req = with_auth(&self.auth, pb::ListNodeHealthRequest {});
        let resp = self
            .call(METHOD, self.grpc.clone().list_node_health(req))
            .await?;
        let nodes = resp
            .nodes
            .into_iter()
            .map(NodeHealth::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| Error::Decode {
                method: METHOD,
                source,
            })?;
        Ok(NodeHealthSnapshot {
            synced: resp.synced,
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        })
    }

    async fn call<T>(
        &self,
        method: &'static str,
        fut: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Err(_) => Err(Error::Timeout {
                method,
                timeout: self.request_timeout,
            }),
            Ok(Err(source)) => Err(Error::Rpc { method, source }),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        }
    }
}

fn with_auth<T>(auth: &Credentials, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(value) = auth.header() {
        req.metadata_mut().insert("authorization", value);
    }
    req
}

fn apply_status(
    view: &mut Option<InterceptionState>,
    msg: pb::WatchStatusResponse,
) -> Result<(), ConvertError> {
    *view = Some(crate::types::state_from(msg.status)?);
    Ok(())
}

/// How one watch session ended.
enum SessionEnd {
    /// The server closed the stream (it is shutting down).
    Closed,
    Failed(Status),
    Protocol(ConvertError),
}

#[derive(Clone)]
struct Watcher {
    endpoint: String,
    backoff: ExponentialBuilder,
    backoff_max: Duration,
    stop: CancellationToken,
}

impl Watcher {
    /// Runs watch sessions until stopped; between sessions the view is `None`.
    async fn run<M, T, Open, Fut>(
        self,
        what: &'static str,
        tx: watch::Sender<Option<T>>,
        mut open: Open,
        apply: fn(&mut Option<T>, M) -> Result<(), ConvertError>,
    ) where
        Open: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<Streaming<M>>, Status>>,
    {
        let endpoint = self.endpoint.as_str();
        let mut delays = self.backoff.build();
        let mut failures: u32 = 0;
        loop {
            let (delivered, end) = tokio::select! {
                () = self.stop.cancelled() => break,
                r = session(&tx, &mut open, apply, what, endpoint) => r,
            };
            tx.send_replace(None);
            if delivered {
                delays = self.backoff.build();
                failures = 0;
            }
            failures += 1;
            match &end {
                SessionEnd::Closed => {
                    info!(
                        endpoint,
                        what, "control watch closed by the server; reconnecting"
                    )
                }
                SessionEnd::Protocol(e) => {
                    warn!(endpoint, what, error = %e, "control watch sent an invalid message; reconnecting")
                }
                // The first failure after a working stream is news; repeats while down are not.
                SessionEnd::Failed(s) if failures == 1 => {
                    warn!(endpoint, what, code = ?s.code(), message = s.message(), "control watch lost; reconnecting")
                }
                SessionEnd::Failed(s) => {
                    debug!(endpoint, what, code = ?s.code(), failures, "control watch still unavailable")
                }
            }
            let delay = delays.next().unwrap_or(self.backoff_max);
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        tx.send_replace(None);
        debug!(endpoint, what, "control watch stopped");
    }
}

/// One watch stream, from open to end; returns whether any message arrived.
async fn session<M, T, Open, Fut>(
    tx: &watch::Sender<Option<T>>,
    open: &mut Open,
    apply: fn(&mut Option<T>, M) -> Result<(), ConvertError>,
    what: &'static str,
    endpoint: &str,
) -> (bool, SessionEnd)
where
    Open: FnMut() -> Fut,
    Fut: Future<Output = Result<Response<Streaming<M>>, Status>>,
{
    let mut stream = match open().await {
        Ok(resp) => resp.into_inner(),
        Err(status) => return (false, SessionEnd::Failed(status)),
    };
    let mut delivered = false;
    loop {
        match stream.message().await {
            Ok(Some(msg)) => {
                let mut result = Ok(());
                tx.send_modify(|view| result = apply(view, msg));
                if let Err(e) = result {
                    return (delivered, SessionEnd::Protocol(e));
                }
                if !delivered {
                    info!(endpoint, what, "control watch connected");
                }
                delivered = true;
            }
            Ok(None) => return (delivered, SessionEnd::Closed),
            Err(status) => return (delivered, SessionEnd::Failed(status)),
        }
    }
}

mod tls {
    //! TLS to the control API over rustls, trusting only the given CA certificates.

    use std::sync::Arc;

    use futures::future::BoxFuture;
    use http::Uri;
    use hyper_util::rt::TokioIo;
    use rustls_pki_types::ServerName;
    use tokio::net::TcpStream;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use crate::error::{Error, Result};

    /// Port of an `https://` endpoint that names none.
    const DEFAULT_HTTPS_PORT: u16 = 443;

    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    type Io = TokioIo<TlsStream<TcpStream>>;
    type Connect = BoxFuture<'static, std::result::Result<Io, BoxError>>;

    /// What tonic's `connect_with_connector_lazy` accepts.
    pub(super) trait Connector:
        tower::Service<Uri, Response = Io, Error = BoxError, Future = Connect> + Send + 'static
    {
    }
    impl<T> Connector for T where
        T: tower::Service<Uri, Response = Io, Error = BoxError, Future = Connect> + Send + 'static
    {
    }

    /// A tower connector for tonic: TCP, then a TLS handshake for the endpoint's host name.
    pub(super) fn connector(ca_pem: &str) -> Result<impl Connector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| Error::ClientTls(format!("unreadable CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::ClientTls(format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::ClientTls("no CA certificate in the PEM".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::ClientTls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tls = TlsConnector::from(Arc::new(config));
        Ok(tower::service_fn(move |uri: Uri| {
            let tls = tls.clone();
            let fut: Connect = Box::pin(async move {
                let host = uri.host().ok_or("endpoint has no host")?;
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let port = uri.port_u16().unwrap_or(DEFAULT_HTTPS_PORT);
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                let name = ServerName::try_from(host)?;
                let stream = tls.connect(name, tcp).await?;
                Ok::<_, BoxError>(TokioIo::new(stream))
            });
            fut
        }))
    }
}
