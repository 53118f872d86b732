//! Label selectors as the API server parses them (`labels.Parse`): what it refuses, with its
//! message, and what an accepted selector means.

use ballast_e2e::{SimConfig, TestEnv};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn label_selectors_are_parsed_as_the_api_server_parses_them() {
    let env = TestEnv::start(SimConfig::default()).await;
    let api: Api<ConfigMap> = Api::namespaced(env.client.clone(), &env.namespace);
    for (name, tier) in [("empty", ""), ("web", "web")] {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"tier": tier}}}))
        .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }

    let refused = [
        (
            "=b",
            "found '=', expected: !, identifier, or 'end of string'",
        ),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        (
            "a in x",
            "unable to parse requirement: found 'x' expected: '('",
        ),
        ("a,", "found '', expected: identifier after ','"),
        (
            "a b",
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
        ),
    ];
    for (selector, message) in refused {
        match api.list(&ListParams::default().labels(selector)).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(
                    (s.code, s.reason.as_str()),
                    (400, "BadRequest"),
                    "{selector}"
                );
                assert!(
                    s.message.contains(message),
                    "{selector}: {:?} does not say {message:?}",
                    s.message
                );
            }
            other => panic!("{selector}: expected 400 BadRequest, got {other:?}"),
        }
    }

    // `()` is the empty value, not the empty set. (Only the scenario's own ConfigMaps count: a
    // real cluster puts kube-root-ca.crt in every namespace, and it has no tier label.)
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .filter(|n| n == "empty" || n == "web")
            .collect()
    };
    let empty = api
        .list(&ListParams::default().labels("tier in ()"))
        .await
        .unwrap();
    assert_eq!(names(empty), vec!["empty".to_string()]);
    let not_empty = api
        .list(&ListParams::default().labels("tier notin (,)"))
        .await
        .unwrap();
    assert_eq!(names(not_empty), vec!["web".to_string()]);
    env.shutdown().await;
}
