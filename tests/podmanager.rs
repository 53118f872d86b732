//! podmanager end to end, on kube-sim and on a real control plane (each scenario with nodes of
//! its own, the scheduler and kubelets running its pods), the seed's walkthrough: the sample
//! gives 3 pods with owner references and `kubectl get podmanager` shows 3/3; scale to 5 through
//! the scale subresource and to 2 with `kubectl scale`, with no status written that announces
//! pod creates or deletes which then all land (the status is the next reconcile's, which sees
//! them); an image change replaces the pods one at
//! a time; a pod deleted by hand comes back under its name; events show in `kubectl describe`;
//! `/metrics` counts reconciles; deleting the PodManager removes its pods and releases the
//! finalizer. And with two operator replicas only the leader reconciles, and the other takes
//! over when it stops. With eviction-guard as the source of node health, a failed node's pods
//! are kept (the guard refuses their taint eviction) and replaced elsewhere, and the surplus
//! goes once the node returns. And v2 through the operator's conversion webhook: a v1 object
//! read and edited as v2 (a template change rolls the pods), the v2-only fields kept on v1, the
//! server's 422 for an invalid template, and the server's 500 once the webhook is down.
//!
//! The operator runs in-process through `podmanager::start`, watching only the scenario's
//! namespace. The PodManager CRD's name and group are fixed, so on a real cluster one scenario
//! at a time holds it ([`CrdHold`], lock `podmanager-crd`): it creates the CRD when the cluster
//! has none and deletes it at the end; a CRD the suite did not make (a user's) is used as it is,
//! and the conversion scenario, which would point its webhook elsewhere, skips. Scenarios that
//! serve a webhook skip on a real cluster without `E2E_WEBHOOK_HOST`. `kubectl` steps run when
//! `kubectl` is on PATH; otherwise the same change is made through the API.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ballast_e2e::harness::crd::CrdHold;
use ballast_e2e::{SimConfig, TestEnv, WebhookHost, wait_for};
use ballast_runtime::leader::LeaseConfig;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, CustomResourceExt, ResourceExt};
use podmanager::{Config, PodManager};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Longest wait for any condition; each is expected within seconds (a real control plane's
/// controllers take a few).
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long a settled PodManager is watched for spurious reconciles.
const QUIET_WINDOW: Duration = Duration::from_millis(700);
const SAMPLE: &str = include_str!("../crates/podmanager/config/samples/apps_v1_podmanager.yaml");
/// The cluster lock held while a scenario uses the PodManager CRD.
const CRD_LOCK: &str = "podmanager-crd";

/// The scenario's cluster for the operator: its nodes, the scheduler and kubelets.
fn cluster(nodes: usize) -> SimConfig {
    SimConfig::default()
        .nodes(nodes)
        .scheduler(true)
        .kubelet(true)
}

fn config(env: &TestEnv, identity: &str, elect: bool) -> Config {
    config_with(env, env.client.clone(), identity, elect)
}

fn config_with(env: &TestEnv, client: kube::Client, identity: &str, elect: bool) -> Config {
    Config {
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        kube: ballast_runtime::KubeAccess::Client(client),
        watch_namespace: Some(env.namespace.clone()),
        leader_election: elect.then(|| LeaseConfig {
            namespace: env.namespace.clone(),
            name: "podmanager".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(3),
            renew_every: Duration::from_millis(300),
        }),
        identity: identity.into(),
        control_endpoint: None,
        control_client: Default::default(),
        webhook: None,
    }
}

/// The requests made through a [`recording`] client, as "METHOD URI".
type RequestLog = Arc<Mutex<Vec<String>>>;

/// `client`, noting the method and URI of every request made through it.
fn recording(client: &kube::Client) -> (kube::Client, RequestLog) {
    let log = RequestLog::default();
    let (inner, seen) = (client.clone(), log.clone());
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{} {}", req.method(), req.uri()));
        let inner = inner.clone();
        async move { inner.send(req).await }
    });
    (kube::Client::new(service, client.default_namespace()), log)
}

/// The pod LISTs in `log` (GETs of a pod collection that are not watches).
fn pod_lists(log: &RequestLog) -> Vec<String> {
    let log = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    log.iter()
        .filter(|r| {
            let Some(uri) = r.strip_prefix("GET ") else {
                return false;
            };
            let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
            path.ends_with("/pods")
                && !query
                    .split('&')
                    .any(|q| q == "watch=true" || q == "watch=1")
        })
        .cloned()
        .collect()
}

async fn start_operator(config: Config, shutdown: &CancellationToken) -> podmanager::Running {
    podmanager::start(config, shutdown.clone())
        .await
        .expect("operator starts")
}

fn sample() -> PodManager {
    serde_yaml::from_str(SAMPLE).expect("sample parses")
}

/// Deletes PodManager `name` and waits until it and its pods are gone: the operator, still
/// running, deletes the pods and releases its finalizer.
async fn delete_and_wait(pms: &Api<PodManager>, pods: &Api<Pod>, name: &str) {
    pms.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("failed to delete PodManager {name}: {e}"));
    wait_for(
        &format!("PodManager {name} and its pods gone"),
        TIMEOUT,
        || async {
            let left = pods
                .list(&ListParams::default().labels(&format!("podmanager={name}")))
                .await
                .ok()?;
            let pm_gone = pms.get_opt(name).await.ok()?.is_none();
            (left.items.is_empty() && pm_gone).then_some(())
        },
    )
    .await;
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pod name -> (image, ready), for pods not terminating.
async fn pods_of(pods: &Api<Pod>, pm: &str) -> BTreeMap<String, (String, bool)> {
    let list = pods
        .list(&ListParams::default().labels(&format!("podmanager={pm}")))
        .await
        .expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let image = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let ready = pod_ready(&p);
            (p.name_any(), (image, ready))
        })
        .collect()
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("my-pod-manager-{i}")).collect()
}

/// Waits until exactly the pods `expected` exist, all ready on `image`, and the status says so.
async fn wait_settled(pms: &Api<PodManager>, pods: &Api<Pod>, expected: &[String], image: &str) {
    let n = i32::try_from(expected.len()).expect("small");
    wait_for(
        &format!("pods {expected:?} ready on {image} and status {n}/{n}"),
        TIMEOUT,
        || async {
            let now = pods_of(pods, "my-pod-manager").await;
            let names: Vec<&String> = now.keys().collect();
            let all_good = now.values().all(|(i, r)| i == image && *r);
            let pm = pms.get("my-pod-manager").await.ok()?;
            let status = pm.status?;
            (names == expected.iter().collect::<Vec<_>>()
                && all_good
                && status.ready_replicas == n
                && status.current_replicas == n)
                .then_some(())
        },
    )
    .await;
}

/// The Progressing conditions (reason, message) of every status a PodManager is seen with,
/// from the version it has now on.
struct ProgressingLog {
    seen: Arc<Mutex<Vec<(String, String)>>>,
    /// Ends only when the watch fails or the server closes it, with what happened.
    task: tokio::task::JoinHandle<String>,
}

impl ProgressingLog {
    async fn watch(pms: &Api<PodManager>, name: &str) -> Self {
        use futures::StreamExt;
        let from = pms
            .get(name)
            .await
            .expect("get the PodManager")
            .resource_version()
            .unwrap_or_default();
        let params = WatchParams::default().fields(&format!("metadata.name={name}"));
        let mut stream = pms
            .watch(&params, &from)
            .await
            .expect("watch the PodManager")
            .boxed();
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let pm = match event {
                    Ok(WatchEvent::Added(pm) | WatchEvent::Modified(pm)) => pm,
                    Ok(WatchEvent::Error(e)) => return format!("the watch failed: {e}"),
                    Ok(_) => continue,
                    Err(e) => return format!("the watch failed: {e}"),
                };
                let progressing = pm.status.iter().flat_map(|s| &s.conditions).find_map(|c| {
                    (c.type_ == "Progressing").then(|| (c.reason.clone(), c.message.clone()))
                });
                if let Some(p) = progressing {
                    let mut seen = log
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if seen.last() != Some(&p) {
                        seen.push(p);
                    }
                }
            }
            "the server ended the watch".to_string()
        });
        Self { seen, task }
    }

    /// Asserts that no status showed `reason` with a message naming every one of `pods`: the
    /// status the reconcile that creates (deletes) them all would have written before they
    /// land. A later reconcile whose pod cache lags behind its own earlier writes may show
    /// `reason` for some of them, never for all: the pod event that triggered it is cached.
    async fn assert_never_all(self, reason: &str, pods: &[&str]) {
        if self.task.is_finished() {
            let ended = self.task.await.expect("the watch task");
            panic!("watching the PodManager's status: {ended}");
        }
        self.task.abort();
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert!(
            !seen.is_empty(),
            "the watch saw no status while the PodManager changed"
        );
        assert!(
            !seen
                .iter()
                .any(|(r, m)| r == reason && pods.iter().all(|p| m.contains(p))),
            "a status was written before the pod changes it announced had landed: {seen:?}"
        );
    }
}

/// Runs kubectl (async: kube-sim serves on this test's runtime) with discovery cached in
/// `cache` (the scenario's own: kubectl's shared cache could still list the API versions of a
/// PodManager CRD another scenario replaced). `None` when kubectl is not installed.
async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .await
        .ok()?;
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

fn reconciles(text: &str) -> f64 {
    ballast_runtime::metrics::sample(text, "podmanager_reconcile_total", &[("result", "success")])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_walkthrough_scale_rollout_self_heal_and_delete() {
    ballast_runtime::telemetry::init();
    let env = TestEnv::start(cluster(3)).await;
    let crd = CrdHold::take(&env, PodManager::crd(), CRD_LOCK, false)
        .await
        .expect("v1 works with any PodManager CRD");
    let client = env.client.clone();
    let ns = env.namespace.clone();
    let cache = tempfile::tempdir().expect("a kubectl cache directory");
    let shutdown = CancellationToken::new();
    let (recorded, requests) = recording(&env.client);
    let op = start_operator(config_with(&env, recorded, "pm-solo", false), &shutdown).await;
    let before = reconciles(&metrics_text(op.admin_addr).await);
    let readyz = format!("http://{}/readyz", op.admin_addr);
    wait_for("/readyz 200 once node health is known", TIMEOUT, || async {
        let r = reqwest::get(&readyz).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let pms: Api<PodManager> = env.api();
    let pods: Api<Pod> = env.api();
    pms.create(&PostParams::default(), &sample())
        .await
        .expect("create the sample");

    // 3 pods with controller owner references and the seed's labels, on the scenario's nodes.
    wait_settled(&pms, &pods, &names(3), "nginx:1.21").await;
    let pm = pms.get("my-pod-manager").await.expect("get pm");
    assert!(
        pm.finalizers().iter().any(|f| f == podmanager::FINALIZER),
        "finalizer added: {:?}",
        pm.finalizers()
    );
    let listed = pods
        .list(&ListParams::default().labels("app=my-app"))
        .await
        .expect("pods by the sample's own label");
    assert_eq!(
        listed.items.len(),
        3,
        "kubectl get pods -l app=my-app finds them"
    );
    for pod in &listed.items {
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("PodManager", "my-pod-manager", Some(true))
        );
        assert_eq!(owner.uid, pm.uid().unwrap_or_default());
        assert_eq!(pod.labels()["podmanager-uid"], owner.uid);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        assert!(
            node.as_ref().is_some_and(|n| env.nodes().contains(n)),
            "{} runs on one of the scenario's nodes: {node:?}",
            pod.name_any()
        );
    }
    let ready = pm
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.message.as_str()),
        ("True", "3/3 pods ready")
    );
    if let Some(out) = kubectl(
        &env.kubeconfig,
        cache.path(),
        &["get", "podmanager", "-n", &ns],
    )
    .await
    {
        let row: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with("my-pod-manager"))
            .expect("row for the sample")
            .split_whitespace()
            .collect();
        assert_eq!(
            &row[..3],
            ["my-pod-manager", "3/3", "3"],
            "kubectl get podmanager:\n{out}"
        );
    }

    // No reconcile loop on our own status writes: once settled, the operator goes quiet.
    // (A bounded observation window: absence of a loop cannot be polled for.)
    let settled_at = op.reconcile_count();
    tokio::time::sleep(QUIET_WINDOW).await;
    let extra = op.reconcile_count() - settled_at;
    assert!(
        extra <= 1,
        "{extra} reconciles in {QUIET_WINDOW:?} after settling"
    );

    // Scale to 5 through the scale subresource (what `kubectl scale` and HPA use). Every
    // status written meanwhile is watched: a reconcile whose creates all land leaves the
    // status to the reconcile that sees the new pods.
    let written = ProgressingLog::watch(&pms, "my-pod-manager").await;
    pms.patch_scale(
        "my-pod-manager",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .expect("scale to 5");
    wait_settled(&pms, &pods, &names(5), "nginx:1.21").await;
    written
        .assert_never_all("ScalingUp", &["my-pod-manager-3", "my-pod-manager-4"])
        .await;

    // Scale to 2: the highest ordinals go.
    let written = ProgressingLog::watch(&pms, "my-pod-manager").await;
    let scaled_by_kubectl = kubectl(
        &env.kubeconfig,
        cache.path(),
        &[
            "scale",
            "podmanager/my-pod-manager",
            "-n",
            &ns,
            "--replicas=2",
        ],
    )
    .await
    .is_some();
    if !scaled_by_kubectl {
        pms.patch(
            "my-pod-manager",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("scale to 2");
    }
    wait_settled(&pms, &pods, &names(2), "nginx:1.21").await;
    written
        .assert_never_all(
            "ScalingDown",
            &["my-pod-manager-2", "my-pod-manager-3", "my-pod-manager-4"],
        )
        .await;

    // Image change: replaced one at a time, never fewer than one pod ready.
    pms.patch(
        "my-pod-manager",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "nginx:1.22"}})),
    )
    .await
    .expect("change image");
    let mut min_ready = usize::MAX;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let now = pods_of(&pods, "my-pod-manager").await;
        min_ready = min_ready.min(now.values().filter(|(_, r)| *r).count());
        if now.len() == 2 && now.values().all(|(i, r)| i == "nginx:1.22" && *r) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the rollout: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(min_ready >= 1, "rollout took down both pods at once");
    wait_settled(&pms, &pods, &names(2), "nginx:1.22").await;

    // Delete a pod by hand: replaced under the same name.
    let old_uid = pods
        .get("my-pod-manager-0")
        .await
        .expect("pod 0")
        .uid()
        .unwrap_or_default();
    pods.delete("my-pod-manager-0", &DeleteParams::default())
        .await
        .expect("delete pod 0");
    wait_for("my-pod-manager-0 re-created", TIMEOUT, || async {
        let p = pods.get("my-pod-manager-0").await.ok()?;
        (p.uid().unwrap_or_default() != old_uid).then_some(())
    })
    .await;
    wait_settled(&pms, &pods, &names(2), "nginx:1.22").await;

    // Events, as `kubectl describe` shows them.
    let events: Api<Event> = env.api();
    let notes: Vec<(String, String)> = wait_for("events for the PodManager", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let notes: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("PodManager"))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        notes
            .iter()
            .any(|(r, n)| r == "SuccessfulDelete" && n.contains("pod template changed"))
            .then_some(notes)
    })
    .await;
    assert!(
        notes.contains(&(
            "SuccessfulCreate".into(),
            "Created pod my-pod-manager-4 with image nginx:1.21".into()
        )),
        "events: {notes:?}"
    );
    assert!(
        notes.contains(&(
            "SuccessfulDelete".into(),
            "Deleted pod my-pod-manager-4 (scale down)".into()
        )),
        "events: {notes:?}"
    );
    // `kubectl describe` shows the conditions, and in its Events section (core/v1 events, the
    // same store as events.k8s.io/v1) what the operator did.
    if let Some(out) = kubectl(
        &env.kubeconfig,
        cache.path(),
        &["describe", "podmanager", "my-pod-manager", "-n", &ns],
    )
    .await
    {
        assert!(
            out.contains("2/2 pods ready") && out.contains("AllReplicasReady"),
            "kubectl describe shows the conditions:\n{out}"
        );
        let events = out.split("Events:").nth(1).unwrap_or_default();
        assert!(
            events.contains("Created pod my-pod-manager-0 with image nginx:1.21")
                && events.contains("Deleted pod my-pod-manager-4 (scale down)"),
            "kubectl describe lists the operator's events:\n{out}"
        );
    }
    if let Some(out) = kubectl(
        &env.kubeconfig,
        cache.path(),
        &[
            "get",
            "events.v1.events.k8s.io",
            "-n",
            &ns,
            "-o",
            "custom-columns=REASON:.reason,NOTE:.note",
        ],
    )
    .await
    {
        assert!(
            out.contains("Created pod my-pod-manager-0 with image nginx:1.21")
                && out.contains("Deleted pod my-pod-manager-1 (pod template changed)"),
            "kubectl get events shows creates and deletes:\n{out}"
        );
    }

    // Metrics counted the reconciles.
    let after = reconciles(&metrics_text(op.admin_addr).await);
    assert!(
        after > before,
        "podmanager_reconcile_total{{result=\"success\"}} grew: {before} -> {after}"
    );
    // Reconciles read pods from the operator's watch, not from the API server: its pod LISTs
    // are the watch's first list (and a relist, should the watch have been reset).
    let lists = pod_lists(&requests);
    assert!(
        lists.len() <= 2 && after - before >= 10.0,
        "{} pod LISTs over {} reconciles: {lists:#?}",
        lists.len(),
        after - before
    );

    // Delete the PodManager: pods gone, finalizer released, object gone.
    delete_and_wait(&pms, &pods, "my-pod-manager").await;

    shutdown.cancel();
    op.wait().await.expect("operator stops cleanly");
    crd.release(&client).await;
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_replicas_only_the_leader_reconciles_and_the_other_takes_over() {
    let env = TestEnv::start(cluster(3)).await;
    let crd = CrdHold::take(&env, PodManager::crd(), CRD_LOCK, false)
        .await
        .expect("v1 works with any PodManager CRD");
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let a = start_operator(config(&env, "pm-a", true), &stop_a).await;
    let b = start_operator(config(&env, "pm-b", true), &stop_b).await;
    wait_for("a leader", TIMEOUT, || async {
        (a.is_leader() || b.is_leader()).then_some(())
    })
    .await;
    let (leader, follower, stop_leader, stop_follower) = if a.is_leader() {
        (a, b, stop_a, stop_b)
    } else {
        (b, a, stop_b, stop_a)
    };

    let pms: Api<PodManager> = env.api();
    let pods: Api<Pod> = env.api();
    pms.create(&PostParams::default(), &sample())
        .await
        .expect("create the sample");
    wait_settled(&pms, &pods, &names(3), "nginx:1.21").await;
    assert!(leader.reconcile_count() > 0, "the leader reconciled");
    assert_eq!(
        follower.reconcile_count(),
        0,
        "the follower never reconciled"
    );
    assert!(!follower.is_leader());

    // The leader stops (releasing the Lease); the follower takes over and acts.
    stop_leader.cancel();
    leader.wait().await.expect("leader stops cleanly");
    wait_for("the follower to lead", TIMEOUT, || async {
        follower.is_leader().then_some(())
    })
    .await;
    pms.patch(
        "my-pod-manager",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .expect("scale to 4");
    wait_settled(&pms, &pods, &names(4), "nginx:1.21").await;
    assert!(follower.reconcile_count() > 0, "the new leader reconciled");

    delete_and_wait(&pms, &pods, "my-pod-manager").await;
    stop_follower.cancel();
    follower.wait().await.expect("new leader stops cleanly");
    crd.release(&env.client).await;
    env.shutdown().await;
}

/// Node name -> pod names of the PodManager on it, for pods not terminating.
async fn placement(pods: &Api<Pod>) -> BTreeMap<String, Vec<String>> {
    let list = pods
        .list(&ListParams::default().labels("podmanager=my-pod-manager"))
        .await
        .expect("list pods");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        out.entry(node).or_default().push(p.name_any());
    }
    out
}

/// eviction-guard in-process for the scenario: its webhook registered for the scenario's
/// namespace, a single NotReady node of the scenario's enough for a storm, and its control
/// service (node health and protection) on loopback for the operator.
struct GuardService {
    running: eviction_guard::Running,
    shutdown: CancellationToken,
    _certs: tempfile::TempDir,
}

impl GuardService {
    async fn start(env: &TestEnv, host: &WebhookHost) -> GuardService {
        let certs = tempfile::tempdir().expect("tempdir");
        let cert = ballast_runtime::tls::generate(&host.cert_names()).expect("a certificate");
        let tls = cert.write_to(certs.path()).expect("certificate files");
        let mut config = eviction_guard::Config::loopback(env.client.clone());
        config.webhook_addr = host.bind_addr(0);
        config.tls = Some(tls);
        config.namespace = env.namespace.clone();
        config.worker_selector = env.node_selector().parse().expect("a node selector");
        config.storm.threshold = 1;
        let shutdown = CancellationToken::new();
        let running = eviction_guard::start(config, shutdown.clone())
            .await
            .expect("the guard starts");
        let configuration = env.scoped(
            eviction_guard::webhook_config::validating_webhook_configuration(
                &format!("eviction-guard-{}", env.namespace),
                WebhookClientConfig {
                    url: Some(host.url(running.webhook_addr.port(), "/validate")),
                    ca_bundle: Some(k8s_openapi::ByteString(cert.ca_pem.clone().into_bytes())),
                    service: None,
                },
                &["kube-system"],
            ),
        );
        Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
            .create(&PostParams::default(), &configuration)
            .await
            .expect("the guard's webhook configuration registered");
        wait_for("the guard to be ready", TIMEOUT, || async {
            running.readiness.is_ready().then_some(())
        })
        .await;
        GuardService {
            running,
            shutdown,
            _certs: certs,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.running.grpc_addr)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await.expect("the guard stops cleanly");
    }
}

/// Whether node `name` is NotReady (Ready condition not True) as the API server stores it.
async fn node_not_ready(nodes: &Api<Node>, name: &str) -> bool {
    nodes
        .get(name)
        .await
        .is_ok_and(|n| !ballast_runtime::node::is_ready(&n))
}

/// With node health from eviction-guard (threshold 1: one failed node is a storm here): the
/// failed node's pods are kept, since the guard refuses their taint eviction, and not deleted
/// by the operator, which replaces them with extra pods on the other nodes; when the node
/// returns and protection ends, the surplus goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_a_failed_node_are_replaced_elsewhere_while_protected_then_surplus_removed() {
    let env = TestEnv::start(cluster(3).taint_eviction(true)).await;
    let Some(host) = env.webhook_host_or_skip("eviction-guard's webhook served in-process") else {
        env.shutdown().await;
        return;
    };
    let crd = CrdHold::take(&env, PodManager::crd(), CRD_LOCK, false)
        .await
        .expect("v1 works with any PodManager CRD");
    let guard = GuardService::start(&env, &host).await;
    let shutdown = CancellationToken::new();
    let mut cfg = config(&env, "pm-protect", false);
    cfg.control_endpoint = Some(guard.endpoint());
    let op = start_operator(cfg, &shutdown).await;

    let pms: Api<PodManager> = env.api();
    let pods: Api<Pod> = env.api();
    let nodes: Api<Node> = Api::all(env.client.clone());
    pms.create(&PostParams::default(), &sample())
        .await
        .expect("create the sample");
    wait_settled(&pms, &pods, &names(3), "nginx:1.21").await;
    let before = placement(&pods).await;
    let (dead_node, stranded) = before
        .iter()
        .find(|(node, _)| !node.is_empty())
        .map(|(n, p)| (n.clone(), p.clone()))
        .expect("a node with pods");
    let mut stranded_uids = Vec::new();
    for name in &stranded {
        let pod = pods.get(name).await.expect("a stranded pod");
        stranded_uids.push(pod.uid().expect("a uid"));
    }

    // The node fails: NotReady after the node grace, the guard turns protection on, the taint
    // eviction controller tries to evict its pods once their toleration expires and is refused.
    env.fail_node(&dead_node);
    wait_for(
        &format!("{dead_node} NotReady"),
        env.node_grace() + TIMEOUT,
        || async { node_not_ready(&nodes, &dead_node).await.then_some(()) },
    )
    .await;
    let guard_state = &guard.running.guard;
    wait_for(
        "the taint eviction of the failed node's pods refused",
        TIMEOUT,
        || async {
            stranded_uids
                .iter()
                .all(|uid| guard_state.refusal(uid).is_some())
                .then_some(())
        },
    )
    .await;
    let (now, status) = wait_for("replacements on other nodes", TIMEOUT, || async {
        let now = pods_of(&pods, "my-pod-manager").await;
        let placed = placement(&pods).await;
        let elsewhere: Vec<&String> = placed
            .iter()
            .filter(|(node, _)| **node != dead_node)
            .flat_map(|(_, p)| p)
            .collect();
        let elsewhere_ready = elsewhere
            .iter()
            .all(|p| now.get(*p).is_some_and(|(_, ready)| *ready));
        let pm = pms.get("my-pod-manager").await.ok()?;
        let status = pm.status?;
        (elsewhere.len() == 3 && elsewhere_ready && status.ready_replicas == 3)
            .then_some((now, status))
    })
    .await;
    for pod in &stranded {
        assert!(
            now.contains_key(pod),
            "{pod} on the failed node was kept, not deleted: {now:?}"
        );
    }
    assert!(
        now.contains_key("my-pod-manager-3"),
        "replacement on the next ordinal: {now:?}"
    );
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded condition");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "PodsOnNotReadyNodes")
    );

    // The node returns and protection ends: back to exactly 3 pods, all ready.
    env.restore_node(&dead_node);
    wait_for(
        "surplus removed after the node returns",
        TIMEOUT,
        || async {
            let now = pods_of(&pods, "my-pod-manager").await;
            let pm = pms.get("my-pod-manager").await.ok()?;
            let status = pm.status?;
            let degraded_off = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "False");
            (now.len() == 3
                && now.values().all(|(_, r)| *r)
                && status.ready_replicas == 3
                && degraded_off)
                .then_some(())
        },
    )
    .await;

    delete_and_wait(&pms, &pods, "my-pod-manager").await;
    shutdown.cancel();
    op.wait().await.expect("operator stops cleanly");
    guard.stop().await;
    crd.release(&env.client).await;
    env.shutdown().await;
}

/// A free TCP port on the webhook host (bound then released: the webhook's URL must be known
/// before the operator binds it, since the self-signed bootstrap patches the CRD first).
async fn free_port(host: &WebhookHost) -> u16 {
    let l = tokio::net::TcpListener::bind(host.bind_addr(0))
        .await
        .expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// The published multi-version CRD, its conversion webhook pointed at `url` (a URL instead of
/// the Service, so the API server reaches an operator running here).
fn multi_version_crd(url: &str) -> CustomResourceDefinition {
    let mut crd = podmanager::crd::crd().expect("the CRD renders");
    let webhook = crd
        .spec
        .conversion
        .as_mut()
        .and_then(|c| c.webhook.as_mut())
        .expect("conversion webhook");
    webhook.client_config =
        Some(serde_json::from_value(json!({"url": url})).expect("client config"));
    crd
}

/// One pod as the conversion scenario checks it: uid, first container's env, labels, ready.
type PodDetail = (
    String,
    Vec<(String, String)>,
    BTreeMap<String, String>,
    bool,
);

/// Pod name -> details of the pods of `pm`, not terminating.
async fn pod_details(pods: &Api<Pod>, pm: &str) -> BTreeMap<String, PodDetail> {
    let list = pods
        .list(&ListParams::default().labels(&format!("podmanager={pm}")))
        .await
        .expect("list pods");
    list.items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let env = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.env.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.name, e.value.unwrap_or_default()))
                .collect();
            let ready = pod_ready(&p);
            (
                p.name_any(),
                (
                    p.metadata.uid.clone().unwrap_or_default(),
                    env,
                    p.metadata.labels.clone().unwrap_or_default(),
                    ready,
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_objects_read_and_edit_as_v2_through_the_operators_conversion_webhook() {
    use podmanager::crd::v2;
    let env = TestEnv::start(cluster(2)).await;
    let Some(host) = env.webhook_host_or_skip("the PodManager conversion webhook") else {
        env.shutdown().await;
        return;
    };
    let client = env.client.clone();
    let ns = env.namespace.clone();
    let port = free_port(&host).await;
    let url = host.url(port, podmanager::crd::CONVERSION_PATH);
    let Some(crd) = CrdHold::take(&env, multi_version_crd(&url), CRD_LOCK, true).await else {
        env.skip(
            "the PodManager conversion webhook: the cluster has a PodManager CRD of its own, \
             whose conversion webhook this scenario would have to point at itself",
        );
        env.shutdown().await;
        return;
    };

    // The operator with its webhook, certificate from the self-signed bootstrap (which injects
    // the CA into the CRD).
    let certs = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&env, "pm-convert", false);
    cfg.webhook = Some(podmanager::webhook::WebhookConfig {
        addr: host.bind_addr(port),
        tls: Some((certs.path().join("tls.crt"), certs.path().join("tls.key"))),
        self_signed: Some(podmanager::webhook::SelfSigned {
            secret: "podmanager-tls".into(),
            namespace: ns.clone(),
            service_dns: host.host.clone(),
            crd: podmanager::crd::CRD_NAME.into(),
        }),
    });
    let shutdown = CancellationToken::new();
    let op = start_operator(cfg, &shutdown).await;
    assert_eq!(op.webhook_addr.map(|a| a.port()), Some(port));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let injected = crds.get(podmanager::crd::CRD_NAME).await.expect("CRD");
    assert!(
        injected
            .spec
            .conversion
            .and_then(|c| c.webhook)
            .and_then(|w| w.client_config)
            .and_then(|c| c.ca_bundle)
            .is_some_and(|b| !b.0.is_empty()),
        "the bootstrap injects the CA into the CRD"
    );

    let v1s: Api<PodManager> = env.api();
    let v2s: Api<v2::PodManager> = env.api();
    let pods: Api<Pod> = env.api();
    wait_for("v2 PodManagers to be served", TIMEOUT, || async {
        v2s.list(&ListParams::default()).await.ok()
    })
    .await;

    // Create as v1; the pods come up.
    let pm: PodManager = serde_json::from_value(json!({
        "apiVersion": "apps.mycompany.com/v1", "kind": "PodManager",
        "metadata": {"name": "shop"}, "spec": {"replicas": 2, "image": "nginx:1.27"}}))
    .expect("v1 object");
    v1s.create(&PostParams::default(), &pm)
        .await
        .expect("create v1");
    let first = wait_for("2 ready pods", TIMEOUT, || async {
        let now = pod_details(&pods, "shop").await;
        (now.len() == 2 && now.values().all(|p| p.3)).then_some(now)
    })
    .await;

    // Read as v2: the template shows the image; the pods are the same ones.
    let as_v2 = v2s.get("shop").await.expect("get as v2");
    assert_eq!(as_v2.spec.replicas, 2);
    assert_eq!(
        as_v2
            .spec
            .template
            .spec
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.image.as_str()))
            .collect::<Vec<_>>(),
        [("app", "nginx:1.27")]
    );
    let uids = |m: &BTreeMap<String, PodDetail>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(uids(&pod_details(&pods, "shop").await), uids(&first));

    // Edit as v2: a template change with the same image rolls every pod.
    let patch = json!({"spec": {"template": {
        "metadata": {"labels": {"tier": "front"}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27",
                                 "env": [{"name": "MODE", "value": "fast"}]}]}}}});
    v2s.patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch as v2");
    let rolled = wait_for("pods rolled to the new template", TIMEOUT, || async {
        let now = pod_details(&pods, "shop").await;
        let done = now.len() == 2
            && now.values().all(|(_, env, labels, ready)| {
                *ready
                    && env == &[("MODE".to_string(), "fast".to_string())]
                    && labels.get("tier").map(String::as_str) == Some("front")
            });
        done.then_some(now)
    })
    .await;
    for (name, (uid, ..)) in &rolled {
        assert_ne!(
            Some(uid),
            first.get(name).map(|p| &p.0),
            "{name} was replaced"
        );
    }

    // Read as v1: the image, with the v2-only fields kept in the annotation; and back as v2.
    let as_v1 = v1s.get("shop").await.expect("get as v1");
    assert_eq!(as_v1.spec.image, "nginx:1.27");
    let kept = as_v1
        .annotations()
        .get(podmanager::convert::TEMPLATE_ANNOTATION)
        .cloned()
        .expect("the v2 template kept on v1");
    let kept: serde_json::Value = serde_json::from_str(&kept).expect("JSON");
    assert_eq!(
        kept["spec"]["containers"][0]["env"],
        json!([{"name": "MODE", "value": "fast"}])
    );
    assert_eq!(kept["metadata"]["labels"], json!({"tier": "front"}));
    let again = v2s.get("shop").await.expect("get as v2");
    assert_eq!(
        again.spec.template.metadata.clone().map(|m| m.labels),
        Some(BTreeMap::from([("tier".to_string(), "front".to_string())]))
    );
    assert!(
        again
            .annotations()
            .get(podmanager::convert::TEMPLATE_ANNOTATION)
            .is_none()
    );

    // An invalid v2 template is the API server's 422.
    let bad: v2::PodManager = serde_json::from_value(json!({
        "apiVersion": "apps.mycompany.com/v2", "kind": "PodManager", "metadata": {"name": "bad"},
        "spec": {"template": {"spec": {"containers": [{"name": "Bad_Name", "image": "nginx"}]}}}}))
    .expect("v2 object");
    let err = v2s.create(&PostParams::default(), &bad).await.unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err}")
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "PodManager.apps.mycompany.com \"bad\" is invalid: spec.template.spec.containers[0].name: \
         Invalid value: \"Bad_Name\": spec.template.spec.containers[0].name in body should match \
         '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'"
    );

    // Delete: the pods go, then the PodManager (its finalizer released by the operator).
    v2s.delete("shop", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("pods and PodManager gone", TIMEOUT, || async {
        let gone = pod_details(&pods, "shop").await.is_empty()
            && v1s.get_opt("shop").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;

    // The operator (and its webhook) down: v2 reads fail with the API server's error, v1 works.
    shutdown.cancel();
    op.wait().await.expect("operator stops");
    let lone: PodManager = serde_json::from_value(json!({
        "apiVersion": "apps.mycompany.com/v1", "kind": "PodManager",
        "metadata": {"name": "lone"}, "spec": {"image": "nginx:1.27"}}))
    .expect("v1 object");
    v1s.create(&PostParams::default(), &lone)
        .await
        .expect("create v1");
    let err = wait_for("v2 reads to fail", TIMEOUT, || async {
        v2s.get("lone").await.err()
    })
    .await;
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err}")
    };
    assert_eq!(status.code, 500);
    let prefix = format!(
        "conversion webhook for apps.mycompany.com/v1, Kind=PodManager failed: Post \"{url}?timeout=30s\": "
    );
    assert!(status.message.starts_with(&prefix), "{}", status.message);
    assert_eq!(v1s.get("lone").await.expect("v1 read").spec.replicas, 3);
    // No operator put a finalizer on it: it goes at once.
    v1s.delete("lone", &DeleteParams::default())
        .await
        .expect("delete lone");
    wait_for("lone gone", TIMEOUT, || async {
        v1s.get_opt("lone").await.ok()?.is_none().then_some(())
    })
    .await;
    crd.release(&client).await;
    env.shutdown().await;
}

/// Fault: the leader killed (no drain, its Lease not released) in the middle of a template
/// roll. The standby takes over once the Lease expires and finishes the roll; sampled every
/// 50ms throughout, the PodManager never has more pods than its replicas, terminating ones
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_rollout_is_taken_over_and_never_runs_more_pods_than_replicas() {
    const REPLICAS: usize = 5;
    let env = TestEnv::start(cluster(3)).await;
    let crd = CrdHold::take(&env, PodManager::crd(), CRD_LOCK, false)
        .await
        .expect("v1 works with any PodManager CRD");
    let stop_a = CancellationToken::new();
    let a = start_operator(config(&env, "pm-a", true), &stop_a).await;
    wait_for("pm-a to lead", TIMEOUT, || async {
        a.is_leader().then_some(())
    })
    .await;
    let stop_b = CancellationToken::new();
    let b = start_operator(config(&env, "pm-b", true), &stop_b).await;
    let pms: Api<PodManager> = env.api();
    let pods: Api<Pod> = env.api();
    let mut pm = sample();
    pm.spec.replicas = REPLICAS as i32;
    pms.create(&PostParams::default(), &pm)
        .await
        .expect("create the PodManager");
    wait_settled(&pms, &pods, &names(REPLICAS), "nginx:1.21").await;

    // every pod of the PodManager, terminating ones included, every 50ms
    let sampling = CancellationToken::new();
    let sampler = {
        let (pods, until) = (pods.clone(), sampling.clone());
        tokio::spawn(async move {
            let mut most = 0usize;
            while !until.is_cancelled() {
                if let Ok(list) = pods
                    .list_metadata(&ListParams::default().labels("podmanager=my-pod-manager"))
                    .await
                {
                    most = most.max(list.items.len());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            most
        })
    };
    pms.patch(
        "my-pod-manager",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "nginx:1.22"}})),
    )
    .await
    .expect("change the image");
    wait_for("the roll under way", TIMEOUT, || async {
        let now = pods_of(&pods, "my-pod-manager").await;
        now.values()
            .any(|(image, ready)| image == "nginx:1.22" && *ready)
            .then_some(())
    })
    .await;
    let rolled_at_kill = pods_of(&pods, "my-pod-manager")
        .await
        .values()
        .filter(|(image, _)| image == "nginx:1.22")
        .count();
    a.abort();
    let killed = Instant::now();
    wait_for("pm-b to take over", TIMEOUT, || async {
        b.is_leader().then_some(())
    })
    .await;
    let took_over = killed.elapsed();
    // the Lease (3s) expires 3s after the last renewal the standby saw, at most one renewal
    // period (300ms) before the kill
    assert!(
        took_over >= Duration::from_millis(2500),
        "the standby led {took_over:?} after the kill, before the Lease could expire"
    );
    wait_settled(&pms, &pods, &names(REPLICAS), "nginx:1.22").await;
    eprintln!(
        "{rolled_at_kill}/{REPLICAS} pods rolled when the leader was killed; the standby led \
         {took_over:?} after (Lease 3s) and finished the roll {:?} after",
        killed.elapsed()
    );
    sampling.cancel();
    let most = sampler.await.expect("the sampler ends");
    assert!(most <= REPLICAS, "{most} pods at once, replicas {REPLICAS}");
    assert!(
        rolled_at_kill < REPLICAS,
        "the leader was killed mid-roll ({rolled_at_kill} rolled)"
    );
    assert!(b.reconcile_count() > 0, "the standby finished the roll");

    delete_and_wait(&pms, &pods, "my-pod-manager").await;
    stop_b.cancel();
    b.wait().await.expect("pm-b stops cleanly");
    crd.release(&env.client).await;
    env.shutdown().await;
}
