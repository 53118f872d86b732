//! A webhook server under abuse keeps answering real reviews with bounded memory: 2,000 idle TLS
//! connections, slow-header clients and 200 concurrent 4 MiB bodies at once, while a real
//! AdmissionReview must still be answered in under a second.
//!
//! The server runs in a child process (this test binary again, see `stress_server_child`), so
//! its resident memory is measured apart from the clients'.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ballast_runtime::admission::{Answer, Handler, MAX_BODY_BYTES, Request, route};
use ballast_runtime::http::{Limits, serve_with};
use ballast_runtime::tls::{ReloadingTls, generate, install_crypto_provider};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// Set in the child's environment: serve instead of test.
const CHILD_ENV: &str = "BALLAST_STRESS_SERVER_DIR";
/// The guard's memory limit in its manifest (kustomize/eviction-guard/base/deployment.yaml).
const MANIFEST_MEMORY_LIMIT_BYTES: u64 = 256 * 1024 * 1024;
const IDLE_CONNECTIONS: usize = 2_000;
const SLOW_HEADER_CLIENTS: usize = 50;
const BIG_BODIES: usize = 200;
/// Shortened so the test sees idle and slow clients closed within seconds.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// 64 KiB every 20 ms: each 4 MiB body takes about 1.3 s to send.
const BODY_CHUNK_PERIOD: Duration = Duration::from_millis(20);

const REVIEW: &str = include_str!("data/pod-delete-user.json");

struct AllowAll;

impl Handler for AllowAll {
    /// The whole object, as a handler reading everything would: the memory bound must hold.
    type Object<'a> = serde_json::Value;

    async fn review<'r, 'a: 'r>(&'r self, _: &'r Request<'a, serde_json::Value>) -> Answer {
        Answer::allow()
    }
}

/// The child: serves `/validate` over TLS with certificates from the directory in
/// [`CHILD_ENV`], prints its port, serves until stdin closes. A no-op in a normal test run.
/// Two workers, as the services run (`#[tokio::main]` on a 2-core node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_server_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    install_crypto_provider();
    let dir = std::path::PathBuf::from(dir);
    let tls = ReloadingTls::load(&dir.join("tls.crt"), &dir.join("tls.key")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("PORT={}", listener.local_addr().unwrap().port());
    let router = axum::Router::new().route("/validate", route("stress", Arc::new(AllowAll)));
    let shutdown = CancellationToken::new();
    let limits = Limits {
        idle_timeout: IDLE_TIMEOUT,
        header_read_timeout: HEADER_READ_TIMEOUT,
        ..Limits::default()
    };
    let stop = shutdown.clone();
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
        stop.cancel();
    });
    serve_with(listener, router, Some(tls), shutdown, limits)
        .await
        .unwrap();
}

struct ChildServer {
    child: Child,
    port: u16,
}

impl ChildServer {
    fn start(cert_dir: &std::path::Path) -> ChildServer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "stress_server_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, cert_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines.next().expect("the child printed its port").unwrap();
            // libtest writes "test name ... " without a newline before the test's own output.
            if let Some((_, port)) = line.split_once("PORT=") {
                break port.trim().parse().unwrap();
            }
        };
        // Keep draining the child's output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        ChildServer { child, port }
    }

    /// Peak resident memory of the child so far (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status");
        kib * 1024
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &TlsConnector,
    port: u16,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// Sends one AdmissionReview on a fresh connection and returns the status and the time taken.
async fn real_review(connector: &TlsConnector, port: u16) -> (u16, Duration) {
    let started = Instant::now();
    let tls = tls_connect(connector, port).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/validate")
        .header(http::header::HOST, "127.0.0.1")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(REVIEW.as_bytes())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("\"allowed\":true"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    (status, started.elapsed())
}

/// Posts a 4 MiB body streamed from one static buffer (the client holds no copy of it), a chunk
/// every [`BODY_CHUNK_PERIOD`]: many slow uploads at once, as from many misbehaving clients.
async fn big_body(connector: TlsConnector, port: u16) -> Option<u16> {
    static CHUNK: [u8; 64 * 1024] = [b' '; 64 * 1024];
    let tls = tls_connect(&connector, port).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn);
    let chunks = MAX_BODY_BYTES / CHUNK.len();
    let stream = futures::stream::unfold(0, move |sent| async move {
        if sent == chunks {
            return None;
        }
        tokio::time::sleep(BODY_CHUNK_PERIOD).await;
        let frame = Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(&CHUNK)));
        Some((frame, sent + 1))
    });
    let req = http::Request::post("/validate")
        .header(http::header::HOST, "127.0.0.1")
        .body(StreamBody::new(stream))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    Some(resp.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abusive_clients_cost_bounded_memory_and_real_reviews_still_pass() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let cert = generate(&["127.0.0.1"]).unwrap();
    cert.write_to(dir.path()).unwrap();
    let server = ChildServer::start(dir.path());
    let connector = connector(&cert.ca_pem);
    let baseline = real_review(&connector, server.port).await;
    assert_eq!(baseline.0, 200);

    // 2,000 clients that finish the TLS handshake and then say nothing.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for chunk in 0..IDLE_CONNECTIONS / 100 {
        let batch =
            futures::future::join_all((0..100).map(|_| tls_connect(&connector, server.port))).await;
        for conn in batch {
            idle.push(conn.unwrap_or_else(|e| panic!("idle connection {chunk}: {e}")));
        }
    }
    // Slow-header clients: a request line, then one byte of header every 500 ms.
    let mut slow = Vec::new();
    for _ in 0..SLOW_HEADER_CLIENTS {
        let connector = connector.clone();
        let port = server.port;
        slow.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut tls = tls_connect(&connector, port).await.unwrap();
            if tls
                .write_all(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .is_err()
            {
                return started.elapsed();
            }
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if tls.write_all(b"a").await.is_err() || tls.flush().await.is_err() {
                    return started.elapsed();
                }
                let mut probe = [0u8; 256];
                // End of stream, an error or any answer: the server gave up on the request.
                if let Ok(_closed_or_answered) =
                    tokio::time::timeout(Duration::from_millis(1), tls.read(&mut probe)).await
                {
                    return started.elapsed();
                }
                if started.elapsed() > Duration::from_secs(30) {
                    return started.elapsed();
                }
            }
        }));
    }

    // 200 concurrent 4 MiB bodies.
    let big: Vec<_> = (0..BIG_BODIES)
        .map(|_| tokio::spawn(big_body(connector.clone(), server.port)))
        .collect();

    // Meanwhile, a real review must still pass quickly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, took) = real_review(&connector, server.port).await;
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(1),
        "a real review took {took:?} under load"
    );
    // Every upload ends: spaces are not an AdmissionReview, so a clear 400 once read within the
    // budget; a 503 (or the connection closed mid-upload after it) for those still waiting for
    // the budget at their deadline. None is held open.
    let mut read = 0;
    for handle in big {
        let outcome = tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("every upload ends")
            .unwrap();
        if let Some(code) = outcome {
            assert!(code == 400 || code == 503, "a big body got {code}");
            if code == 400 {
                read += 1;
            }
        }
    }
    assert!(
        read > 0,
        "some big bodies were read and refused as malformed"
    );
    for handle in slow {
        let held = handle.await.unwrap();
        assert!(
            held < HEADER_READ_TIMEOUT + Duration::from_secs(3),
            "a slow-header client was held for {held:?}"
        );
    }

    // The idle clients were closed by the server: reading gives end-of-stream (or a reset).
    tokio::time::sleep(IDLE_TIMEOUT + Duration::from_millis(500)).await;
    let mut closed = 0;
    for mut conn in idle {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    assert_eq!(closed, IDLE_CONNECTIONS, "idle connections are closed");

    let peak = server.peak_rss();
    assert!(
        peak < MANIFEST_MEMORY_LIMIT_BYTES,
        "the server peaked at {} MiB, over its {} MiB limit",
        peak / 1024 / 1024,
        MANIFEST_MEMORY_LIMIT_BYTES / 1024 / 1024
    );
    eprintln!(
        "peak RSS {} MiB with {IDLE_CONNECTIONS} idle TLS connections, {SLOW_HEADER_CLIENTS} \
         slow-header clients and {BIG_BODIES} x 4 MiB bodies; a real review took {took:?}",
        peak / 1024 / 1024
    );

    // And the server still answers afterwards.
    assert_eq!(real_review(&connector, server.port).await.0, 200);
}
