//! The control service on a real server on 127.0.0.1:0, called the way components (ControlClient),
//! operators (grpcurl-style reflection, no stubs) and probes (grpc.health.v1) call it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use ballast_control::auth::{VERB_GET, VERB_UPDATE};
use ballast_control::pb;
use ballast_control::pb::control_service_client::ControlServiceClient as RawClient;
use ballast_control::{
    AuthError, Authorize, Caller, ClientOptions, ControlClient, ControlError, InterceptionState,
    MemoryState, Mode, NodeHealth, NodeHealthSnapshot, ServerOptions,
};
use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);
const ADMIN_TOKEN: &str = "admin-token";
const READER_TOKEN: &str = "reader-token";
const BROKEN_AUTH_TOKEN: &str = "auth-api-down";

/// Fixed tokens: `admin-token` (alice: get, update), `reader-token` (bob: get), and one that makes
/// the "auth API" unavailable.
struct FakeAuth;

impl Authorize for FakeAuth {
    fn authorize<'a>(
        &'a self,
        bearer: Option<&'a str>,
        verb: &'a str,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let (user, verbs): (&str, &[&str]) = match bearer {
                None => {
                    return Err(AuthError::Unauthenticated(
                        "no bearer token in the request".into(),
                    ));
                }
                Some(ADMIN_TOKEN) => ("alice", &[VERB_GET, VERB_UPDATE]),
                Some(READER_TOKEN) => ("bob", &[VERB_GET]),
                Some(BROKEN_AUTH_TOKEN) => {
                    return Err(AuthError::Unavailable("TokenReview timed out".into()));
                }
                Some(_) => return Err(AuthError::Unauthenticated("token not valid".into())),
            };
            if verbs.contains(&verb) {
                Ok(Caller {
                    username: user.into(),
                    uid: String::new(),
                    groups: vec!["ops".into()],
                })
            } else {
                Err(AuthError::Forbidden(format!(
                    "user {user} may not {verb} interception.control.ballast.dev"
                )))
            }
        })
    }
}

fn mk_node(name: &str, ready: bool) -> NodeHealth {
    NodeHealth {
        name: name.into(),
        ready,
        since: chrono::DateTime::from_timestamp(1_700_000_000, 0),
        reason: if ready {
            "KubeletReady"
        } else {
            "NodeStatusUnknown"
        }
        .into(),
        zone: "zone-a".into(),
    }
}

fn mk_state() -> Arc<MemoryState> {
    let state = MemoryState::new(InterceptionState {
        mode: Mode::Auto,
        protecting: true,
        reason: "3 of 5 worker nodes NotReady within 5m".into(),
        since: chrono::DateTime::from_timestamp(1_700_000_000, 0),
        threshold: 3,
        window: Duration::from_secs(300),
        notready_nodes: vec!["node-1".into(), "node-2".into(), "node-3".into()],
        synced: true,
        ..Default::default()
    });
    state.set_nodes(NodeHealthSnapshot::synced([
        mk_node("node-1", false),
        mk_node("node-2", false),
        mk_node("node-3", false),
        mk_node("node-4", true),
        mk_node("node-5", true),
    ]));
    Arc::new(state)
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<ballast_control::Result<()>>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops within the wait")
            .expect("server task does not panic")
            .expect("server ends without error");
    }
}

/// Binds with SO_REUSEADDR so a restarted server can take the same port again.
fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap()
}

fn start_on(listener: TcpListener, state: Arc<MemoryState>, opts: ServerOptions) -> Server {
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(ballast_control::serve(listener, state, opts, stop.clone()));
    Server { addr, stop, task }
}

fn start(state: Arc<MemoryState>, opts: ServerOptions) -> Server {
    start_on(bind("127.0.0.1:0".parse().unwrap()), state, opts)
}

fn authed() -> ServerOptions {
    ServerOptions::new(Arc::new(FakeAuth))
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn raw_client(server: &Server) -> RawClient<Channel> {
    RawClient::new(channel(server).await)
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

async fn wait_for<T: Clone>(
    what: &str,
    rx: &mut watch::Receiver<T>,
    pred: impl FnMut(&T) -> bool,
) -> T {
    tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("sender alive")
        .clone()
}

async fn next<T>(stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within the wait")
        .expect("stream healthy")
        .expect("stream still open")
}

fn names(nodes: &[pb::NodeHealth]) -> Vec<(&str, bool)> {
    nodes.iter().map(|n| (n.name.as_str(), n.ready)).collect()
}

#[tokio::test]
async fn get_set_and_list_round_trip_through_the_client() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let stop = CancellationToken::new();
    let client = ControlClient::start(
        ClientOptions::new(server.url())
            .token(ADMIN_TOKEN)
            .watch(false),
        &stop,
    )
    .unwrap();

    let status = client.get_status().await.unwrap();
    assert_eq!(status, state.status_now());

    let after = client
        .set_mode(Mode::Forced, "rack 4 maintenance")
        .await
        .unwrap();
    assert_eq!(after.mode, Mode::Forced);
    assert_eq!(after.mode_changed_by, "alice");
    assert_eq!(after.mode_reason, "rack 4 maintenance");
    assert!(after.mode_changed_at.is_some());
    let again = client.get_status().await.unwrap();
    assert_eq!(again, after);

    let nodes = client.list_node_health().await.unwrap();
    assert!(nodes.synced);
    assert_eq!(
        nodes.nodes.keys().collect::<Vec<_>>(),
        ["node-1", "node-2", "node-3", "node-4", "node-5"]
    );
    assert_eq!(nodes.nodes["node-2"], mk_node("node-2", false));

    server.stop().await;
}

#[tokio::test]
async fn watch_status_sends_the_current_state_first_then_each_change() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let mut raw = raw_client(&server).await;
    let mut stream = raw
        .watch_status(pb::WatchStatusRequest {})
        .await
        .unwrap()
        .into_inner();

    let first = next(&mut stream).await.status.expect("a status");
    assert_eq!(first.reason, "3 of 5 worker nodes NotReady within 5m");
    assert!(first.protecting && first.synced);

    state.update_status(|s| {
        s.protecting = false;
        s.reason = "1 of 5 worker nodes NotReady: no storm".into();
        s.notready_nodes = vec!["node-3".into()];
    });
    let second = next(&mut stream).await.status.expect("a status");
    assert!(!second.protecting);
    assert_eq!(second.notready_nodes, ["node-3"]);

    raw.set_mode(with_token(
        pb::SetModeRequest {
            mode: pb::Mode::Disabled as i32,
            reason: "drill".into(),
        },
        ADMIN_TOKEN,
    ))
    .await
    .unwrap();
    let third = next(&mut stream).await.status.expect("a status");
    assert_eq!(third.mode, pb::Mode::Disabled as i32);
    assert_eq!(third.mode_changed_by, "alice");

    server.stop().await;
    // the server ends open watch streams when it shuts down
    let end = tokio::time::timeout(WAIT, stream.message()).await.unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}

#[tokio::test]
async fn watch_node_health_sends_a_full_snapshot_then_only_what_changed() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let mut raw = raw_client(&server).await;
    let mut stream = raw
        .watch_node_health(pb::WatchNodeHealthRequest {})
        .await
        .unwrap()
        .into_inner();

    let snapshot = next(&mut stream).await;
    assert!(snapshot.snapshot);
    assert_eq!(
        names(&snapshot.nodes),
        [
            ("node-1", false),
            ("node-2", false),
            ("node-3", false),
            ("node-4", true),
            ("node-5", true)
        ]
    );

    state.upsert_node(mk_node("node-1", true));
    let change = next(&mut stream).await;
    assert!(!change.snapshot);
    assert_eq!(names(&change.nodes), [("node-1", true)]);
    assert!(change.removed.is_empty());

    // an update that changes nothing sends nothing: the next event is the removal
    state.upsert_node(mk_node("node-4", true));
    state.remove_node("node-5");
    let removal = next(&mut stream).await;
    assert!(!removal.snapshot);
    assert!(removal.nodes.is_empty());
    assert_eq!(removal.removed, ["node-5"]);

    server.stop().await;
}

#[tokio::test]
async fn node_health_snapshot_waits_until_the_host_has_synced() {
    let state = mk_state();
    state.set_nodes_synced(false);
    let server = start(state.clone(), authed());
    let mut raw = raw_client(&server).await;

    let list = raw
        .list_node_health(pb::ListNodeHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!list.synced);

    let mut stream = raw
        .watch_node_health(pb::WatchNodeHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    let early = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(early.is_err(), "no snapshot before sync, got {early:?}");

    state.set_nodes_synced(true);
    let snapshot = next(&mut stream).await;
    assert!(snapshot.snapshot);
    assert_eq!(snapshot.nodes.len(), 5);

    server.stop().await;
}

#[tokio::test]
async fn set_mode_without_a_token_is_unauthenticated_and_reads_still_work() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let mut raw = raw_client(&server).await;

    let err = raw
        .set_mode(pb::SetModeRequest {
            mode: pb::Mode::Disabled as i32,
            reason: "no token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        err.message(),
        "unauthenticated: no bearer token in the request"
    );
    assert_eq!(state.status_now().mode, Mode::Auto);

    let status = raw
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .status
        .expect("a status");
    assert_eq!(status.mode, pb::Mode::Auto as i32);
    let nodes = raw
        .list_node_health(pb::ListNodeHealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(nodes.nodes.len(), 5);

    server.stop().await;
}

#[tokio::test]
async fn set_mode_with_a_token_lacking_permission_is_permission_denied() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let stop = CancellationToken::new();
    let reader = ControlClient::start(
        ClientOptions::new(server.url())
            .token(READER_TOKEN)
            .watch(false),
        &stop,
    )
    .unwrap();

    let err = reader
        .set_mode(Mode::Disabled, "bob tries")
        .await
        .unwrap_err();
    let status = err.status().expect("a gRPC status");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.message(),
        "forbidden: user bob may not update interception.control.ballast.dev"
    );
    assert_eq!(state.status_now().mode, Mode::Auto);
    assert_eq!(reader.get_status().await.unwrap().mode, Mode::Auto);

    server.stop().await;
}

#[tokio::test]
async fn set_mode_is_unavailable_when_the_auth_api_is_down() {
    let server = start(mk_state(), authed());
    let mut raw = raw_client(&server).await;
    let err = raw
        .set_mode(with_token(
            pb::SetModeRequest {
                mode: pb::Mode::Forced as i32,
                reason: "x".into(),
            },
            BROKEN_AUTH_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(
        err.message(),
        "failed to reach the API server to check the caller: TokenReview timed out"
    );
    server.stop().await;
}

#[tokio::test]
async fn set_mode_without_a_mode_is_an_invalid_argument() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let mut raw = raw_client(&server).await;
    let err = raw
        .set_mode(with_token(
            pb::SetModeRequest {
                mode: pb::Mode::Unspecified as i32,
                reason: "forgot the mode".into(),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "mode is required: one of MODE_AUTO, MODE_DISABLED, MODE_FORCED"
    );
    assert_eq!(state.status_now().mode_reason, "");
    server.stop().await;
}

#[tokio::test]
async fn a_request_message_over_the_size_cap_is_refused_before_it_is_handled() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let mut raw = raw_client(&server).await;
    let err = raw
        .set_mode(with_token(
            pb::SetModeRequest {
                mode: pb::Mode::Forced as i32,
                reason: "x".repeat(ballast_control::MAX_REQUEST_MESSAGE_BYTES + 1),
            },
            ADMIN_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
    assert_eq!(state.status_now().mode_reason, "", "nothing was stored");
    server.stop().await;
}

#[tokio::test]
async fn store_failures_reach_the_caller_with_matching_codes() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let stop = CancellationToken::new();
    let client = ControlClient::start(
        ClientOptions::new(server.url())
            .token(ADMIN_TOKEN)
            .watch(false),
        &stop,
    )
    .unwrap();

    state.fail_next_set_mode(ControlError::Conflict("configmap changed".into()));
    let err = client.set_mode(Mode::Forced, "x").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.code()), Some(Code::Aborted));
    assert_eq!(
        err.status().unwrap().message(),
        "failed to set the mode: concurrent change: configmap changed"
    );

    state.fail_next_set_mode(ControlError::Unavailable("API server down".into()));
    let err = client.set_mode(Mode::Forced, "x").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.code()), Some(Code::Unavailable));

    assert_eq!(state.status_now().mode, Mode::Auto);
    server.stop().await;
}

#[tokio::test]
async fn reads_need_a_token_when_required() {
    let mut opts = authed();
    opts.require_auth_for_reads = true;
    let server = start(mk_state(), opts);
    let mut raw = raw_client(&server).await;

    let err = raw.get_status(pb::GetStatusRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = raw
        .watch_node_health(pb::WatchNodeHealthRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let status = raw
        .get_status(with_token(pb::GetStatusRequest {}, READER_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .status
        .expect("a status");
    assert_eq!(status.threshold, 3);
    server.stop().await;
}

/// The value of `ballast_control_set_mode_total{outcome=...}` in a Prometheus rendering.
fn counter(rendered: &str, outcome: &str) -> u64 {
    let prefix = format!("ballast_control_set_mode_total{{outcome=\"{outcome}\"}} ");
    rendered
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn set_mode_beyond_a_clients_rate_limit_is_resource_exhausted() {
    let metrics = ballast_runtime::metrics::prometheus();
    let limited_before = counter(&metrics.render(), "rate_limited");
    let mut opts = authed();
    opts.set_mode_per_second = NonZeroU32::new(1).unwrap();
    let state = mk_state();
    let server = start(state.clone(), opts);
    let mut raw = raw_client(&server).await;
    let req = || {
        with_token(
            pb::SetModeRequest {
                mode: pb::Mode::Forced as i32,
                reason: "burst".into(),
            },
            ADMIN_TOKEN,
        )
    };

    raw.set_mode(req()).await.unwrap();
    let err = raw.set_mode(req()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.message(), "too many SetMode calls; retry in a second");
    assert_eq!(state.status_now().mode, Mode::Forced);

    // The allowance is per client address: a caller from another address is not locked out.
    let other = Channel::from_shared(server.url())
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut other = RawClient::new(other);
    let mut calm = req();
    calm.get_mut().mode = pb::Mode::Disabled as i32;
    other.set_mode(calm).await.unwrap();
    assert_eq!(state.status_now().mode, Mode::Disabled);
    // this is the only test that hits the limit, so the delta is exact
    assert_eq!(
        counter(&metrics.render(), "rate_limited"),
        limited_before + 1
    );
    server.stop().await;
}

#[tokio::test]
async fn health_check_reports_the_control_service_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let server = start(mk_state(), authed());
    let mut health = HealthClient::new(channel(&server).await);
    for service in ["ballast.control.v1.ControlService", ""] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status(), ServingStatus::Serving, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn client_reports_unknown_while_the_server_is_down_and_recovers_after_restart() {
    let state = mk_state();
    let server = start(state.clone(), authed());
    let addr = server.addr;
    let stop = CancellationToken::new();
    let client = ControlClient::start(
        ClientOptions::new(server.url())
            .backoff(Duration::from_millis(50), Duration::from_millis(200)),
        &stop,
    )
    .unwrap();
    let mut status = client.status();
    let mut nodes = client.node_health();

    let first = wait_for("status", &mut status, Option::is_some).await;
    assert_eq!(first, Some(state.status_now()));
    let seen = wait_for("nodes", &mut nodes, Option::is_some).await;
    assert_eq!(seen.map(|n| n.len()), Some(5));

    state.upsert_node(mk_node("node-2", true));
    wait_for("node-2 ready", &mut nodes, |n| {
        n.as_ref().is_some_and(|n| n["node-2"].ready)
    })
    .await;

    server.stop().await;
    wait_for("status unknown", &mut status, Option::is_none).await;
    wait_for("nodes unknown", &mut nodes, Option::is_none).await;
    let err = client.get_status().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.code()), Some(Code::Unavailable));

    // changes made while the server is down are not visible, and nothing stale comes back
    state.update_status(|s| s.reason = "changed while down".into());
    state.remove_node("node-5");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(*status.borrow(), None);
    assert_eq!(*nodes.borrow(), None);

    let server = start_on(bind(addr), state.clone(), authed());
    let back = wait_for("status after restart", &mut status, Option::is_some).await;
    assert_eq!(back.unwrap().reason, "changed while down");
    let back: BTreeMap<String, NodeHealth> =
        wait_for("nodes after restart", &mut nodes, Option::is_some)
            .await
            .unwrap();
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        ["node-1", "node-2", "node-3", "node-4"]
    );

    // the client's tasks stop with its shutdown token and leave the view unknown
    stop.cancel();
    wait_for("status unknown after stop", &mut status, Option::is_none).await;
    server.stop().await;
}

#[tokio::test]
async fn clients_trusting_the_ca_talk_over_tls_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cert = ballast_runtime::tls::generate(&["localhost", "127.0.0.1"]).unwrap();
    let (crt, key) = cert.write_to(dir.path()).unwrap();
    let mut opts = authed();
    opts.tls = Some(ballast_runtime::tls::ReloadingTls::load(&crt, &key).unwrap());
    let state = mk_state();
    let server = start(state.clone(), opts);
    let https = format!("https://localhost:{}", server.addr.port());
    let stop = CancellationToken::new();

    let client = ControlClient::start(
        ClientOptions::new(&https)
            .ca_pem(&cert.ca_pem)
            .token(ADMIN_TOKEN),
        &stop,
    )
    .unwrap();
    assert_eq!(client.get_status().await.unwrap(), state.status_now());
    let after = client.set_mode(Mode::Forced, "over TLS").await.unwrap();
    assert_eq!(after.mode_changed_by, "alice");
    let mut watched = client.status();
    let seen = wait_for("status over TLS", &mut watched, Option::is_some).await;
    assert_eq!(seen.map(|s| s.mode), Some(Mode::Forced));

    let other_ca = ballast_runtime::tls::generate(&["localhost"])
        .unwrap()
        .ca_pem;
    let stranger = ControlClient::start(
        ClientOptions::new(&https).ca_pem(other_ca).watch(false),
        &stop,
    )
    .unwrap();
    let err = stranger.get_status().await.unwrap_err();
    assert_eq!(
        err.status().map(|s| s.code()),
        Some(Code::Unavailable),
        "{err:?}"
    );

    let plain = ControlClient::start(
        ClientOptions::new(format!("http://{}", server.addr)).watch(false),
        &stop,
    )
    .unwrap();
    assert!(plain.get_status().await.is_err());

    let bad = ControlClient::start(ClientOptions::new(&https).ca_pem("not a pem"), &stop);
    assert_eq!(
        bad.err().map(|e| e.to_string()),
        Some("failed to set up TLS to the control API: no CA certificate in the PEM".into())
    );

    stop.cancel();
    server.stop().await;
}

mod reflection {
    //! What grpcurl does: list services, fetch descriptors, call a method with no compiled stubs.

    use super::*;
    use prost::Message as _;
    use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    use tonic_reflection::pb::v1alpha;

    async fn ask(
        client: &mut ServerReflectionClient<Channel>,
        req: MessageRequest,
    ) -> MessageResponse {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(req),
        };
        let mut answers = client
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let answer: ServerReflectionResponse = next(&mut answers).await;
        answer.message_response.expect("a reflection answer")
    }

    /// The descriptor pool of `symbol`'s file and everything it imports, fetched file by file.
    async fn pool_for(
        client: &mut ServerReflectionClient<Channel>,
        symbol: &str,
    ) -> DescriptorPool {
        let mut files: BTreeMap<String, prost_types::FileDescriptorProto> = BTreeMap::new();
        let mut wanted = vec![MessageRequest::FileContainingSymbol(symbol.into())];
        while let Some(req) = wanted.pop() {
            let MessageResponse::FileDescriptorResponse(resp) = ask(client, req).await else {
                panic!("reflection did not return file descriptors");
            };
            for bytes in resp.file_descriptor_proto {
                let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
                for dep in &file.dependency {
                    if !files.contains_key(dep) {
                        wanted.push(MessageRequest::FileByFilename(dep.clone()));
                    }
                }
                files.insert(file.name().to_owned(), file);
            }
        }
        DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
            file: files.into_values().collect(),
        })
        .unwrap()
    }

    /// Encodes any dynamic message; decodes into the given message type.
    struct DynamicCodec(MessageDescriptor);
    struct DynamicDecoder(MessageDescriptor);
    struct DynamicEncoder;

    impl Codec for DynamicCodec {
        type Encode = DynamicMessage;
        type Decode = DynamicMessage;
        type Encoder = DynamicEncoder;
        type Decoder = DynamicDecoder;
        fn encoder(&mut self) -> Self::Encoder {
            DynamicEncoder
        }
        fn decoder(&mut self) -> Self::Decoder {
            DynamicDecoder(self.0.clone())
        }
    }

    impl Encoder for DynamicEncoder {
        type Item = DynamicMessage;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: DynamicMessage,
            dst: &mut EncodeBuf<'_>,
        ) -> Result<(), Self::Error> {
            item.encode(dst)
                .map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }

    impl Decoder for DynamicDecoder {
        type Item = DynamicMessage;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut DecodeBuf<'_>,
        ) -> Result<Option<DynamicMessage>, Self::Error> {
            DynamicMessage::decode(self.0.clone(), src)
                .map(Some)
                .map_err(|e| tonic::Status::internal(e.to_string()))
        }
    }

    #[tokio::test]
    async fn reflection_lists_the_control_and_health_services_on_v1_and_v1alpha() {
        let server = start(mk_state(), authed());

        let mut v1 = ServerReflectionClient::new(channel(&server).await);
        let MessageResponse::ListServicesResponse(list) =
            ask(&mut v1, MessageRequest::ListServices(String::new())).await
        else {
            panic!("not a service list");
        };
        let listed: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            listed.contains(&"ballast.control.v1.ControlService".to_owned()),
            "{listed:?}"
        );
        assert!(
            listed.contains(&"grpc.health.v1.Health".to_owned()),
            "{listed:?}"
        );

        let mut alpha =
            v1alpha::server_reflection_client::ServerReflectionClient::new(channel(&server).await);
        let mut answers = alpha
            .server_reflection_info(futures::stream::iter([v1alpha::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
                ),
            }]))
            .await
            .unwrap()
            .into_inner();
        let answer = next(&mut answers).await;
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            answer.message_response
        else {
            panic!("not a service list");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "ballast.control.v1.ControlService")
        );
        server.stop().await;
    }

    /// The naming rules `buf lint` enforces by default: a `Service` suffix; each RPC takes
    /// `<Rpc>Request` and returns `<Rpc>Response`, none shared with another RPC; enum values
    /// prefixed with the enum's name, the zero value `_UNSPECIFIED`.
    #[test]
    fn the_api_follows_buf_naming_conventions() {
        let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptors");
        let mut seen = std::collections::BTreeSet::new();
        let mut services = 0;
        for service in pool.services() {
            services += 1;
            assert!(service.name().ends_with("Service"), "{}", service.name());
            for m in service.methods() {
                assert_eq!(m.input().name(), format!("{}Request", m.name()));
                assert_eq!(m.output().name(), format!("{}Response", m.name()));
                for message in [
                    m.input().full_name().to_owned(),
                    m.output().full_name().to_owned(),
                ] {
                    assert!(
                        seen.insert(message.clone()),
                        "{message} is used by two RPCs"
                    );
                }
            }
        }
        assert_eq!(services, 1);
        for e in pool
            .all_enums()
            .filter(|e| e.package_name() == "ballast.control.v1")
        {
            let prefix = e.name().to_uppercase();
            for v in e.values() {
                assert!(v.name().starts_with(&format!("{prefix}_")), "{}", v.name());
            }
            let zero = e.get_value(0).expect("a zero value");
            assert_eq!(zero.name(), format!("{prefix}_UNSPECIFIED"));
        }
    }

    #[tokio::test]
    async fn a_client_without_stubs_calls_get_status_from_reflected_descriptors() {
        let server = start(mk_state(), authed());
        let mut reflection = ServerReflectionClient::new(channel(&server).await);
        let pool = pool_for(&mut reflection, "ballast.control.v1.ControlService").await;

        let service = pool
            .get_service_by_name("ballast.control.v1.ControlService")
            .expect("service in the reflected descriptors");
        let method = service
            .methods()
            .find(|m| m.name() == "GetStatus")
            .expect("GetStatus method");
        assert_eq!(
            method.output().full_name(),
            "ballast.control.v1.GetStatusResponse"
        );
        let path: http::uri::PathAndQuery = format!("/{}/{}", service.full_name(), method.name())
            .parse()
            .unwrap();

        let channel = Channel::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let resp = grpc
            .unary(
                tonic::Request::new(DynamicMessage::new(method.input())),
                path,
                DynamicCodec(method.output()),
            )
            .await
            .unwrap()
            .into_inner();
        let resp = resp.get_field_by_name("status").expect("a status field");
        let resp = resp
            .as_message()
            .expect("status is an InterceptionStatus message");
        assert_eq!(
            resp.descriptor().full_name(),
            "ballast.control.v1.InterceptionStatus"
        );

        assert_eq!(
            resp.get_field_by_name("reason").as_deref(),
            Some(&Value::String(
                "3 of 5 worker nodes NotReady within 5m".into()
            ))
        );
        assert_eq!(
            resp.get_field_by_name("mode").as_deref(),
            Some(&Value::EnumNumber(pb::Mode::Auto as i32))
        );
        assert_eq!(
            resp.get_field_by_name("threshold").as_deref(),
            Some(&Value::U32(3))
        );
        let window = resp.get_field_by_name("window").unwrap();
        let window = window.as_message().expect("window is a Duration message");
        assert_eq!(window.descriptor().full_name(), "google.protobuf.Duration");
        assert_eq!(
            window.get_field_by_name("seconds").as_deref(),
            Some(&Value::I64(300))
        );
        server.stop().await;
    }
}

/// podmanager's and the provisioner's flags: a CA file for TLS and a token file read at every
/// call, so a projected token the kubelet rotates is followed without a restart.
#[tokio::test]
async fn a_client_from_ca_and_token_files_talks_tls_and_follows_a_rotated_token() {
    let dir = tempfile::tempdir().unwrap();
    let cert = ballast_runtime::tls::generate(&["localhost"]).unwrap();
    let (crt, key) = cert.write_to(dir.path()).unwrap();
    let mut opts = authed();
    opts.tls = Some(ballast_runtime::tls::ReloadingTls::load(&crt, &key).unwrap());
    let state = mk_state();
    let server = start(state.clone(), opts);
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &cert.ca_pem).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{READER_TOKEN}\n")).unwrap();

    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        control: ballast_control::ControlClientArgs,
    }
    let cli = Cli::try_parse_from([
        "svc".to_owned(),
        format!("--control-ca-file={}", ca_file.display()),
        format!("--control-token-file={}", token_file.display()),
    ])
    .unwrap();
    let stop = CancellationToken::new();
    let https = format!("https://localhost:{}", server.addr.port());
    let client =
        ControlClient::start(cli.control.options(&https).unwrap().watch(false), &stop).unwrap();

    // bob's token: reads work over TLS, SetMode is denied
    assert_eq!(client.get_status().await.unwrap(), state.status_now());
    let err = client.set_mode(Mode::Disabled, "bob").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.code()), Some(Code::PermissionDenied));
    // the kubelet rotates the projected token: the next call carries the new one
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let after = client.set_mode(Mode::Disabled, "alice").await.unwrap();
    assert_eq!(after.mode_changed_by, "alice");
    // a token file gone: no token sent, the server says who is missing
    std::fs::remove_file(&token_file).unwrap();
    let err = client.set_mode(Mode::Auto, "nobody").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.code()), Some(Code::Unauthenticated));

    // an unreadable CA file is refused at start, naming the file
    let missing = ballast_control::ControlClientArgs {
        control_ca_file: Some(dir.path().join("nope.crt")),
        control_token_file: None,
    };
    let err = missing.options(&https).unwrap_err();
    assert!(err.to_string().contains("nope.crt"), "{err}");
    server.stop().await;
}
