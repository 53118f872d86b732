//! pvc-timing end to end on kube-sim: the webhook (real TLS, registered like in a cluster) and
//! the leader-elected controller run in-process; the user story is checked the way a user would,
//! through the API, the seed's own `kubectl` command and `/metrics`.

use std::time::Duration;

use ballast_e2e::{SimConfig, TestEnv, WebhookHost, kubectl, kubectl_with_input, wait_for};
use ballast_runtime::metrics::sample;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use pvc_timing::timing::{PvcTiming, parse_time};
use pvc_timing::{Config, ControllerConfig, KubeAccess, WebhookConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Generous for a loaded machine; the simulator answers in milliseconds.
const TIMEOUT: Duration = Duration::from_secs(20);

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

fn webhook_configuration(name: &str, url: String, ca_pem: &str) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
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
    }
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

fn timing_of(pvc: &PersistentVolumeClaim) -> Option<PvcTiming> {
    PvcTiming::parse(pvc.annotations().get("pvc-timing")?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_history_shows_pending_then_bound_and_creation_survives_a_stopped_webhook() {
    ballast_runtime::tls::install_crypto_provider();
    let env = TestEnv::start(SimConfig::default()).await;
    let Some(host) = env.webhook_host_or_skip("the pvc-timing webhook served in-process") else {
        env.shutdown().await;
        return;
    };
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
            admin_addr: Some("127.0.0.1:0".parse().unwrap()),
            kube: KubeAccess::Client(env.client.clone()),
        },
        shutdown.clone(),
    )
    .await
    .expect("pvc-timing starts");
    let port = running.webhook_addr.unwrap().port();
    let metrics_url = format!("http://{}/metrics", running.admin_addr.unwrap());
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .create(
            &PostParams::default(),
            &webhook_configuration(
                &format!("pvc-timing-{ns}"),
                host.url(port, "/mutate"),
                &generated.ca_pem,
            ),
        )
        .await
        .expect("webhook configuration registered");

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

    // A new claim records Pending at its creation time.
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    let created = pvcs
        .create(&PostParams::default(), &claim("data", &storage_class))
        .await
        .expect("claim created");
    assert_eq!(
        transitions(&metrics_url, "Pending").await,
        pending_before + 1.0,
        "the real creation is counted"
    );
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

    // Bound through the status subresource, as the PV controller does.
    pvcs.patch_status(
        "data",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Bound"}})),
    )
    .await
    .expect("status set Bound");

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
    let text = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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

    env.shutdown().await;
}

/// One controller replica, holding (or waiting for) the shared Lease; no webhook.
async fn replica(env: &TestEnv, identity: &str) -> (pvc_timing::Running, CancellationToken) {
    let mut lease =
        ballast_runtime::leader::LeaseConfig::new(&env.namespace, "pvc-timing", identity);
    // Short terms keep the hand-over quick; shutdown releases the Lease anyway.
    lease.lease_duration = Duration::from_secs(3);
    lease.renew_every = Duration::from_millis(200);
    let shutdown = CancellationToken::new();
    let running = pvc_timing::start(
        Config {
            webhook: None,
            controller: Some(ControllerConfig {
                leader: Some(lease),
                excluded_namespaces: vec![],
            }),
            admin_addr: None,
            kube: KubeAccess::Client(env.client.clone()),
        },
        shutdown.clone(),
    )
    .await
    .expect("a controller replica starts");
    (running, shutdown)
}

async fn bind_and_wait_for_trigger(pvcs: &Api<PersistentVolumeClaim>, name: &str) -> String {
    pvcs.create(&PostParams::default(), &claim(name, "standard"))
        .await
        .expect("claim created");
    pvcs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Bound"}})),
    )
    .await
    .expect("status set Bound");
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
    let env = TestEnv::start(SimConfig::default()).await;
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
    let trigger = bind_and_wait_for_trigger(&pvcs, "first").await;
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
    bind_and_wait_for_trigger(&pvcs, "second").await;

    // The first claim's trigger was written once and never rewritten.
    let first_claim = pvcs.get("first").await.unwrap();
    assert_eq!(first_claim.annotations()["webhook-trigger"], trigger);

    stop_other.cancel();
    other_task
        .wait()
        .await
        .expect("the successor stops cleanly");
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
    // As applied from the kustomize base: no caBundle yet.
    let mut unsigned = webhook_configuration(&configuration, host.url(port, "/mutate"), "");
    if let Some(webhooks) = unsigned.webhooks.as_mut() {
        webhooks[0].client_config.ca_bundle = None;
    }
    let configurations = Api::<MutatingWebhookConfiguration>::all(env.client.clone());
    configurations
        .create(&PostParams::default(), &unsigned)
        .await
        .expect("webhook configuration registered");

    let start = |cert_dir: std::path::PathBuf, port: u16, shutdown: CancellationToken| {
        let client = env.client.clone();
        let (ns, configuration, host) = (ns.clone(), configuration.clone(), host.clone());
        async move {
            pvc_timing::start(
                Config {
                    webhook: Some(WebhookConfig {
                        addr: host.bind_addr(port),
                        tls: Some(ballast_runtime::tls::cert_paths(&cert_dir, None, None)),
                        self_signed: Some(pvc_timing::SelfSigned {
                            args: ballast_runtime::bootstrap::SelfSignedArgs {
                                self_signed_secret: Some("pvc-timing-serving-cert".into()),
                                webhook_configuration: Some(configuration),
                                webhook_service_dns: Some(host.host.clone()),
                            },
                            namespace: ns,
                        }),
                    }),
                    controller: None,
                    admin_addr: None,
                    kube: KubeAccess::Client(client),
                },
                shutdown,
            )
            .await
            .expect("pvc-timing starts in self-signed mode")
        }
    };
    let first_dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _first = start(first_dir.path().to_path_buf(), port, shutdown.clone()).await;

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

    // The API server reaches the webhook over TLS with that CA: a new claim gets its history.
    // A dry run, so the process-wide counters other scenarios assert on do not move.
    let claims: Api<PersistentVolumeClaim> = env.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let created = claims
        .create(&dry_run, &claim("self-signed", "standard"))
        .await
        .expect("claim created");
    let timing = timing_of(&created).expect("the webhook annotated the claim");
    assert_eq!(timing.current_phase, "Pending");

    // A second replica (or a restart) serves the same certificate instead of minting another.
    let second_dir = tempfile::tempdir().unwrap();
    let _second = start(
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
}
