//! pvc-timing end to end, on kube-sim and on a real control plane: the webhook (real TLS,
//! registered like in a cluster, reviewing only the scenario's namespace) and the leader-elected
//! controller run in-process; claims are bound the way a cluster binds them, by the PV
//! controller (the real one, or kube-sim's) to a volume made for them; the user story is checked
//! the way a user would, through the API, the seed's own `kubectl` command and `/metrics`.
//!
//! The controller watches the claims of every namespace and keeps its counts in the process's
//! metrics, so on a real cluster two scenarios' controllers would count each other's claims:
//! scenarios running one hold the cluster lock `pvc-timing-controller`, one at a time. Scenarios
//! serving a webhook skip on a real cluster without `E2E_WEBHOOK_HOST`.

use std::time::Duration;

use ballast_e2e::{SimConfig, TestEnv, WebhookHost, kubectl, kubectl_with_input, wait_for};
use ballast_runtime::metrics::sample;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use pvc_timing::timing::{PvcTiming, parse_time};
use pvc_timing::{Config, ControllerConfig, KubeAccess, WebhookConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Generous for a loaded machine; the simulator answers in milliseconds, a real PV controller
/// within seconds (its periodic resync, 15s by default, when a write of its conflicted).
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a new claim is watched for a write by the controller while it is Pending: its
/// watch delivers the claim within milliseconds.
const PENDING_QUIET: Duration = Duration::from_secs(2);
/// The cluster lock held by scenarios that run a pvc-timing controller.
const CONTROLLER_LOCK: &str = "pvc-timing-controller";

fn claim(name: &str, storage_class: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": storage_class,
        }
    }))
    .expect("a valid claim")
}

/// The pvc-timing webhook configuration `name` (it contains the namespace's name) calling `url`,
/// reviewing only the scenario's namespace.
fn webhook_configuration(
    env: &TestEnv,
    name: &str,
    url: String,
    ca_pem: &str,
) -> MutatingWebhookConfiguration {
    env.scoped(MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "pvc-timing.ballast.dev".to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                url: Some(url),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            },
            rules: Some(vec![RuleWithOperations {
                operations: Some(vec!["CREATE".to_owned(), "UPDATE".to_owned()]),
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                resources: Some(vec![
                    "persistentvolumeclaims".to_owned(),
                    "persistentvolumeclaims/status".to_owned(),
                ]),
                scope: Some("Namespaced".to_owned()),
            }]),
            failure_policy: Some("Ignore".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(5),
            ..MutatingWebhook::default()
        }]),
    })
}

async fn transitions(metrics_url: &str, phase: &str) -> f64 {
    let text = reqwest::get(metrics_url)
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics text");
    sample(&text, "pvc_phase_transitions_total", &[("phase", phase)]).unwrap_or(0.0)
}

async fn metrics_text(metrics_url: &str) -> String {
    reqwest::get(metrics_url)
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("/metrics text")
}

/// A StorageClass of the scenario (`name` contains the namespace's name): metric labels name
/// only classes that exist. No provisioner: its claims bind to volumes made for them.
async fn create_storage_class(env: &TestEnv, name: &str) {
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": name},
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate"
    }))
    .expect("a valid StorageClass");
    Api::<StorageClass>::all(env.client.clone())
        .create(&PostParams::default(), &class)
        .await
        .expect("StorageClass created");
}

fn timing_of(pvc: &PersistentVolumeClaim) -> Option<PvcTiming> {
    PvcTiming::parse(pvc.annotations().get("pvc-timing")?).ok()
}

/// Waits until the API server calls the pvc-timing webhook over TLS (a real one calls a
/// configuration created or changed a moment after it is stored) and returns a claim it
/// annotated: a dry-run create, so nothing is stored and the process-wide counters other
/// scenarios assert on do not move.
async fn wait_until_called(env: &TestEnv, what: &str) -> PersistentVolumeClaim {
    let claims: Api<PersistentVolumeClaim> = env.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for(what, TIMEOUT, || async {
        let pvc = claims
            .create(&dry_run, &claim("probe", "standard"))
            .await
            .ok()?;
        timing_of(&pvc).map(|_| pvc)
    })
    .await
}

/// A volume made for claim `claim` (which exists) of the scenario, pre-bound to it as a
/// provisioner makes one (claimRef with the claim's uid, so the PV controller takes the claim up
/// at once rather than at its next periodic sync): the PV controller binds the two, writing the
/// claim's spec, then its status through `/status`.
async fn provide_volume(env: &TestEnv, claim: &str, class: &str) {
    let uid = env
        .api::<PersistentVolumeClaim>()
        .get(claim)
        .await
        .expect("the claim exists")
        .uid()
        .expect("a uid");
    let volume: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": format!("{claim}-{}", env.namespace)},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class,
                 "claimRef": {"namespace": env.namespace, "name": claim, "uid": uid},
                 "hostPath": {"path": format!("/tmp/pvc-timing-e2e/{claim}")}}
    }))
    .expect("a valid volume");
    Api::<PersistentVolume>::all(env.client.clone())
        .create(&PostParams::default(), &volume)
        .await
        .expect("volume created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_history_shows_pending_then_bound_and_creation_survives_a_stopped_webhook() {
    ballast_runtime::tls::install_crypto_provider();
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let lock = env.lock(CONTROLLER_LOCK).await;
    let ns = env.namespace.clone();
    let storage_class = format!("e2e-{ns}");

    // The service: webhook over TLS with its own CA, controller holding a Lease in our namespace.
    let certs = tempfile::tempdir().unwrap();
    let generated = ballast_runtime::tls::generate(&host.cert_names()).unwrap();
    let (cert, key) = generated.write_to(certs.path()).unwrap();
    let shutdown = CancellationToken::new();
    let running = pvc_timing::start(
        Config {
            webhook: Some(WebhookConfig {
                addr: host.bind_addr(0),
                tls: Some((cert, key)),
                self_signed: None,
            }),
            controller: Some(ControllerConfig {
                leader: Some(ballast_runtime::leader::LeaseConfig::new(
                    &ns,
                    "pvc-timing",
                    "pvc-timing-e2e-0",
                )),
                excluded_namespaces: vec!["kube-system".to_owned()],
            }),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            kube: KubeAccess::Client(env.client.clone()),
            clock: std::sync::Arc::new(pvc_timing::SystemClock),
        },
        shutdown.clone(),
    )
    .await
    .expect("pvc-timing starts");
    let port = running.webhook_addr.unwrap().port();
    let metrics_url = format!("http://{}/metrics", running.admin_addr);
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &webhook_configuration(
                &env,
                &format!("pvc-timing-{ns}"),
                host.url(port, "/mutate"),
                &generated.ca_pem,
            ),
        )
        .await
        .expect("webhook configuration registered");
    wait_until_called(&env, "the API server to call the webhook").await;

    // The controller takes the Lease.
    let leases: Api<Lease> = env.api();
    wait_for("the controller to hold the Lease", TIMEOUT, || async {
        let lease = leases.get_opt("pvc-timing").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some("pvc-timing-e2e-0")).then_some(())
    })
    .await;

    // A server-side dry run shows the annotation the claim would get, and counts nothing.
    let pending_before = transitions(&metrics_url, "Pending").await;
    let manifest = serde_json::to_string(&claim("preview", &storage_class)).unwrap();
    if let Some(out) = kubectl_with_input(
        &env.kubeconfig,
        &[
            "create",
            "-n",
            &ns,
            "--dry-run=server",
            "-f",
            "-",
            "-o",
            "jsonpath={.metadata.annotations.pvc-timing}",
        ],
        Some(&manifest),
    ) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let preview = PvcTiming::parse(&stdout).expect("a pvc-timing value in the dry run");
        assert_eq!(preview.current_phase, "Pending");
        assert_eq!(transitions(&metrics_url, "Pending").await, pending_before);
    }

    // A new claim records Pending at its creation time. The controller does not write to it
    // while it is Pending (the PV controller is working on it): it counts Pending once the
    // claim is Bound.
    create_storage_class(&env, &storage_class).await;
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let created = pvcs
        .create(&PostParams::default(), &claim("data", &storage_class))
        .await
        .expect("claim created");
    tokio::time::sleep(PENDING_QUIET).await;
    let pending = pvcs.get("data").await.expect("the claim");
    let managers: Vec<String> = pending
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.manager.clone())
        .collect();
    assert!(
        !managers
            .iter()
            .any(|m| m == pvc_timing::controller::FIELD_MANAGER)
            && !pending.annotations().contains_key(COUNTED),
        "no write by the controller to a Pending claim: {managers:?}"
    );
    assert_eq!(transitions(&metrics_url, "Pending").await, pending_before);
    let timing = timing_of(&created).expect("a pvc-timing annotation on the created claim");
    assert_eq!(timing.current_phase, "Pending");
    assert_eq!(timing.timings.len(), 1);
    assert_eq!(timing.timings[0].phase, "Pending");
    let created_at = created
        .metadata
        .creation_timestamp
        .as_ref()
        .expect("creationTimestamp")
        .0
        .as_second();
    assert_eq!(
        parse_time(&timing.timings[0].time).map(|t| t.timestamp()),
        Some(created_at),
        "Pending is dated at creation: {:?}",
        timing.timings[0]
    );

    // A volume for it appears; the PV controller binds the claim through the status
    // subresource.
    provide_volume(&env, "data", &storage_class).await;

    // The controller adds webhook-trigger once; the webhook records Bound on that update.
    let bound = wait_for(
        "Bound recorded and webhook-trigger added",
        TIMEOUT,
        || async {
            let pvc = pvcs.get("data").await.ok()?;
            let timing = timing_of(&pvc)?;
            (timing.current_phase == "Bound" && pvc.annotations().contains_key("webhook-trigger"))
                .then_some(pvc)
        },
    )
    .await;
    let timing = timing_of(&bound).unwrap();
    let phases: Vec<&str> = timing.timings.iter().map(|t| t.phase.as_str()).collect();
    assert_eq!(phases, ["Pending", "Bound"]);
    wait_for(
        "Pending counted once the claim left it",
        TIMEOUT,
        || async {
            (transitions(&metrics_url, "Pending").await >= pending_before + 1.0).then_some(())
        },
    )
    .await;
    let trigger: i64 = bound.annotations()["webhook-trigger"]
        .parse()
        .expect("webhook-trigger is unix seconds");
    let bound_at = parse_time(&timing.timings[1].time).unwrap().timestamp();
    assert!(
        created_at <= bound_at && bound_at <= trigger,
        "created {created_at} <= Bound {bound_at} <= trigger {trigger}"
    );

    // The seed's own command shows both annotations.
    if let Some(out) = kubectl(
        &env.kubeconfig,
        &[
            "get",
            "pvc",
            "data",
            "-n",
            &ns,
            "-o",
            "jsonpath={.metadata.annotations}",
        ],
    ) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("kubectl get pvc data -o jsonpath='{{.metadata.annotations}}':\n{stdout}");
        assert!(
            out.status.success(),
            "kubectl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shown: Value = serde_json::from_str(&stdout).expect("kubectl prints a JSON map");
        assert_eq!(
            shown["pvc-timing"],
            json!(bound.annotations()["pvc-timing"])
        );
        assert_eq!(shown["webhook-trigger"], json!(trigger.to_string()));
    }

    // Exactly one time-to-bound observation for this claim's storage class.
    let text = wait_for("the time to bound observed", TIMEOUT, || async {
        let text = metrics_text(&metrics_url).await;
        sample(
            &text,
            "pvc_time_to_bound_seconds_count",
            &[("storage_class", &storage_class)],
        )
        .map(|_| text)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "pvc_time_to_bound_seconds_count",
            &[("storage_class", &storage_class)]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "pvc_phase_transitions_total", &[("phase", "Bound")]).unwrap_or(0.0) >= 1.0
    );
    assert!(sample(&text, "pvc_timing_triggers_added_total", &[]).unwrap_or(0.0) >= 1.0);

    // With the webhook stopped, claims are still created (failurePolicy Ignore).
    shutdown.cancel();
    running.wait().await.expect("pvc-timing stops cleanly");
    let after = pvcs
        .create(
            &PostParams::default(),
            &claim("after-outage", &storage_class),
        )
        .await
        .expect("claim created while the webhook is down");
    assert!(!after.annotations().contains_key("pvc-timing"));

    if let Some(lock) = lock {
        lock.release().await;
    }
    env.shutdown().await;
}

/// One controller replica, holding (or waiting for) the shared Lease; no webhook.
async fn replica(env: &TestEnv, identity: &str) -> (pvc_timing::Running, CancellationToken) {
    // Short terms keep the hand-over quick; shutdown releases the Lease anyway.
    replica_with(env, env.client.clone(), identity, Duration::from_secs(3)).await
}

/// [`replica`] talking to the API server through `client`, with a Lease of `lease_duration`.
async fn replica_with(
    env: &TestEnv,
    client: kube::Client,
    identity: &str,
    lease_duration: Duration,
) -> (pvc_timing::Running, CancellationToken) {
    let mut lease =
        ballast_runtime::leader::LeaseConfig::new(&env.namespace, "pvc-timing", identity);
    lease.lease_duration = lease_duration;
    lease.renew_every = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let running = pvc_timing::start(
        Config {
            webhook: None,
            controller: Some(ControllerConfig {
                leader: Some(lease),
                excluded_namespaces: vec![],
            }),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            kube: KubeAccess::Client(client),
            clock: std::sync::Arc::new(pvc_timing::SystemClock),
        },
        shutdown.clone(),
    )
    .await
    .expect("a controller replica starts");
    (running, shutdown)
}

/// Creates claim `name` of `class` and a volume for it; returns the trigger the controller
/// adds once the PV controller has bound them.
async fn bind_and_wait_for_trigger(
    env: &TestEnv,
    pvcs: &Api<PersistentVolumeClaim>,
    name: &str,
    class: &str,
) -> String {
    pvcs.create(&PostParams::default(), &claim(name, class))
        .await
        .expect("claim created");
    provide_volume(env, name, class).await;
    wait_for(&format!("webhook-trigger on {name}"), TIMEOUT, || async {
        pvcs.get(name)
            .await
            .ok()?
            .annotations()
            .get("webhook-trigger")
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replica_takes_over_the_triggers_when_the_leader_stops() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let lock = env.lock(CONTROLLER_LOCK).await;
    let class = format!("standby-{}", env.namespace);
    create_storage_class(&env, &class).await;
    let (first, stop_first) = replica(&env, "replica-a").await;
    let (second, stop_second) = replica(&env, "replica-b").await;
    let leases: Api<Lease> = env.api();
    let holder = || async {
        leases
            .get_opt("pvc-timing")
            .await
            .ok()??
            .spec?
            .holder_identity
            .filter(|h| !h.is_empty())
    };
    let leader = wait_for("one replica to hold the Lease", TIMEOUT, holder).await;

    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let trigger = bind_and_wait_for_trigger(&env, &pvcs, "first", &class).await;
    assert!(trigger.parse::<i64>().is_ok(), "unix seconds: {trigger}");

    // Stop the leader: it releases the Lease and the standby takes over.
    let (stop_leader, leader_task, stop_other, other_task) = if leader == "replica-a" {
        (stop_first, first, stop_second, second)
    } else {
        (stop_second, second, stop_first, first)
    };
    stop_leader.cancel();
    leader_task.wait().await.expect("the leader stops cleanly");
    let successor = wait_for("the standby to take the Lease", TIMEOUT, || async {
        holder().await.filter(|h| *h != leader)
    })
    .await;
    assert_ne!(successor, leader);
    bind_and_wait_for_trigger(&env, &pvcs, "second", &class).await;

    // The first claim's trigger was written once and never rewritten.
    let first_claim = pvcs.get("first").await.unwrap();
    assert_eq!(first_claim.annotations()["webhook-trigger"], trigger);

    stop_other.cancel();
    other_task
        .wait()
        .await
        .expect("the successor stops cleanly");
    if let Some(lock) = lock {
        lock.release().await;
    }
    env.shutdown().await;
}

/// A free port on the webhook host, for a webhook configuration that must exist before the
/// service starts.
fn free_port(host: &WebhookHost) -> u16 {
    std::net::TcpListener::bind(host.bind_addr(0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The webhook in self-signed mode, keeping Secret `pvc-timing-serving-cert` and
/// `configuration`'s caBundle, serving from `cert_dir` on `port`.
async fn start_self_signed(
    env: &TestEnv,
    host: &WebhookHost,
    configuration: &str,
    cert_dir: std::path::PathBuf,
    port: u16,
    shutdown: CancellationToken,
) -> pvc_timing::Running {
    pvc_timing::start(
        Config {
            webhook: Some(WebhookConfig {
                addr: host.bind_addr(port),
                tls: Some(ballast_runtime::tls::cert_paths(&cert_dir, None, None)),
                self_signed: Some(pvc_timing::SelfSigned {
                    args: ballast_runtime::bootstrap::SelfSignedArgs {
                        self_signed_secret: Some(SELF_SIGNED_SECRET.into()),
                        webhook_configuration: Some(configuration.to_owned()),
                        webhook_service_dns: Some(host.host.clone()),
                    },
                    namespace: env.namespace.clone(),
                }),
            }),
            controller: None,
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            kube: KubeAccess::Client(env.client.clone()),
            clock: std::sync::Arc::new(pvc_timing::SystemClock),
        },
        shutdown,
    )
    .await
    .expect("pvc-timing starts in self-signed mode")
}

/// The Secret of the self-signed scenarios.
const SELF_SIGNED_SECRET: &str = "pvc-timing-serving-cert";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_mode_keeps_its_certificate_in_a_secret_and_injects_the_ca() {
    ballast_runtime::tls::install_crypto_provider();
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let ns = env.namespace.clone();
    let configuration = format!("pvc-timing-self-signed-{ns}");
    let port = free_port(&host);
    let configurations = register_unsigned(&env, &configuration, host.url(port, "/mutate")).await;

    let start = |cert_dir: std::path::PathBuf, port: u16, shutdown: CancellationToken| {
        start_self_signed(&env, &host, &configuration, cert_dir, port, shutdown)
    };
    let first_dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let first = start(first_dir.path().to_path_buf(), port, shutdown.clone()).await;

    // The Secret holds the CA, and the webhook configuration now trusts it.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = env.api();
    let secret = secrets
        .get("pvc-timing-serving-cert")
        .await
        .expect("the certificate Secret exists");
    let data = secret.data.expect("the Secret has data");
    let ca = data.get("ca.crt").expect("ca.crt").0.clone();
    let injected = configurations
        .get(&configuration)
        .await
        .unwrap()
        .webhooks
        .unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("caBundle injected");
    assert_eq!(injected.0, ca);
    assert_eq!(
        std::fs::read(first_dir.path().join("tls.crt")).unwrap(),
        data.get("tls.crt").unwrap().0,
        "the served certificate is the one in the Secret"
    );

    // The API server reaches the webhook over TLS with that CA (a real one a moment after the
    // caBundle is stored): a new claim gets its history.
    let created = wait_until_called(&env, "the webhook called over TLS with the injected CA").await;
    let timing = timing_of(&created).expect("the webhook annotated the claim");
    assert_eq!(timing.current_phase, "Pending");

    // A second replica (or a restart) serves the same certificate instead of minting another.
    let second_dir = tempfile::tempdir().unwrap();
    let second = start(
        second_dir.path().to_path_buf(),
        free_port(&host),
        shutdown.clone(),
    )
    .await;
    assert_eq!(
        std::fs::read(second_dir.path().join("tls.crt")).unwrap(),
        std::fs::read(first_dir.path().join("tls.crt")).unwrap()
    );
    shutdown.cancel();
    first.wait().await.expect("the first replica stops cleanly");
    second
        .wait()
        .await
        .expect("the second replica stops cleanly");
    env.shutdown().await;
}

/// The annotation where the controller marks how many history entries it counted.
const COUNTED: &str = "ballast.dev/pvc-timing-counted";

/// The webhook alone, registered for this test's namespace, with the admin server (which shows
/// the whole process's metrics, the controller's included).
struct WebhookService {
    running: pvc_timing::Running,
    stop: CancellationToken,
    metrics_url: String,
    _certs: tempfile::TempDir,
}

async fn start_webhook(env: &TestEnv, host: &WebhookHost) -> WebhookService {
    ballast_runtime::tls::install_crypto_provider();
    let certs = tempfile::tempdir().unwrap();
    let generated = ballast_runtime::tls::generate(&host.cert_names()).unwrap();
    let (cert, key) = generated.write_to(certs.path()).unwrap();
    let stop = CancellationToken::new();
    let running = pvc_timing::start(
        Config {
            webhook: Some(WebhookConfig {
                addr: host.bind_addr(0),
                tls: Some((cert, key)),
                self_signed: None,
            }),
            controller: None,
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            kube: KubeAccess::Client(env.client.clone()),
            clock: std::sync::Arc::new(pvc_timing::SystemClock),
        },
        stop.clone(),
    )
    .await
    .expect("the pvc-timing webhook starts");
    let port = running.webhook_addr.unwrap().port();
    let configuration = webhook_configuration(
        env,
        &format!("pvc-timing-{}", env.namespace),
        host.url(port, "/mutate"),
        &generated.ca_pem,
    );
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .create(&PostParams::default(), &configuration)
        .await
        .expect("webhook configuration registered");
    wait_until_called(env, "the API server to call the webhook").await;
    let metrics_url = format!("http://{}/metrics", running.admin_addr);
    WebhookService {
        running,
        stop,
        metrics_url,
        _certs: certs,
    }
}

impl WebhookService {
    async fn stop(self) {
        self.stop.cancel();
        self.running
            .wait()
            .await
            .expect("the webhook stops cleanly");
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Waits until the wall clock enters the next second (the history has whole seconds), and
/// returns it.
async fn next_second() -> i64 {
    let start = unix_now();
    wait_for("the clock to tick", TIMEOUT, || async {
        let now = unix_now();
        (now > start).then_some(now)
    })
    .await
}

fn phases(pvc: &PersistentVolumeClaim) -> Vec<String> {
    timing_of(pvc)
        .map(|t| t.timings.into_iter().map(|e| e.phase).collect())
        .unwrap_or_default()
}

/// Waits until the controller has counted `entries` history entries of claim `name`.
async fn counted(
    pvcs: &Api<PersistentVolumeClaim>,
    name: &str,
    entries: usize,
) -> PersistentVolumeClaim {
    let want = entries.to_string();
    wait_for(
        &format!("{entries} entries of {name} counted"),
        TIMEOUT,
        || async {
            let pvc = pvcs.get(name).await.ok()?;
            (pvc.annotations().get(COUNTED) == Some(&want)).then_some(pvc)
        },
    )
    .await
}

async fn histogram(metrics_url: &str, series: &str, storage_class: &str) -> Option<f64> {
    sample(
        &metrics_text(metrics_url).await,
        series,
        &[("storage_class", storage_class)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_trigger_while_pending_does_not_backdate_bound_and_the_bind_is_timed_exactly() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let lock = env.lock(CONTROLLER_LOCK).await;
    let ns = env.namespace.clone();
    let class = format!("manual-{ns}");
    create_storage_class(&env, &class).await;
    let webhook = start_webhook(&env, &host).await;
    let (controller, stop_controller) = replica(&env, "manual-0").await;
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let created = pvcs
        .create(&PostParams::default(), &claim("data", &class))
        .await
        .expect("claim created");
    let created_at = created
        .metadata
        .creation_timestamp
        .as_ref()
        .unwrap()
        .0
        .as_second();

    // `kubectl annotate pvc data webhook-trigger=$(date +%s)` while the claim is Pending.
    let manual = next_second().await;
    let annotated = pvcs
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"webhook-trigger": manual.to_string()}}}),
            ),
        )
        .await
        .expect("annotated");
    assert_eq!(
        phases(&annotated),
        ["Pending"],
        "a manual trigger records nothing"
    );

    // Later, a volume appears and the PV controller binds the claim through /status.
    let bind_from = next_second().await;
    provide_volume(&env, "data", &class).await;
    let bound = wait_for(
        "the claim bound and triggered by the controller",
        TIMEOUT,
        || async {
            let pvc = pvcs.get("data").await.ok()?;
            let trigger = pvc.annotations().get("webhook-trigger")?.clone();
            (timing_of(&pvc)?.current_phase == "Bound" && trigger != manual.to_string())
                .then_some(pvc)
        },
    )
    .await;
    let timing = timing_of(&bound).unwrap();
    assert_eq!(phases(&bound), ["Pending", "Bound"]);
    let bound_at = parse_time(&timing.timings[1].time).unwrap().timestamp();
    let trigger: i64 = bound.annotations()["webhook-trigger"].parse().unwrap();
    assert!(
        manual < bind_from && bind_from <= bound_at && bound_at <= trigger,
        "manual trigger {manual} < bind from {bind_from} <= Bound {bound_at} <= controller's trigger {trigger}"
    );

    // The histogram holds exactly this claim's time to bound, from the stored history.
    let count = wait_for("the time to bound observed", TIMEOUT, || async {
        histogram(
            &webhook.metrics_url,
            "pvc_time_to_bound_seconds_count",
            &class,
        )
        .await
    })
    .await;
    assert_eq!(count, 1.0);
    assert_eq!(
        histogram(
            &webhook.metrics_url,
            "pvc_time_to_bound_seconds_sum",
            &class
        )
        .await,
        Some((bound_at - created_at) as f64)
    );

    stop_controller.cancel();
    controller
        .wait()
        .await
        .expect("the controller stops cleanly");
    webhook.stop().await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    env.shutdown().await;
}

/// A validating webhook refusing PVC status writes that set `Lost` (as a policy engine might).
async fn start_lost_guard(
    env: &TestEnv,
    host: &WebhookHost,
) -> (CancellationToken, tempfile::TempDir) {
    use axum::Json;
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let certs = ballast_runtime::tls::generate(&host.cert_names()).unwrap();
    let (cert, key) = certs.write_to(dir.path()).unwrap();
    let tls = ballast_runtime::tls::ReloadingTls::load(&cert, &key).unwrap();
    let review = |Json(body): Json<Value>| async move {
        let req = &body["request"];
        let lost = req["object"]["status"]["phase"] == "Lost";
        let response = if lost {
            json!({"uid": req["uid"], "allowed": false,
                   "status": {"code": 403, "reason": "Forbidden", "message": "claims may not be marked Lost here"}})
        } else {
            json!({"uid": req["uid"], "allowed": true})
        };
        Json(
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
        )
    };
    let router = axum::Router::new().route("/validate", axum::routing::post(review));
    let listener = tokio::net::TcpListener::bind(host.bind_addr(0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(ballast_runtime::http::serve(
        listener,
        router,
        Some(tls),
        stop.clone(),
    ));
    let configuration: k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration =
        serde_json::from_value(json!({
            "metadata": {"name": format!("lost-guard-{}", env.namespace)},
            "webhooks": [{"name": "lost-guard.e2e.ballast.dev",
                "clientConfig": {"url": host.url(port, "/validate"),
                                 "caBundle": base64::engine::general_purpose::STANDARD.encode(&certs.ca_pem)},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.namespace}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                           "resources": ["persistentvolumeclaims/status"]}],
                "sideEffects": "None", "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail", "timeoutSeconds": 5},
                env.webhook_probe("lost-guard")]
        }))
        .unwrap();
    Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
        env.client.clone(),
    )
    .create(&PostParams::default(), &configuration)
    .await
    .expect("validating webhook registered");
    env.wait_for_webhook_probe("lost-guard", true).await;
    (stop, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_the_api_server_refuses_moves_no_counter() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let lock = env.lock(CONTROLLER_LOCK).await;
    let class = format!("refused-{}", env.namespace);
    create_storage_class(&env, &class).await;
    let webhook = start_webhook(&env, &host).await;
    let (guard, _guard_certs) = start_lost_guard(&env, &host).await;
    let (controller, stop_controller) = replica(&env, "refused-0").await;
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    pvcs.create(&PostParams::default(), &claim("data", &class))
        .await
        .expect("claim created");
    let lost_before = transitions(&webhook.metrics_url, "Lost").await;

    // pvc-timing's webhook sees the request and patches it; a later webhook refuses it.
    let err = pvcs
        .patch_status(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Lost"}})),
        )
        .await
        .expect_err("the Lost write is refused");
    assert!(
        err.to_string()
            .contains("claims may not be marked Lost here"),
        "{err}"
    );

    // A write that is stored follows (the PV controller binds the claim to a volume made for
    // it); once it is counted, the refused one was not.
    provide_volume(&env, "data", &class).await;
    let pvc = counted(&pvcs, "data", 2).await;
    assert_eq!(phases(&pvc), ["Pending", "Bound"]);
    assert_eq!(transitions(&webhook.metrics_url, "Lost").await, lost_before);

    stop_controller.cancel();
    controller
        .wait()
        .await
        .expect("the controller stops cleanly");
    guard.cancel();
    webhook.stop().await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_status_phase_on_create_and_update_is_ignored() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let lock = env.lock(CONTROLLER_LOCK).await;
    let class = format!("forged-{}", env.namespace);
    create_storage_class(&env, &class).await;
    let webhook = start_webhook(&env, &host).await;
    let (controller, stop_controller) = replica(&env, "forged-0").await;
    let pvcs: Api<PersistentVolumeClaim> = env.api();

    // A client sends a status with its create and its update: the API server resets it, and
    // so does the history.
    let mut forged = claim("data", &class);
    forged.status = Some(serde_json::from_value(json!({"phase": "Bound"})).unwrap());
    let created = pvcs
        .create(&PostParams::default(), &forged)
        .await
        .expect("claim created");
    assert_eq!(phases(&created), ["Pending"]);
    // The controllers write the claim too (finalizer, counted mark): re-read on a conflict, as
    // any client of a real server must.
    let mut attempts = 0;
    let updated = loop {
        let mut update = pvcs.get("data").await.unwrap();
        update.status = Some(serde_json::from_value(json!({"phase": "Bound"})).unwrap());
        update.labels_mut().insert("touched".into(), "yes".into());
        match pvcs.replace("data", &PostParams::default(), &update).await {
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 10 => attempts += 1,
            other => break other.expect("claim updated"),
        }
    };
    assert_eq!(phases(&updated), ["Pending"]);

    // A phase no claim can have is not recorded, and never becomes a metric label.
    let odd = pvcs
        .patch_status(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Exploded"}})),
        )
        .await;
    if let Ok(odd) = odd {
        assert_eq!(phases(&odd), ["Pending"]);
    }

    // A real binding afterwards (the PV controller's, to a volume made for the claim) is
    // recorded and counted; nothing forged was.
    provide_volume(&env, "data", &class).await;
    let pvc = counted(&pvcs, "data", 2).await;
    assert_eq!(phases(&pvc), ["Pending", "Bound"]);
    let text = metrics_text(&webhook.metrics_url).await;
    assert_eq!(
        sample(
            &text,
            "pvc_phase_transitions_total",
            &[("phase", "Exploded")]
        ),
        None,
        "{text}"
    );

    stop_controller.cancel();
    controller
        .wait()
        .await
        .expect("the controller stops cleanly");
    webhook.stop().await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_restart_counts_no_claim_twice() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let lock = env.lock(CONTROLLER_LOCK).await;
    let class = format!("restart-{}", env.namespace);
    create_storage_class(&env, &class).await;
    let webhook = start_webhook(&env, &host).await;
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let bind = |name: &'static str| {
        let pvcs = pvcs.clone();
        let (env, class) = (&env, class.clone());
        async move {
            pvcs.create(&PostParams::default(), &claim(name, &class))
                .await
                .expect("claim created");
            provide_volume(env, name, &class).await;
        }
    };

    let (first, stop_first) = replica(&env, "restart-a").await;
    bind("first").await;
    let first_claim = counted(&pvcs, "first", 2).await;
    wait_for("the first time to bound", TIMEOUT, || async {
        histogram(
            &webhook.metrics_url,
            "pvc_time_to_bound_seconds_count",
            &class,
        )
        .await
        .filter(|c| *c == 1.0)
    })
    .await;
    stop_first.cancel();
    first
        .wait()
        .await
        .expect("the first controller stops cleanly");

    // A new controller lists every claim again, the first one included.
    let (second, stop_second) = replica(&env, "restart-b").await;
    bind("second").await;
    counted(&pvcs, "second", 2).await;
    let count = wait_for("the second time to bound", TIMEOUT, || async {
        histogram(
            &webhook.metrics_url,
            "pvc_time_to_bound_seconds_count",
            &class,
        )
        .await
        .filter(|c| *c >= 2.0)
    })
    .await;
    assert_eq!(count, 2.0, "each claim observed once");
    let again = pvcs.get("first").await.unwrap();
    assert_eq!(
        again.annotations().get("webhook-trigger"),
        first_claim.annotations().get("webhook-trigger"),
        "the first claim's trigger was not rewritten"
    );
    assert_eq!(
        again.annotations().get(COUNTED).map(String::as_str),
        Some("2")
    );

    stop_second.cancel();
    second
        .wait()
        .await
        .expect("the second controller stops cleanly");
    webhook.stop().await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    env.shutdown().await;
}

/// Claims bound while pvc-timing was down: once it is back, each gets a history saying what is
/// known — Pending since its creation, Bound by the time it was first seen, marked not observed
/// — its transitions are counted, and nothing is observed in the time-to-bound histogram (the
/// first sighting, minutes after the binding, is no measurement of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_bound_while_pvc_timing_was_down_add_nothing_to_the_time_to_bound_histogram() {
    let env = TestEnv::start(SimConfig::default().pv_binder(true)).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let lock = env.lock(CONTROLLER_LOCK).await;
    let class = format!("backfill-{}", env.namespace);
    create_storage_class(&env, &class).await;
    // pvc-timing is down: claims are created and bound with no webhook and no controller
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    for name in ["early-1", "early-2"] {
        pvcs.create(&PostParams::default(), &claim(name, &class))
            .await
            .expect("claim created");
        provide_volume(&env, name, &class).await;
    }
    for name in ["early-1", "early-2"] {
        wait_for(&format!("{name} Bound"), TIMEOUT, || async {
            let pvc = pvcs.get(name).await.ok()?;
            (pvc.status?.phase.as_deref() == Some("Bound")).then_some(())
        })
        .await;
    }
    let bound_before = unix_now();
    next_second().await;

    // pvc-timing comes back
    let webhook = start_webhook(&env, &host).await;
    let (controller, stop_controller) = replica(&env, "backfill-0").await;
    let bound_after_restart = transitions(&webhook.metrics_url, "Bound").await;
    for name in ["early-1", "early-2"] {
        let pvc = counted(&pvcs, name, 2).await;
        let timing = timing_of(&pvc).expect("a history on a claim found Bound");
        assert_eq!(phases(&pvc), ["Pending", "Bound"]);
        let created = pvc
            .metadata
            .creation_timestamp
            .as_ref()
            .unwrap()
            .0
            .as_second();
        assert_eq!(
            parse_time(&timing.timings[0].time).map(|t| t.timestamp()),
            Some(created),
            "{name}: Pending since its creation"
        );
        let bound = &timing.timings[1];
        assert_eq!(bound.observed, Some(false), "{name}: {timing:?}");
        assert!(
            parse_time(&bound.time).unwrap().timestamp() > bound_before,
            "{name}: dated when first seen, not a bind time"
        );
        assert!(pvc.annotations().contains_key("webhook-trigger"));
    }
    wait_for("both binds counted as transitions", TIMEOUT, || async {
        (transitions(&webhook.metrics_url, "Bound").await >= bound_after_restart + 2.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        histogram(
            &webhook.metrics_url,
            "pvc_time_to_bound_seconds_count",
            &class
        )
        .await
        .unwrap_or(0.0),
        0.0,
        "nothing observed for binds pvc-timing did not witness"
    );

    // a claim bound while it runs is timed as usual
    bind_and_wait_for_trigger(&env, &pvcs, "later", &class).await;
    counted(&pvcs, "later", 2).await;
    let observed = wait_for("the witnessed bind observed", TIMEOUT, || async {
        histogram(
            &webhook.metrics_url,
            "pvc_time_to_bound_seconds_count",
            &class,
        )
        .await
        .filter(|c| *c >= 1.0)
    })
    .await;
    assert_eq!(observed, 1.0);

    stop_controller.cancel();
    controller
        .wait()
        .await
        .expect("the controller stops cleanly");
    webhook.stop().await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    env.shutdown().await;
}

/// Fault: the controller's watch of claims expires (`410 Expired` on resuming: etcd compacted
/// behind a restarted API server) while it cannot see the cluster, and a claim binds meanwhile.
/// Back, the controller lists again and the claim gets its trigger and its history, once; the
/// claim bound before the fault is not triggered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_bound_while_the_controllers_watch_expired_still_gets_its_trigger_once() {
    use ballast_e2e::harness::proxy::{FaultProxy, assert_resume_expired};
    let Some(mut env) = TestEnv::start_isolated(SimConfig::default().pv_binder(true)).await else {
        return;
    };
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let Some((proxy, client)) =
        FaultProxy::in_front_of(&env, "the controller's watch expiry").await
    else {
        env.shutdown().await;
        return;
    };
    let class = format!("expiry-{}", env.namespace);
    create_storage_class(&env, &class).await;
    let webhook = start_webhook(&env, &host).await;
    // A Lease that outlives the fault: the controller keeps leading, so what brings the claim
    // back is its watch's relist, not a new term's fresh start.
    let (controller, stop) = replica_with(&env, client, "expiry", Duration::from_secs(120)).await;
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let before = bind_and_wait_for_trigger(&env, &pvcs, "before", &class).await;
    let seen = Api::<PersistentVolumeClaim>::all(env.client.clone())
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .expect("claims listed")
        .metadata
        .resource_version
        .expect("a list resourceVersion");

    proxy.cut();
    pvcs.create(&PostParams::default(), &claim("during", &class))
        .await
        .expect("claim created");
    provide_volume(&env, "during", &class).await;
    wait_for("the claim Bound", TIMEOUT, || async {
        let pvc = pvcs.get("during").await.ok()?;
        (pvc.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
    env.expire_watches().await;
    assert_resume_expired(
        &Api::<PersistentVolumeClaim>::all(env.client.clone()),
        &seen,
    )
    .await;
    let restored = std::time::Instant::now();
    proxy.restore();

    let trigger = wait_for(
        "the trigger of the claim bound meanwhile",
        TIMEOUT,
        || async {
            pvcs.get("during")
                .await
                .ok()?
                .annotations()
                .get("webhook-trigger")
                .cloned()
        },
    )
    .await;
    eprintln!(
        "trigger written {:?} after the controller could see the cluster again",
        restored.elapsed()
    );
    assert!(!trigger.is_empty());
    let during = counted(&pvcs, "during", 2).await;
    assert_eq!(phases(&during), ["Pending", "Bound"]);
    // the webhook saw the binding: its history entry is an observed one
    let bound = timing_of(&during)
        .and_then(|t| t.timings.into_iter().find(|e| e.phase == "Bound"))
        .expect("a Bound entry");
    assert!(bound.witnessed(), "{bound:?}");
    tokio::time::sleep(PENDING_QUIET).await;
    assert_eq!(
        pvcs.get("before")
            .await
            .unwrap()
            .annotations()
            .get("webhook-trigger"),
        Some(&before),
        "the claim bound before the fault was not triggered again"
    );
    let count = histogram(
        &webhook.metrics_url,
        "pvc_time_to_bound_seconds_count",
        &class,
    )
    .await;
    assert_eq!(count, Some(2.0), "each claim observed once");

    stop.cancel();
    controller
        .wait()
        .await
        .expect("the controller stops cleanly");
    webhook.stop().await;
    drop(proxy);
    env.shutdown().await;
}

/// What the load generator of the rotation scenario saw.
#[derive(Debug)]
struct Load {
    answered: u64,
    /// Calls the API server failed (the webhook unreachable with failurePolicy Fail, or any
    /// other error), with the first few messages.
    failed: u64,
    errors: Vec<String>,
    /// Claims admitted without the webhook's annotation: a call that failed under
    /// failurePolicy Ignore, silently.
    unmutated: u64,
    last_ok: std::time::Instant,
    longest_gap: Duration,
}

impl Load {
    fn record(&mut self, result: Result<PersistentVolumeClaim, kube::Error>) {
        let now = std::time::Instant::now();
        match result {
            Ok(pvc) if timing_of(&pvc).is_some() => {
                self.answered += 1;
                self.longest_gap = self.longest_gap.max(now - self.last_ok);
                self.last_ok = now;
            }
            Ok(_) => self.unmutated += 1,
            Err(e) => {
                self.failed += 1;
                if self.errors.len() < 5 {
                    self.errors.push(e.to_string());
                }
            }
        }
    }
}

/// The CA bundle of the scenario's webhook configuration.
/// Registers webhook configuration `name` for `url` as applied from the kustomize base: no
/// caBundle yet (self-signed mode injects it).
async fn register_unsigned(
    env: &TestEnv,
    name: &str,
    url: String,
) -> Api<MutatingWebhookConfiguration> {
    let mut unsigned = webhook_configuration(env, name, url, "");
    if let Some(webhooks) = unsigned.webhooks.as_mut() {
        webhooks[0].client_config.ca_bundle = None;
    }
    let configurations = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
    configurations
        .create(&PostParams::default(), &unsigned)
        .await
        .expect("webhook configuration registered");
    configurations
}

async fn ca_bundle(configurations: &Api<MutatingWebhookConfiguration>, name: &str) -> Vec<u8> {
    configurations
        .get(name)
        .await
        .ok()
        .and_then(|c| c.webhooks?.into_iter().next()?.client_config.ca_bundle)
        .map(|b| b.0)
        .unwrap_or_default()
}

/// Fault: the webhook's certificate rotated while the API server calls it without pause — the
/// self-signed Secret replaced by one of a new CA, then (cert-manager's way) by a new leaf of
/// the same CA. The new CA is trusted alongside the old one before it is served, the old kept a
/// while after: no admission call fails or goes through unmutated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotated_under_load_fail_no_admission_call() {
    use ballast_runtime::tls::Authority;
    use k8s_openapi::api::core::v1::Secret;
    const WORKERS: usize = 16;
    ballast_runtime::tls::install_crypto_provider();
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let configuration = format!("pvc-timing-rotation-{}", env.namespace);
    let port = free_port(&host);
    let configurations = register_unsigned(&env, &configuration, host.url(port, "/mutate")).await;
    let cert_dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let webhook = start_self_signed(
        &env,
        &host,
        &configuration,
        cert_dir.path().to_path_buf(),
        port,
        shutdown.clone(),
    )
    .await;
    wait_until_called(&env, "the webhook called over TLS").await;
    let claims: Api<PersistentVolumeClaim> = env.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    // The load: dry-run creates (admitted, never stored), WORKERS at a time, without pause.
    let load = std::sync::Arc::new(std::sync::Mutex::new(Load {
        answered: 0,
        failed: 0,
        errors: Vec::new(),
        unmutated: 0,
        last_ok: std::time::Instant::now(),
        longest_gap: Duration::ZERO,
    }));
    let stop_load = CancellationToken::new();
    let began = std::time::Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (claims, load, stop, dry_run) = (
                claims.clone(),
                load.clone(),
                stop_load.clone(),
                dry_run.clone(),
            );
            tokio::spawn(async move {
                let pvc = claim(&format!("load-{i}"), "standard");
                while !stop.is_cancelled() {
                    let result = claims.create(&dry_run, &pvc).await;
                    load.lock().unwrap().record(result);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let secrets: Api<Secret> = env.api();
    let put = |cert: ballast_runtime::tls::GeneratedCert| {
        let secrets = secrets.clone();
        async move {
            use base64::Engine;
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            secrets
                .patch(
                    SELF_SIGNED_SECRET,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {
                        "ca.crt": b64(&cert.ca_pem),
                        "tls.crt": b64(&cert.cert_pem),
                        "tls.key": b64(&cert.key_pem),
                    }})),
                )
                .await
                .expect("the Secret replaced");
        }
    };
    let served = |cert_pem: String| {
        let path = cert_dir.path().join("tls.crt");
        async move {
            wait_for("the new certificate served", TIMEOUT, || async {
                (std::fs::read_to_string(&path).ok()? == cert_pem).then_some(())
            })
            .await;
        }
    };

    // 1. a new CA: the Secret replaced (what deleting it to have it regenerated also does)
    let authority = Authority::generate().unwrap();
    let names = host.cert_names();
    let renewed = authority.issue(&names).unwrap();
    let first_ca = String::from_utf8(ca_bundle(&configurations, &configuration).await).unwrap();
    let replaced = std::time::Instant::now();
    put(renewed.clone()).await;
    served(renewed.cert_pem.clone()).await;
    let switched = replaced.elapsed();
    // served only once trusted, and the old CA still trusted: a replica that has not switched
    // yet (another pod behind the Service) is not cut off
    let bundle = String::from_utf8(ca_bundle(&configurations, &configuration).await).unwrap();
    assert!(
        bundle.contains(renewed.ca_pem.trim_end()) && bundle.contains(first_ca.trim_end()),
        "both CAs trusted when the new certificate is first served"
    );
    wait_for("the old CA dropped from the bundle", TIMEOUT, || async {
        (ca_bundle(&configurations, &configuration).await == renewed.ca_pem.as_bytes())
            .then_some(())
    })
    .await;
    let settled = replaced.elapsed();

    // 2. cert-manager's renewal: a new leaf of the same CA
    let leaf = authority.issue(&names).unwrap();
    put(leaf.clone()).await;
    served(leaf.cert_pem.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop_load.cancel();
    for w in workers {
        w.await.expect("a load worker ends");
    }
    let took = began.elapsed();
    let load = std::sync::Arc::try_unwrap(load)
        .expect("the workers have ended")
        .into_inner()
        .unwrap();
    eprintln!(
        "{} admission calls in {took:?} ({:.0}/s, {WORKERS} at a time): {} failed, {} unmutated, \
         longest gap between answers {:?}; the new CA was served {switched:?} after the Secret \
         changed and alone in the bundle {settled:?} after",
        load.answered + load.failed + load.unmutated,
        load.answered as f64 / took.as_secs_f64(),
        load.failed,
        load.unmutated,
        load.longest_gap,
    );
    assert_eq!(load.failed, 0, "failed calls: {:?}", load.errors);
    assert_eq!(load.unmutated, 0, "calls that failed silently (Ignore)");
    assert!(load.answered > 0);

    shutdown.cancel();
    webhook.wait().await.expect("the webhook stops cleanly");
    env.shutdown().await;
}

/// Claims of a bulk run, all at once.
const BULK_CLAIMS: usize = 1000;

/// 1,000 claims created 32 at a time with pvc-timing (webhook and controller) and the NFS
/// provisioner running: every claim Bound, timed and triggered, and nothing of ours in the PV
/// controller's way — no `ProvisioningFailed` on any claim, and (on a real control plane, whose
/// controller manager log is the scenario's own) no update conflict the PV controller met.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_claims_with_pvc_timing_and_the_provisioner_meet_no_conflict() {
    use futures::StreamExt;
    let Some(env) = TestEnv::start_isolated(SimConfig::default().pv_binder(true)).await else {
        return;
    };
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let ns = env.namespace.clone();
    // the NFS provisioner under a name of the scenario's own, its class Immediate
    let nfs_name = format!("{ns}.ballast.dev/nfs");
    let class = format!("bulk-{ns}");
    let sc: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": class},
        "provisioner": nfs_name,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate"
    }))
    .unwrap();
    Api::<StorageClass>::all(env.client.clone())
        .create(&PostParams::default(), &sc)
        .await
        .expect("StorageClass created");
    let export = tempfile::tempdir().unwrap();
    let stop_provisioner = CancellationToken::new();
    let provisioner = provisioner::start_with(
        provisioner::Config {
            controller: Some(provisioner::ControllerConfig {
                lease: None,
                hostpath: None,
                nfs: Some(provisioner::NfsConfig {
                    server: "nfs.example.internal".into(),
                    export_path: "/srv/nfs".into(),
                    mount: export.path().to_path_buf(),
                }),
            }),
            agent: None,
            namespace: ns.clone(),
            control_endpoint: None,
            control_client: Default::default(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            kube: KubeAccess::Client(env.client.clone()),
            identity: "bulk".into(),
            resync: Duration::from_secs(30),
        },
        provisioner::Options {
            provisioners: provisioner::plan::Provisioners::new(
                &format!("hostpath.{ns}.ballast.dev"),
                &nfs_name,
            ),
            ..provisioner::Options::default()
        },
        stop_provisioner.clone(),
    )
    .await
    .expect("the provisioner starts");
    let webhook = start_webhook(&env, &host).await;
    let (controller, stop_controller) = replica(&env, "bulk").await;

    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let started = std::time::Instant::now();
    futures::stream::iter(0..BULK_CLAIMS)
        .map(|i| {
            let (pvcs, class) = (pvcs.clone(), class.clone());
            async move {
                pvcs.create(&PostParams::default(), &claim(&format!("c{i:04}"), &class))
                    .await
                    .expect("claim created");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    let created = started.elapsed();
    wait_for(
        "every claim Bound and triggered",
        Duration::from_secs(300),
        || async {
            let list = pvcs.list(&kube::api::ListParams::default()).await.ok()?;
            let done = list
                .items
                .iter()
                .filter(|c| c.annotations().contains_key("webhook-trigger"))
                .count();
            (done == BULK_CLAIMS).then_some(())
        },
    )
    .await;
    let done = started.elapsed();

    let events: Vec<k8s_openapi::api::core::v1::Event> = env
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&kube::api::ListParams::default())
        .await
        .expect("events listed")
        .items;
    let failed: Vec<String> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
        .map(|e| format!("{:?}: {:?}", e.involved_object.name, e.message))
        .collect();
    let conflicts = env.control_plane_ref().map(|cp| {
        let log = std::fs::read_to_string(cp.log_dir().join("kube-controller-manager.log"))
            .unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("the object has been modified") && l.contains(&ns))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let bound = histogram(
        &webhook.metrics_url,
        "pvc_time_to_bound_seconds_count",
        &class,
    )
    .await;
    eprintln!(
        "{BULK_CLAIMS} claims created in {created:?}, all Bound and triggered after {done:?}: \
         {} ProvisioningFailed, {} update conflicts in the controller manager's log, \
         time to bound observed {bound:?} times",
        failed.len(),
        conflicts
            .as_ref()
            .map_or("(not counted on kube-sim)".to_owned(), |c| c
                .len()
                .to_string()),
    );
    assert!(failed.is_empty(), "ProvisioningFailed: {failed:?}");
    if let Some(conflicts) = conflicts {
        assert!(conflicts.is_empty(), "conflicts: {conflicts:#?}");
    }
    assert_eq!(bound, Some(BULK_CLAIMS as f64), "each claim timed once");

    stop_controller.cancel();
    controller
        .wait()
        .await
        .expect("the controller stops cleanly");
    webhook.stop().await;
    stop_provisioner.cancel();
    provisioner
        .wait()
        .await
        .expect("the provisioner stops cleanly");
    env.shutdown().await;
}
