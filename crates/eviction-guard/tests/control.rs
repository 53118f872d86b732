//! The guard as host of the gRPC control service, in-process on 127.0.0.1:0: what grpcurl and
//! the other components' ControlClient see.

use std::sync::Arc;
use std::time::Duration;

use ballast_control::{ClientOptions, ControlClient, Mode, ServerOptions};
use chrono::Utc;
use eviction_guard::Guard;
use eviction_guard::storm::{NodeState, StormConfig};
use tokio_util::sync::CancellationToken;

fn node(name: &str, ready: bool) -> NodeState {
    NodeState {
        name: name.to_owned(),
        ready,
        since: Some(Utc::now()),
        reason: if ready {
            "KubeletReady"
        } else {
            "NodeStatusUnknown"
        }
        .to_owned(),
        zone: Some("zone-1".to_owned()),
        out_of_service: false,
    }
}

async fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn control_clients_see_the_storm_change_the_mode_and_follow_recovery() {
    // no settle period: the storm is over as soon as fewer than three nodes are NotReady
    let cfg = StormConfig {
        settle: Duration::ZERO,
        ..StormConfig::default()
    };
    let guard = Guard::new(cfg, None);
    guard.replace_workers([
        node("node-1", false),
        node("node-2", false),
        node("node-3", false),
        node("node-4", true),
        node("node-5", true),
    ]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ballast_control::serve(
        listener,
        Arc::clone(&guard),
        ServerOptions::local(),
        shutdown.clone(),
    ));
    let client =
        ControlClient::start(ClientOptions::new(format!("http://{addr}")), &shutdown).unwrap();

    let status = client.get_status().await.unwrap();
    assert!(status.synced && status.protecting);
    assert_eq!(status.mode, Mode::Auto);
    assert_eq!(status.reason, "3 of 5 worker nodes NotReady within 5m");
    assert_eq!(status.notready_nodes, ["node-1", "node-2", "node-3"]);
    assert_eq!(status.threshold, 3);
    assert_eq!(status.window, Duration::from_secs(300));

    let nodes = client.list_node_health().await.unwrap();
    assert!(nodes.synced);
    assert_eq!(nodes.nodes.len(), 5);
    assert!(!nodes.nodes["node-1"].ready);
    assert_eq!(nodes.nodes["node-1"].reason, "NodeStatusUnknown");
    assert_eq!(nodes.nodes["node-4"].zone, "zone-1");

    let after = client
        .set_mode(Mode::Forced, "rack 4 maintenance")
        .await
        .unwrap();
    assert_eq!(after.mode, Mode::Forced);
    assert_eq!(after.mode_changed_by, "local");
    assert_eq!(after.mode_reason, "rack 4 maintenance");
    assert_eq!(guard.mode().mode, Mode::Forced);
    client.set_mode(Mode::Auto, "done").await.unwrap();

    // watchers follow recovery: two nodes come back, protection ends by itself
    let watched = client.status();
    let health = client.node_health();
    guard.upsert_worker(node("node-1", true));
    guard.upsert_worker(node("node-2", true));
    let off = wait_until("protection to end", || {
        watched.borrow().clone().filter(|s| !s.protecting)
    })
    .await;
    assert_eq!(off.notready_nodes, ["node-3"]);
    assert!(
        off.reason
            .starts_with("1 of 5 worker nodes NotReady: no storm"),
        "{}",
        off.reason
    );
    wait_until("node-1 Ready in the node health watch", || {
        health
            .borrow()
            .as_ref()
            .and_then(|n| n.get("node-1").map(|n| n.ready))
            .filter(|ready| *ready)
    })
    .await;

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
