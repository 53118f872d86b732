//! The control API over TLS accepts only tokens issued for its audience: an operator's service
//! account token minted with `kubectl create token SA --audience control.ballast.dev` (a
//! TokenRequest) changes the mode; the same account's token for the API server, or for another
//! audience, is refused as unauthenticated; and the audience token is refused by the API server
//! itself, so a token handed to the guard cannot be replayed against the cluster. Runs on a
//! real cluster too (RBAC objects there, the simulator's rules here).

use std::time::Duration;

use ballast_control::auth::{ACCESS_GROUP, ACCESS_RESOURCE, VERB_GET, VERB_UPDATE};
use ballast_control::{ClientOptions, ControlClient, Mode};
use ballast_e2e::{SimConfig, TestEnv, wait_for};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const AUDIENCE: &str = "control.ballast.dev";
const TIMEOUT: Duration = Duration::from_secs(20);

async fn token(sa: &Api<ServiceAccount>, name: &str, audiences: &[&str]) -> String {
    // what `kubectl create token NAME --audience ... --duration 10m` sends
    let request: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences, "expirationSeconds": 600}
    }))
    .expect("a TokenRequest");
    let answer = sa
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("a token issued");
    serde_json::to_value(answer).expect("JSON")["status"]["token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_accepts_only_tokens_minted_for_its_audience() {
    ballast_runtime::tls::install_crypto_provider();
    let env = TestEnv::start(SimConfig::default().nodes(3)).await;
    let ns = env.namespace.clone();
    let client = env.client.clone();

    // an operator: a service account bound to the shipped operator role's rules
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "operator", "namespace": ns}}))
            .expect("a ServiceAccount");
    accounts
        .create(&PostParams::default(), &sa)
        .await
        .expect("ServiceAccount created");
    let role_name = format!("e2e-control-operator-{ns}");
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": role_name},
        "rules": [{"apiGroups": [ACCESS_GROUP], "resources": [ACCESS_RESOURCE],
                   "verbs": [VERB_GET, VERB_UPDATE]}]
    }))
    .expect("a ClusterRole");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}]
    }))
    .expect("a ClusterRoleBinding");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    roles
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    if let Some(sim) = &env.sim {
        let user = format!("system:serviceaccount:{ns}:operator");
        for verb in [VERB_GET, VERB_UPDATE] {
            sim.allow(&user, verb, ACCESS_GROUP, ACCESS_RESOURCE);
        }
    }

    // the guard as shipped: gRPC over TLS, tokens for its audience only
    let dir = tempfile::tempdir().expect("a directory");
    let cert = ballast_runtime::tls::generate(&["localhost"]).expect("a certificate");
    let paths = cert.write_to(dir.path()).expect("written");
    let mut config = eviction_guard::Config::loopback(client.clone());
    config.tls = Some(paths);
    config.namespace = ns.clone();
    config.grpc_tls = true;
    config.token_audiences = vec![AUDIENCE.to_owned()];
    let shutdown = CancellationToken::new();
    let running = eviction_guard::start(config, shutdown.clone())
        .await
        .expect("guard starts");
    wait_for("the guard to be ready", TIMEOUT, || async {
        running.readiness.is_ready().then_some(())
    })
    .await;
    let endpoint = format!("https://localhost:{}", running.grpc_addr.port());
    let control = |token: String| {
        ControlClient::start(
            ClientOptions::new(endpoint.clone())
                .ca_pem(cert.ca_pem.clone())
                .token(token)
                .watch(false),
            &shutdown,
        )
        .expect("a client")
    };

    let minted = token(&accounts, "operator", &[AUDIENCE]).await;
    let state = control(minted.clone())
        .set_mode(Mode::Disabled, "e2e: audience token")
        .await
        .expect("an operator's token for the control audience changes the mode");
    assert_eq!(state.mode, Mode::Disabled);
    assert!(state.mode_changed_by.ends_with(":operator"), "{state:?}");

    for (what, audiences) in [
        ("the API server's audience", &[][..]),
        ("another audience", &["vault"][..]),
    ] {
        let t = token(&accounts, "operator", audiences).await;
        let err = control(t)
            .set_mode(Mode::Auto, "e2e: wrong audience")
            .await
            .expect_err(what);
        let text = format!("{err:?}");
        assert!(
            text.contains("Unauthenticated") && text.contains("audience"),
            "{what}: {text}"
        );
    }

    // a token for the guard is useless against the API server
    let mut config = client_config_with_token(&env, &minted).await;
    config.default_retry = false;
    let as_operator = kube::Client::try_from(config).expect("a client");
    let refused = Api::<Pod>::namespaced(as_operator, &ns)
        .list(&Default::default())
        .await;
    match refused {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 401, "{s:?}"),
        other => panic!("the API server must refuse a token for another audience: {other:?}"),
    }

    shutdown.cancel();
    drop(running.wait().await);
    roles
        .delete(&role_name, &DeleteParams::default())
        .await
        .expect("role deleted");
    bindings
        .delete(&role_name, &DeleteParams::default())
        .await
        .expect("binding deleted");
    env.shutdown().await;
}

/// The test's cluster and CA, authenticating with `token` only.
async fn client_config_with_token(env: &TestEnv, token: &str) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(&env.kubeconfig).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("a client configuration");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..kube::config::AuthInfo::default()
    };
    config
}
