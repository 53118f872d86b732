//! Installing and renewing eviction-guard never blocks deletions: the deletions webhook ships
//! failing open, so before any guard is ready a pod delete is not refused for want of a webhook
//! to call; a ready guard switches it to `Fail`; its caBundle is reconciled continuously (removed
//! by someone, the Secret rotated, the configuration recreated as shipped), and the documented
//! break-glass patch lets deletions through when no guard answers.
//!
//! Runs on kube-sim and on a real control plane (the API server calls the guard at
//! `E2E_WEBHOOK_HOST`); the guard counts only the scenario's nodes and its configuration reviews
//! only the scenario's namespace.

use std::time::{Duration, Instant};

use ballast_e2e::{SimConfig, TestEnv, WebhookHost, wait_for};
use eviction_guard::webhook_config::{
    DELETIONS_WEBHOOK, STATUS_WEBHOOK, validating_webhook_configuration,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Longest wait for any condition: a node grace comes first on a real control plane.
const TIMEOUT: Duration = Duration::from_secs(60);
const SECRET: &str = "eviction-guard-tls";

/// A pod bound to `node`, tolerating the node lifecycle's NoExecute taints forever: the deletes
/// this scenario makes are the only ones (the taint eviction controller of a real cluster
/// leaves it alone).
fn pod(ns: &str, name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx"}],
                 "tolerations": [
                     {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
                     {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]}
    }))
    .expect("valid pod")
}

/// (failurePolicy of the deletions webhook, caBundle of every webhook).
async fn state(api: &Api<ValidatingWebhookConfiguration>, name: &str) -> (String, Vec<Vec<u8>>) {
    let cfg = api.get(name).await.expect("the configuration");
    let hooks = cfg.webhooks.unwrap_or_default();
    let policy = hooks
        .iter()
        .find(|h| h.name == DELETIONS_WEBHOOK)
        .and_then(|h| h.failure_policy.clone())
        .unwrap_or_default();
    let bundles = hooks
        .iter()
        .map(|h| {
            h.client_config
                .ca_bundle
                .clone()
                .map(|b| b.0)
                .unwrap_or_default()
        })
        .collect();
    (policy, bundles)
}

/// The configuration as `kubectl apply -k` creates it, calling `host:port`, narrowed to the
/// scenario's namespace.
fn shipped(
    env: &TestEnv,
    name: &str,
    host: &WebhookHost,
    port: u16,
) -> ValidatingWebhookConfiguration {
    env.scoped(validating_webhook_configuration(
        name,
        WebhookClientConfig {
            url: Some(host.url(port, "/validate")),
            ca_bundle: None,
            service: None,
        },
        &["kube-system"],
    ))
}

/// Waits until a dry-run delete of pod `name` (nothing is deleted) gets an answer `wanted` takes
/// (`Err((code, message))` for a refusal): a real API server calls the webhooks of a changed
/// configuration a moment after it is stored.
async fn wait_for_dry_run_delete(
    pods: &Api<Pod>,
    name: &str,
    what: &str,
    wanted: impl Fn(&Result<(), (u16, String)>) -> bool,
) {
    let dry_run = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    wait_for(what, TIMEOUT, || async {
        let answer = match pods.delete(name, &dry_run).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) => Err((s.code, s.message)),
            Err(_) => return None,
        };
        wanted(&answer).then_some(())
    })
    .await;
}

/// The break-glass command of kustomize/README.md, as a patch body:
/// `kubectl patch validatingwebhookconfiguration eviction-guard --type=json -p '<this>'`.
const BREAK_GLASS: &str =
    r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installing_and_renewing_the_guard_never_blocks_deletions() {
    let env = TestEnv::start(
        SimConfig::default()
            .nodes(5)
            .kubelet(true)
            .node_grace(Duration::from_millis(300)),
    )
    .await;
    let Some(host) = env.webhook_host_or_skip("the eviction-guard install scenario") else {
        env.shutdown().await;
        return;
    };
    let client = env.client.clone();
    let ns = env.namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for i in 1..=5 {
        pods.create(
            &PostParams::default(),
            &pod(ns, &format!("web-{i}"), &env.node(i)),
        )
        .await
        .expect("pod created");
    }
    for i in 1..=3 {
        env.fail_node(&env.node(i));
    }

    // `kubectl apply -k` has created the configuration; no guard answers at its address yet
    let port = std::net::TcpListener::bind(host.bind_addr(0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let name = format!("eviction-guard-{ns}");
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    webhooks
        .create(&PostParams::default(), &shipped(&env, &name, &host, port))
        .await
        .expect("configuration created");
    let nodes: Api<Node> = Api::all(client.clone());
    let scenario_nodes = ListParams::default().labels(&env.node_selector());
    wait_for("three nodes NotReady", TIMEOUT, || async {
        let list = nodes.list(&scenario_nodes).await.ok()?;
        let notready = list
            .items
            .iter()
            .filter(|n| !eviction_guard::storm::NodeState::from_node(n).ready)
            .count();
        (notready == 3).then_some(())
    })
    .await;
    let before = pods.delete("web-1", &DeleteParams::default()).await;
    assert!(
        before.is_ok(),
        "with no guard yet, a delete on a NotReady node must not be refused: {before:?}"
    );

    // the guard starts as the self-signed manifest configures it
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = eviction_guard::Config::loopback(client.clone());
    config.webhook_addr = host.bind_addr(port);
    config.worker_selector = env.node_selector().parse().expect("a node selector");
    config.tls = Some(ballast_runtime::tls::cert_paths(dir.path(), None, None));
    config.namespace = ns.to_owned();
    config.self_signed.self_signed_secret = Some(SECRET.to_owned());
    config.self_signed.webhook_configuration = Some(name.clone());
    config.self_signed.webhook_service_dns = Some(host.host.clone());
    let shutdown = CancellationToken::new();
    let running = eviction_guard::start(config, shutdown.clone())
        .await
        .expect("guard starts");
    let ready = wait_for("the guard to be ready", TIMEOUT, || async {
        running.readiness.is_ready().then(Instant::now)
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret_ca = |s: Secret| s.data.unwrap_or_default()["ca.crt"].0.clone();
    let ca = secret_ca(secrets.get(SECRET).await.expect("the Secret"));
    wait_for("the deletions webhook to fail closed", TIMEOUT, || async {
        let (policy, bundles) = state(&webhooks, &name).await;
        (policy == "Fail" && bundles.iter().all(|b| *b == ca)).then_some(())
    })
    .await;
    eprintln!(
        "failurePolicy Fail {:?} after the guard was ready",
        ready.elapsed()
    );
    assert!(
        ready.elapsed() < Duration::from_secs(2),
        "{:?}",
        ready.elapsed()
    );
    let status = state(&webhooks, &name).await;
    let status_policy = webhooks
        .get(&name)
        .await
        .expect("configuration")
        .webhooks
        .unwrap()
        .into_iter()
        .find(|h| h.name == STATUS_WEBHOOK)
        .and_then(|h| h.failure_policy);
    assert_eq!(status_policy.as_deref(), Some("Ignore"), "{status:?}");
    wait_for("the guard to see the storm", TIMEOUT, || async {
        use ballast_control::ControlState;
        running.guard.status().borrow().protecting.then_some(())
    })
    .await;
    let refused = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Ok(either) => panic!("expected the guard to refuse, got {either:?}"),
        Err(e) => panic!("expected an API error, got {e}"),
    };
    wait_for_dry_run_delete(
        &pods,
        "web-2",
        "the API server to call the guard",
        |r| matches!(r, Err((_, message)) if message.contains("denied the request")),
    )
    .await;
    let (code, message) = refused(pods.delete("web-2", &DeleteParams::default()).await);
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains("denied the request"),
        "refused by the guard, not for a failed call: {message}"
    );

    // someone removes the caBundle: put back within seconds
    let removed = Instant::now();
    let remove = json!([
        {"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"},
        {"op": "remove", "path": "/webhooks/1/clientConfig/caBundle"},
    ]);
    webhooks
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_value(remove).expect("a JSON patch")),
        )
        .await
        .expect("caBundle removed");
    wait_for("the caBundle to be put back", TIMEOUT, || async {
        let (policy, bundles) = state(&webhooks, &name).await;
        (policy == "Fail" && bundles.iter().all(|b| *b == ca)).then_some(())
    })
    .await;
    eprintln!("removed caBundle restored after {:?}", removed.elapsed());
    assert!(removed.elapsed() < Duration::from_secs(5));

    // the Secret is rotated: the new CA is trusted alongside the old one within a pass, served
    // once trusted, and the old one dropped a while after
    let rotated = ballast_runtime::tls::generate(&host.cert_names()).expect("a certificate");
    let mut secret = secrets.get(SECRET).await.expect("the Secret");
    let data = secret.data.get_or_insert_with(Default::default);
    data.insert(
        "ca.crt".into(),
        ByteString(rotated.ca_pem.clone().into_bytes()),
    );
    data.insert(
        "tls.crt".into(),
        ByteString(rotated.cert_pem.clone().into_bytes()),
    );
    data.insert(
        "tls.key".into(),
        ByteString(rotated.key_pem.clone().into_bytes()),
    );
    let rotation = Instant::now();
    secrets
        .replace(SECRET, &PostParams::default(), &secret)
        .await
        .expect("Secret rotated");
    let new_ca = rotated.ca_pem.into_bytes();
    let contains = |bundle: &[u8], ca: &[u8]| {
        String::from_utf8_lossy(bundle).contains(String::from_utf8_lossy(ca).trim_end())
    };
    wait_for("the rotated CA trusted beside the old", TIMEOUT, || async {
        let (policy, bundles) = state(&webhooks, &name).await;
        (policy == "Fail"
            && bundles
                .iter()
                .all(|b| contains(b, &new_ca) && contains(b, &ca)))
        .then_some(())
    })
    .await;
    let trusted = rotation.elapsed();
    assert!(trusted < Duration::from_secs(5), "{trusted:?}");
    wait_for("the old CA dropped", TIMEOUT, || async {
        let (policy, bundles) = state(&webhooks, &name).await;
        (policy == "Fail" && bundles.iter().all(|b| *b == new_ca)).then_some(())
    })
    .await;
    eprintln!(
        "rotated Secret's CA trusted beside the old after {trusted:?}, alone after {:?}",
        rotation.elapsed()
    );
    let (code, message) = refused(pods.delete("web-3", &DeleteParams::default()).await);
    assert!(
        code == 403 && message.contains("denied the request"),
        "the guard answers under the rotated certificate: {code} {message}"
    );

    // the configuration is deleted and applied again as shipped
    webhooks
        .delete(&name, &DeleteParams::default())
        .await
        .expect("configuration deleted");
    webhooks
        .create(&PostParams::default(), &shipped(&env, &name, &host, port))
        .await
        .expect("configuration recreated");
    wait_for(
        "the recreated configuration to be reconciled",
        TIMEOUT,
        || async {
            let (policy, bundles) = state(&webhooks, &name).await;
            (policy == "Fail" && bundles.iter().all(|b| *b == new_ca)).then_some(())
        },
    )
    .await;

    // every guard gone: deletions fail closed until the break-glass patch
    shutdown.cancel();
    running.wait().await.expect("guard stops cleanly");
    wait_for_dry_run_delete(
        &pods,
        "web-3",
        "the API server to fail closed with the recreated configuration",
        |r| matches!(r, Err((_, message)) if message.contains("failed calling webhook")),
    )
    .await;
    let (code, message) = refused(pods.delete("web-3", &DeleteParams::default()).await);
    assert_eq!(code, 500, "no guard to call: {message}");
    assert!(message.contains("failed calling webhook"), "{message}");
    webhooks
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::<()>::Json(serde_json::from_str(BREAK_GLASS).expect("a JSON patch")),
        )
        .await
        .expect("break-glass patch");
    wait_for_dry_run_delete(
        &pods,
        "web-3",
        "the API server to apply the break-glass patch",
        Result::is_ok,
    )
    .await;
    let after = pods.delete("web-3", &DeleteParams::default()).await;
    assert!(after.is_ok(), "after break-glass: {after:?}");
    // nothing left behind for other scenarios
    webhooks
        .delete(&name, &DeleteParams::default())
        .await
        .expect("configuration deleted");
    env.shutdown().await;
}
