//! Watches are served per resource type, as the API server's watch cache (one cacher per
//! resource) serves them: a burst of writes of one kind does not expire a watch of another.

use ballast_e2e::{SimConfig, TestEnv};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test]
async fn a_burst_of_another_kind_does_not_expire_a_watch() {
    // A history of 5 events per resource type: the burst of secrets below is far longer.
    let env = TestEnv::start(SimConfig::default().watch_history(5)).await;
    let cms: Api<ConfigMap> = env.api();
    let secrets: Api<Secret> = env.api();
    let pp = PostParams::default();
    let from = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"e2e.ballast.dev/own": "yes"}},
            "data": {"k": "v"}}),
        )
        .unwrap()
    };
    cms.create(&pp, &cm("before")).await.unwrap();
    for i in 0..30 {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).unwrap();
        secrets.create(&pp, &s).await.unwrap();
    }
    cms.create(&pp, &cm("after")).await.unwrap();

    // Resuming the config maps from before the burst: both creates, in order, no 410. (The
    // scenario's own only: a real cluster adds kube-root-ca.crt to a new namespace.)
    let mut stream = cms
        .watch(
            &WatchParams::default()
                .labels("e2e.ballast.dev/own=yes")
                .timeout(5),
            &from,
        )
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match stream.next().await {
            Some(Ok(WatchEvent::Added(o))) => seen.push(o.name_any()),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => panic!("expected the config maps' ADDED events, got {other:?}"),
        }
    }
    assert_eq!(seen, ["before", "after"]);
    drop(stream);

    // The secrets' own history holds only the last 5 events: resuming them from there is gone.
    if env.sim_only().is_some() {
        let mut stream = secrets
            .watch(&WatchParams::default().timeout(5), &from)
            .await
            .unwrap()
            .boxed();
        match stream.next().await {
            Some(Ok(WatchEvent::Error(e))) => {
                assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
            }
            Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
            other => panic!("expected 410 Gone for the secrets, got {other:?}"),
        }
    }
    env.shutdown().await;
}
