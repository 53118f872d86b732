//! SIGTERM: `/readyz` fails at once, the servers keep answering for the drain period, then stop
//! and the process exits. The server runs in a child process (this test binary again, see
//! `terminating_server_child`), since the test sends it a real signal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use ballast_runtime::admin::{self, Readiness};
use ballast_runtime::shutdown::on_signals_after;
use tokio::net::TcpListener;

/// Set in the child's environment: serve instead of test.
const CHILD_ENV: &str = "BALLAST_TERMINATION_CHILD";
const DRAIN: Duration = Duration::from_millis(1500);

/// The child: an admin server and a "webhook" server sharing one signal-driven shutdown, as in
/// every service. A no-op in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_server_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let shutdown = on_signals_after(DRAIN);
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let work_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!(
        "PORTS={} {}",
        admin_listener.local_addr().unwrap().port(),
        work_listener.local_addr().unwrap().port()
    );
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        Readiness::new(),
        shutdown.clone(),
    ));
    let router = Router::new().route("/work", get(|| async { "done" }));
    let work = tokio::spawn(ballast_runtime::http::serve(
        work_listener,
        router,
        None,
        shutdown,
    ));
    admin.await.unwrap().unwrap();
    work.await.unwrap().unwrap();
    println!("STOPPED");
}

#[tokio::test]
async fn sigterm_fails_readiness_at_once_serves_through_the_drain_then_stops() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "terminating_server_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (admin, work) = loop {
        let line = lines.next().expect("the child printed its ports").unwrap();
        // libtest writes "test name ... " without a newline before the test's own output.
        if let Some((_, ports)) = line.split_once("PORTS=") {
            let (a, w) = ports.trim().split_once(' ').unwrap();
            break (a.parse::<u16>().unwrap(), w.parse::<u16>().unwrap());
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let get = |port: u16, path: &str| http.get(format!("http://127.0.0.1:{port}{path}")).send();
    assert_eq!(get(admin, "/readyz").await.unwrap().status(), 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(kill.success());
    let signalled = Instant::now();

    // Readiness fails at once (the signal task runs within milliseconds).
    let not_ready = loop {
        let resp = get(admin, "/readyz").await.unwrap();
        if resp.status() == 503 {
            break resp.text().await.unwrap();
        }
        assert!(
            signalled.elapsed() < Duration::from_millis(500),
            "still ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(not_ready, "not ready: shutting down\n");

    // During the drain, new requests are still served.
    let during = get(work, "/work").await.unwrap();
    assert_eq!(during.text().await.unwrap(), "done");
    assert!(
        signalled.elapsed() < DRAIN,
        "checked within the drain period"
    );

    // Then the listeners close and the process exits on its own.
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let lasted = signalled.elapsed();
    assert!(exit.success(), "{exit:?}");
    assert!(
        lasted >= DRAIN,
        "stopped after {lasted:?}, before the drain ended"
    );
    assert!(
        lasted < DRAIN + Duration::from_secs(5),
        "took {lasted:?} to stop"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("STOPPED")), "{rest:?}");
    assert!(get(work, "/work").await.is_err(), "the listener is closed");
}
