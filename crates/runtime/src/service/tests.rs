use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Runtime(#[from] Error),
    #[error("the watch broke")]
    Broken,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A task that runs until the service stops, noting that it stopped.
async fn until_stopped(
    shutdown: CancellationToken,
    stopped: Arc<AtomicUsize>,
) -> std::result::Result<(), TestError> {
    shutdown.cancelled().await;
    stopped.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn a_failing_task_stops_the_others_and_wait_returns_its_error() {
    let caller = CancellationToken::new();
    let mut svc: Service<TestError> = Service::new("test", "0", &caller);
    let stopped = Arc::new(AtomicUsize::new(0));
    svc.spawn("server", until_stopped(svc.shutdown(), stopped.clone()));
    svc.spawn("watch", async { Err::<(), _>(TestError::Broken) });
    let result = tokio::time::timeout(Duration::from_secs(5), svc.into_tasks().wait())
        .await
        .expect("the failure stops the service");
    assert_eq!(result.unwrap_err().to_string(), "the watch broke");
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "the server was stopped");
    assert!(
        !caller.is_cancelled(),
        "a failure stops this service, not others sharing the caller's token"
    );
}

#[tokio::test]
async fn a_panicking_task_stops_the_service_with_an_error_naming_it() {
    let caller = CancellationToken::new();
    let mut svc: Service<TestError> = Service::new("test", "0", &caller);
    let stopped = Arc::new(AtomicUsize::new(0));
    svc.spawn("server", until_stopped(svc.shutdown(), stopped.clone()));
    svc.spawn("reconciler", async {
        let name: Option<&str> = std::hint::black_box(None);
        assert!(name.is_some(), "the object has a name");
        Ok::<(), TestError>(())
    });
    let result = tokio::time::timeout(Duration::from_secs(5), svc.into_tasks().wait())
        .await
        .expect("the panic stops the service");
    assert_eq!(
        result.unwrap_err().to_string(),
        "test: reconciler panicked: the object has a name"
    );
    assert_eq!(stopped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_callers_shutdown_stops_every_task_and_wait_returns_ok() {
    let caller = CancellationToken::new();
    let mut svc: Service<TestError> = Service::new("test", "0", &caller);
    let stopped = Arc::new(AtomicUsize::new(0));
    for name in ["a", "b"] {
        svc.spawn(name, until_stopped(svc.shutdown(), stopped.clone()));
    }
    let tasks = svc.into_tasks();
    caller.cancel();
    tasks.wait().await.unwrap();
    assert_eq!(stopped.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bind_reports_the_bound_port_and_a_taken_port_names_the_listener() {
    let caller = CancellationToken::new();
    let svc: Service<TestError> = Service::new("test", "0", &caller);
    let (_listener, addr) = svc.bind("the admin server", loopback()).await.unwrap();
    assert_ne!(addr.port(), 0);
    let err = svc
        .bind("the admin server (--admin-port, ADMIN_PORT)", addr)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to bind the admin server (--admin-port, ADMIN_PORT) on {addr}")
    );
}

#[tokio::test]
async fn the_admin_server_reports_registered_checks() {
    let caller = CancellationToken::new();
    let mut svc: Service<TestError> = Service::new("test", "0", &caller);
    let (listener, addr) = svc.bind("admin", loopback()).await.unwrap();
    svc.readiness().register("cache");
    let readiness = svc.readiness().clone();
    svc.serve_admin(listener);
    let tasks = svc.into_tasks();
    let readyz = format!("http://{addr}/readyz");
    let not_ready = reqwest::get(&readyz).await.unwrap();
    assert_eq!(not_ready.status(), 503);
    assert_eq!(not_ready.text().await.unwrap(), "not ready: cache\n");
    readiness.set("cache", true);
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);
    tasks.stop();
    tasks.wait().await.unwrap();
}

#[tokio::test]
async fn work_without_a_lease_runs_at_once_is_restarted_and_stops_with_the_service() {
    // No client call is made without a lease: any address will do.
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let caller = CancellationToken::new();
    let mut svc: Service<TestError> = Service::new("test", "0", &caller);
    let starts = Arc::new(AtomicUsize::new(0));
    let counted = starts.clone();
    let leading = svc.run_while_leading("work", &client, None, move |stop| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            // The first run ends on its own; the second runs until told to stop.
            if n > 0 {
                stop.cancelled().await;
            }
        }
    });
    assert!(*leading.borrow(), "without a lease this replica leads");
    let tasks = svc.into_tasks();
    tokio::time::timeout(Duration::from_secs(5), async {
        while starts.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the work is restarted after it ended");
    caller.cancel();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the work stops with the service")
        .unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 2);
}
