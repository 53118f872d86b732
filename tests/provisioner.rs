//! provisioner end to end on kube-sim, whose PV controller behaves like kube-controller-manager's:
//! it hands claims to the provisioner (storage-provisioner annotations) and binds the volumes the
//! provisioner creates pre-bound; the provisioner never writes a claim's spec or status. With
//! real directories under temporary base paths: a hostPath claim gets a directory on its
//! selected node and a PV pinned there; a selected node without an agent, NotReady or short of
//! space gets `ProvisioningFailed` and loses `selected-node`, so the scheduler picks again; an
//! NFS claim gets a subdirectory of the (fake, local: IS_NFS_SERVER) export and an `nfs` PV; a
//! claim naming a missing PV gets it created; a class mismatch stays unbound with a Warning;
//! Delete removes directory and PV, Retain keeps them; 50 claims at once are provisioned and
//! bound once each; a crash halfway through 50 claims leaves no duplicate and no orphan
//! directory; two controllers racing create each volume once; a node agent (with only its own
//! rights) never removes a directory whose volume or claim the API still has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_e2e::wait_for;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube_sim::{KubeSim, SimConfig};
use provisioner::{AgentConfig, Config, ControllerConfig, KubeAccess, NfsConfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Longest wait for any single condition; each is expected within a few seconds.
const TIMEOUT: Duration = Duration::from_secs(30);
const NFS_SERVER: &str = "nfs.example.internal";
const NFS_EXPORT: &str = "/srv/nfs";

struct Env {
    sim: KubeSim,
    ns: String,
    hostpath: tempfile::TempDir,
    export: tempfile::TempDir,
}

impl Env {
    async fn start(ns: &str) -> Env {
        Env::start_with(ns, SimConfig::default().nodes(2).pv_binder(true)).await
    }

    async fn start_with(ns: &str, sim: SimConfig) -> Env {
        let sim = KubeSim::start(sim).await.expect("kube-sim starts");
        let client = sim.client();
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let classes: Api<StorageClass> = Api::all(client.clone());
        let shipped = include_str!("../crates/provisioner/manifests/storageclasses.yaml");
        for doc in shipped.split("\n---\n") {
            let sc: StorageClass = serde_yaml::from_str(doc).expect("shipped StorageClass parses");
            classes.create(&PostParams::default(), &sc).await.unwrap();
        }
        let retain: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": "nfs-retain"},
            "provisioner": "ballast.dev/nfs",
            "reclaimPolicy": "Retain",
        }))
        .unwrap();
        classes
            .create(&PostParams::default(), &retain)
            .await
            .unwrap();
        Env {
            sim,
            ns: ns.into(),
            hostpath: tempfile::tempdir().unwrap(),
            export: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts the provisioner in-process: controller plus the hostPath agent of node-1.
    async fn provisioner(
        &self,
        identity: &str,
        shutdown: &CancellationToken,
    ) -> provisioner::Running {
        self.provisioner_with(identity, shutdown, None).await
    }

    async fn provisioner_with(
        &self,
        identity: &str,
        shutdown: &CancellationToken,
        control_endpoint: Option<String>,
    ) -> provisioner::Running {
        let mut config = self.config(identity, "provisioner");
        config.control_endpoint = control_endpoint;
        provisioner::start(config, shutdown.clone())
            .await
            .expect("provisioner starts")
    }

    /// Controller (holding `lease`) serving hostPath and NFS on the fake export, plus the
    /// hostPath agent of node-1, in one process.
    fn config(&self, identity: &str, lease: &str) -> Config {
        let mut lease = ballast_runtime::leader::LeaseConfig::new(&self.ns, lease, identity);
        lease.lease_duration = Duration::from_secs(2);
        lease.renew_every = Duration::from_millis(300);
        Config {
            controller: Some(ControllerConfig {
                lease: Some(lease),
                hostpath: Some(self.hostpath.path().to_path_buf()),
                nfs: Some(NfsConfig {
                    server: NFS_SERVER.into(),
                    export_path: PathBuf::from(NFS_EXPORT),
                    mount: self.export.path().to_path_buf(),
                }),
            }),
            agent: Some(AgentConfig {
                node_name: "node-1".into(),
                hostpath_base: self.hostpath.path().to_path_buf(),
            }),
            namespace: self.ns.clone(),
            control_endpoint: None,
            control_client: Default::default(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            kube: KubeAccess::Client(self.sim.client()),
            identity: identity.into(),
            resync: Duration::from_secs(2),
        }
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.sim.client(), &self.ns)
    }

    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.sim.client())
    }

    async fn create_claim(
        &self,
        name: &str,
        class: &str,
        extra: serde_json::Value,
    ) -> PersistentVolumeClaim {
        let mut claim = json!({
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "storageClassName": class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        });
        merge(&mut claim, extra);
        let claim: PersistentVolumeClaim = serde_json::from_value(claim).unwrap();
        self.claims()
            .create(&PostParams::default(), &claim)
            .await
            .expect("claim created")
    }

    async fn bound(&self, name: &str) -> (PersistentVolumeClaim, PersistentVolume) {
        wait_for(&format!("claim {name} Bound"), TIMEOUT, || async {
            let c = self.claims().get(name).await.ok()?;
            let phase = c.status.as_ref()?.phase.clone()?;
            let volume = c.spec.as_ref()?.volume_name.clone()?;
            let pv = self.volumes().get(&volume).await.ok()?;
            let pv_phase = pv.status.as_ref()?.phase.clone()?;
            (phase == "Bound" && pv_phase == "Bound").then_some((c, pv))
        })
        .await
    }

    async fn selected_node_removed(&self, name: &str) {
        wait_for(
            &format!("selected-node removed from {name}"),
            TIMEOUT,
            || async {
                let c = self.claims().get(name).await.ok()?;
                (!c.metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("volume.kubernetes.io/selected-node"))
                .then_some(())
            },
        )
        .await
    }

    /// The free bytes `node`'s agent reports, once it has.
    async fn reported_free(&self, node: &str) -> u64 {
        let leases: Api<Lease> = Api::namespaced(self.sim.client(), &self.ns);
        wait_for(&format!("{node}'s capacity report"), TIMEOUT, || async {
            let lease = leases.get_opt(&format!("hostpath-{node}")).await.ok()??;
            lease.metadata.annotations?["ballast.dev/hostpath-free-bytes"]
                .parse()
                .ok()
        })
        .await
    }

    async fn events_for(&self, name: &str) -> Vec<(String, String, String)> {
        let events = Api::<Event>::namespaced(self.sim.client(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        events
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect()
    }
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn dirs(base: &Path) -> BTreeSet<String> {
    std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn pinned_node(pv: &PersistentVolume) -> Option<String> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let expr = terms.first()?.match_expressions.as_ref()?.first()?;
    Some(format!(
        "{} {} {:?}",
        expr.key,
        expr.operator,
        expr.values.as_ref()?
    ))
}

#[tokio::test]
async fn hostpath_claim_gets_a_directory_on_its_node_and_delete_removes_it() {
    let env = Env::start("prov-hostpath").await;
    let shutdown = CancellationToken::new();
    let running = env.provisioner("p1", &shutdown).await;

    // WaitForFirstConsumer: nothing happens until the scheduler has picked a node.
    env.create_claim("data", "hostpath", json!({})).await;
    // The scheduler's annotation, as kube-scheduler writes it for a pod using the claim.
    let claim = env
        .create_claim(
            "web",
            "hostpath",
            json!({"metadata": {"annotations": {
            "volume.kubernetes.io/selected-node": "node-1"}}}),
        )
        .await;
    let (claim_now, pv) = env.bound("web").await;
    let uid = claim.metadata.uid.clone().unwrap();
    let dir = format!("pvc-{uid}_prov-hostpath_web");
    assert_eq!(
        pv.metadata.name.as_deref(),
        Some(format!("pvc-{uid}").as_str())
    );
    // The agent creates the directory as soon as it sees the volume labelled for its node.
    wait_for(&format!("directory {dir}"), TIMEOUT, || async {
        env.hostpath.path().join(&dir).is_dir().then_some(())
    })
    .await;
    assert_eq!(
        pv.metadata.labels.clone().unwrap()["ballast.dev/hostpath-node"],
        "node-1",
        "labelled for node-1's agent"
    );
    let spec = pv.spec.clone().unwrap();
    assert_eq!(
        spec.host_path.unwrap().path,
        env.hostpath.path().join(&dir).to_string_lossy()
    );
    assert_eq!(
        pinned_node(&pv).as_deref(),
        Some("kubernetes.io/hostname In [\"node-1\"]")
    );
    assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(
        claim_now.status.unwrap().capacity.unwrap()["storage"].0,
        "1Mi",
        "claim status shows the capacity"
    );
    let events = env.events_for("web").await;
    assert!(
        events
            .iter()
            .any(|(t, r, _)| t == "Normal" && r == "Provisioning"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(_, r, m)| r == "ProvisioningSucceeded" && m.contains(&format!("pvc-{uid}"))),
        "{events:?}"
    );
    let waiting = env.claims().get("data").await.unwrap();
    assert_ne!(
        waiting.status.and_then(|s| s.phase).as_deref(),
        Some("Bound")
    );
    assert!(
        waiting.spec.unwrap().volume_name.is_none(),
        "WaitForFirstConsumer claim left alone"
    );

    // The agent reports its free space in a Lease of its own, which is how the controller
    // places hostPath volumes; the Node is never written.
    let free = env.reported_free("node-1").await;
    assert!(free > 0);
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(env.sim.client())
        .get("node-1")
        .await
        .unwrap();
    assert!(
        !node
            .metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .any(|k| k.starts_with("ballast.dev/")),
        "no annotation of ours on the Node"
    );

    // Immediate binding: the provisioner picks a Ready node whose agent reports enough space;
    // only node-1 runs an agent here.
    let immediate: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "hostpath-now"},
        "provisioner": "ballast.dev/hostpath",
        "volumeBindingMode": "Immediate",
    }))
    .unwrap();
    Api::<StorageClass>::all(env.sim.client())
        .create(&PostParams::default(), &immediate)
        .await
        .unwrap();
    env.create_claim("scratch", "hostpath-now", json!({})).await;
    let (_, scratch_pv) = env.bound("scratch").await;
    assert_eq!(
        pinned_node(&scratch_pv).as_deref(),
        Some("kubernetes.io/hostname In [\"node-1\"]")
    );

    // Reclaim policy Delete: deleting the claim removes the directory and the PV.
    env.claims()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let pv_name = pv.metadata.name.clone().unwrap();
    wait_for("PV and directory removed", TIMEOUT, || async {
        let gone = env.volumes().get_opt(&pv_name).await.unwrap().is_none();
        (gone && !env.hostpath.path().join(&dir).exists()).then_some(())
    })
    .await;

    // A claim selected to a node short of space fails, the event says why, and the selected node
    // is removed so the scheduler can pick another.
    env.create_claim(
        "huge",
        "hostpath",
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}},
               "spec": {"resources": {"requests": {"storage": "1Ei"}}}}),
    )
    .await;
    let message = wait_for("ProvisioningFailed for lack of space", TIMEOUT, || async {
        env.events_for("huge")
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == "ProvisioningFailed")
            .map(|(_, _, m)| m)
    })
    .await;
    assert!(message.contains("node \"node-1\" has only"), "{message}");
    assert!(message.contains("but the claim requests 1Ei"), "{message}");
    env.selected_node_removed("huge").await;

    let admin = running.admin_addr;
    let readyz = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200, "ready once the caches have synced");
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name| {
        ballast_runtime::metrics::sample(&metrics, name, &[("class", "hostpath")]).unwrap_or(0.0)
    };
    assert!(
        sample("provisioner_volumes_provisioned_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        sample("provisioner_volumes_deleted_total") >= 1.0,
        "{metrics}"
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn nfs_claims_get_subdirectories_named_pvs_are_created_and_retain_keeps_data() {
    let env = Env::start("prov-nfs").await;
    let shutdown = CancellationToken::new();
    let running = env.provisioner("p1", &shutdown).await;

    let claim = env.create_claim("shared", "nfs", json!({})).await;
    let uid = claim.metadata.uid.clone().unwrap();
    let (_, pv) = env.bound("shared").await;
    let dir = format!("pvc-{uid}_prov-nfs_shared");
    assert!(
        env.export.path().join(&dir).is_dir(),
        "subdirectory under the export"
    );
    let nfs = pv.spec.clone().unwrap().nfs.expect("nfs source");
    assert_eq!(nfs.server, NFS_SERVER);
    assert_eq!(nfs.path, format!("{NFS_EXPORT}/{dir}"));
    assert!(pv.spec.unwrap().node_affinity.is_none());

    // volumeName of a PV that does not exist: created with that name, pre-bound, and bound.
    env.create_claim("named", "nfs", json!({"spec": {"volumeName": "team-data"}}))
        .await;
    let (claim, pv) = env.bound("named").await;
    assert_eq!(pv.metadata.name.as_deref(), Some("team-data"));
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("named")
    );
    assert_eq!(
        claim.spec.unwrap().volume_name.as_deref(),
        Some("team-data")
    );
    assert!(env.export.path().join("team-data_prov-nfs_named").is_dir());

    // Retain: the claim goes, the PV is Released and the data stays.
    env.create_claim("keep", "nfs-retain", json!({})).await;
    let (keep, keep_pv) = env.bound("keep").await;
    let keep_dir = format!("pvc-{}_prov-nfs_keep", keep.metadata.uid.unwrap());
    std::fs::write(env.export.path().join(&keep_dir).join("precious"), b"data").unwrap();
    env.claims()
        .delete("keep", &DeleteParams::default())
        .await
        .unwrap();
    let keep_name = keep_pv.metadata.name.unwrap();
    wait_for("retained PV Released", TIMEOUT, || async {
        let pv = env.volumes().get(&keep_name).await.ok()?;
        (pv.status?.phase.as_deref() == Some("Released")).then_some(())
    })
    .await;
    assert!(
        env.export.path().join(&keep_dir).join("precious").is_file(),
        "retained data kept"
    );

    // Delete: PV and subdirectory gone.
    env.claims()
        .delete("shared", &DeleteParams::default())
        .await
        .unwrap();
    let pv_name = format!("pvc-{uid}");
    wait_for("NFS PV and subdirectory removed", TIMEOUT, || async {
        let gone = env.volumes().get_opt(&pv_name).await.unwrap().is_none();
        (gone && !env.export.path().join(&dir).exists()).then_some(())
    })
    .await;

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn class_mismatch_stays_unbound_with_a_warning_event() {
    let env = Env::start("prov-mismatch").await;
    let shutdown = CancellationToken::new();
    let running = env.provisioner("p1", &shutdown).await;

    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": "static-local"},
        "spec": {
            "storageClassName": "hostpath",
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/mnt/static"},
        },
    }))
    .unwrap();
    env.volumes()
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    env.create_claim(
        "wrong",
        "nfs",
        json!({"spec": {"volumeName": "static-local"}}),
    )
    .await;

    let expected = "storage class mismatch: claim \"prov-mismatch/wrong\" requests class \"nfs\" but \
                    PersistentVolume \"static-local\" has class \"hostpath\"; the claim stays unbound \
                    until they match";
    wait_for("StorageClassMismatch warning", TIMEOUT, || async {
        env.events_for("wrong")
            .await
            .into_iter()
            .any(|(t, r, m)| t == "Warning" && r == "StorageClassMismatch" && m == expected)
            .then_some(())
    })
    .await;
    let claim = wait_for("binding-problem annotation", TIMEOUT, || async {
        let c = env.claims().get("wrong").await.ok()?;
        c.metadata
            .annotations
            .as_ref()?
            .contains_key("ballast.dev/binding-problem")
            .then_some(c)
    })
    .await;
    assert_eq!(
        claim.metadata.annotations.unwrap()["ballast.dev/binding-problem"],
        expected
    );
    assert_ne!(claim.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let pv = env.volumes().get("static-local").await.unwrap();
    assert!(
        pv.spec.unwrap().claim_ref.is_none(),
        "the PV was not touched"
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn crash_halfway_through_fifty_claims_binds_each_once_and_leaves_no_orphan_directory() {
    const CLAIMS: usize = 50;
    // With kube-sim's PV binder on, standing in for Kubernetes' own PV controller: it races the
    // provisioner on the same bind writes, and resourceVersion preconditions keep them apart.
    let env = Env::start_with(
        "prov-restart",
        SimConfig::default().nodes(2).pv_binder(true),
    )
    .await;
    let first_stop = CancellationToken::new();
    let started = Instant::now();
    let first = env.provisioner("p1", &first_stop).await;
    for i in 0..CLAIMS {
        env.create_claim(&format!("c{i:02}"), "nfs", json!({}))
            .await;
    }
    wait_for("some claims bound before the crash", TIMEOUT, || async {
        let list = env.claims().list(&ListParams::default()).await.ok()?;
        let bound = list
            .items
            .iter()
            .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            .count();
        (bound >= CLAIMS / 2).then_some(())
    })
    .await;
    // A crash of the work, not a graceful stop: dropping `Running` aborts the watches and the
    // reconcile loop wherever they are (between a mkdir and a PV create, or mid-bind); the
    // election, stopped with it, hands the Lease over at once.
    drop(first);
    first_stop.cancel();
    let bound_at_crash = env
        .claims()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .count();

    // What a crash between mkdir and PV create leaves for a claim deleted while we were down.
    let stale = "pvc-0badc0de-0000-4000-8000-000000000000_prov-restart_deleted-meanwhile";
    std::fs::create_dir(env.export.path().join(stale)).unwrap();
    // Left there a while ago: fresh unknown directories are given a minute before removal.
    std::fs::File::open(env.export.path().join(stale))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
        .unwrap();

    let shutdown = CancellationToken::new();
    let second = env.provisioner("p2", &shutdown).await;
    for i in 0..CLAIMS {
        env.bound(&format!("c{i:02}")).await;
    }
    let all_bound = started.elapsed();
    // Let the new leader finish a sweep after the last bind before looking at the directories.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let claims = env
        .claims()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let volumes = env
        .volumes()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(claims.len(), CLAIMS);
    assert_eq!(volumes.len(), CLAIMS, "one PV per claim, no duplicate");
    let mut expected_dirs = BTreeSet::new();
    for c in &claims {
        let uid = c.metadata.uid.clone().unwrap();
        let name = c.metadata.name.clone().unwrap();
        let volume = c.spec.as_ref().unwrap().volume_name.clone().unwrap();
        assert_eq!(
            volume,
            format!("pvc-{uid}"),
            "claim {name} bound to its own volume"
        );
        let pv = volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
            .unwrap();
        let claim_ref = pv.spec.as_ref().unwrap().claim_ref.clone().unwrap();
        assert_eq!(
            claim_ref.uid.as_deref(),
            Some(uid.as_str()),
            "PV {volume} bound to {name} once"
        );
        expected_dirs.insert(format!("{volume}_prov-restart_{name}"));
    }
    assert_eq!(
        dirs(env.export.path()),
        expected_dirs,
        "exactly one directory per volume, no orphan"
    );
    eprintln!(
        "claims bound at the crash: {bound_at_crash}/{CLAIMS}; all bound after {all_bound:?}"
    );

    shutdown.cancel();
    second.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn hostpath_on_a_node_the_control_service_reports_notready_is_rescheduled() {
    use ballast_control::{InterceptionState, MemoryState, NodeHealth, NodeHealthSnapshot};
    let env = Env::start("prov-control").await;
    let shutdown = CancellationToken::new();
    // The control service says node-1 is NotReady, although its Node object is Ready.
    let state = std::sync::Arc::new(MemoryState::new(InterceptionState::default()));
    let health = |name: &str, ready: bool| NodeHealth {
        name: name.into(),
        ready,
        reason: if ready {
            "KubeletReady"
        } else {
            "NodeStatusUnknown"
        }
        .into(),
        ..Default::default()
    };
    state.set_nodes(NodeHealthSnapshot::synced([
        health("node-1", false),
        health("node-2", true),
    ]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(ballast_control::serve(
        listener,
        state.clone(),
        ballast_control::ServerOptions::local(),
        shutdown.clone(),
    ));
    let running = env.provisioner_with("p1", &shutdown, Some(endpoint)).await;

    env.create_claim(
        "db",
        "hostpath",
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}}}),
    )
    .await;
    let message = wait_for(
        "ProvisioningFailed naming the NotReady node",
        TIMEOUT,
        || async {
            env.events_for("db")
                .await
                .into_iter()
                .find(|(t, r, _)| t == "Warning" && r == "ProvisioningFailed")
                .map(|(_, _, m)| m)
        },
    )
    .await;
    assert_eq!(
        message,
        "cannot provision on the selected node: node \"node-1\" is NotReady; hostPath volumes are \
         never placed on a NotReady node"
    );
    assert!(
        dirs(env.hostpath.path()).is_empty(),
        "no directory on the NotReady node"
    );
    env.selected_node_removed("db").await;

    // The node recovers (the control service's watch brings the news); playing the scheduler,
    // select it again whenever the selection is gone, until the claim is served.
    state.upsert_node(health("node-1", true));
    let patch =
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}}});
    wait_for("claim db Bound on the recovered node", TIMEOUT, || async {
        let c = env.claims().get("db").await.ok()?;
        if c.status.as_ref()?.phase.as_deref() == Some("Bound") {
            return Some(());
        }
        let selected = c
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("volume.kubernetes.io/selected-node");
        if !selected {
            env.claims()
                .patch(
                    "db",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .ok()?;
        }
        None
    })
    .await;
    let (_, pv) = env.bound("db").await;
    assert_eq!(
        pinned_node(&pv).as_deref(),
        Some("kubernetes.io/hostname In [\"node-1\"]")
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    server.await.unwrap().expect("control server stops cleanly");
}

#[tokio::test]
async fn nfs_deployment_and_hostpath_daemonset_side_by_side_each_serve_their_own_claims() {
    let env = Env::start("prov-split").await;
    let shutdown = CancellationToken::new();
    // As packaged: an NFS Deployment (no node name) and a hostPath DaemonSet (no NFS), each
    // electing its own leader.
    let mut nfs_only = env.config("nfs-0", "provisioner-nfs");
    nfs_only.agent = None;
    nfs_only.controller.as_mut().unwrap().hostpath = None;
    let mut hostpath_only = env.config("hostpath-node-1", "provisioner-hostpath");
    hostpath_only.controller.as_mut().unwrap().nfs = None;
    let nfs = provisioner::start(nfs_only, shutdown.clone())
        .await
        .unwrap();
    let hostpath = provisioner::start(hostpath_only, shutdown.clone())
        .await
        .unwrap();

    // The hostPath agent reports node-1's free space first, as a running DaemonSet pod has by
    // the time a consumer lands there; a claim selected onto a node with no report yet is
    // (rightly) rescheduled with a ProvisioningFailed, which this scenario is not about.
    env.reported_free("node-1").await;
    env.create_claim("files", "nfs", json!({})).await;
    env.create_claim(
        "cache",
        "hostpath",
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}}}),
    )
    .await;
    let (_, files_pv) = env.bound("files").await;
    let (_, cache_pv) = env.bound("cache").await;
    assert!(files_pv.spec.unwrap().nfs.is_some());
    assert!(cache_pv.spec.unwrap().host_path.is_some());
    for claim in ["files", "cache"] {
        let events = env.events_for(claim).await;
        let warnings: Vec<_> = events.iter().filter(|(t, _, _)| t == "Warning").collect();
        assert!(warnings.is_empty(), "{claim}: {warnings:?}");
        let succeeded = events
            .iter()
            .filter(|(_, r, _)| r == "ProvisioningSucceeded")
            .count();
        assert_eq!(succeeded, 1, "{claim} provisioned once: {events:?}");
    }

    shutdown.cancel();
    nfs.wait().await.expect("clean shutdown");
    hostpath.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn two_controllers_racing_create_each_volume_once() {
    const STATIC: usize = 15;
    const CLAIMS: usize = 25;
    let env = Env::start("prov-race").await;
    // Existing volumes an administrator created: the PV controller binds claims to them first.
    for i in 0..STATIC {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("static-{i:02}")},
            "spec": {
                "storageClassName": "nfs",
                "capacity": {"storage": "1Mi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "nfs": {"server": NFS_SERVER, "path": format!("/srv/static/{i}")},
            },
        }))
        .unwrap();
        env.volumes()
            .create(&PostParams::default(), &pv)
            .await
            .unwrap();
    }
    wait_for("static volumes Available", TIMEOUT, || async {
        let list = env.volumes().list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .all(|v| v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available"))
            .then_some(())
    })
    .await;
    // Two controllers that both believe they lead (different Leases): both provision every
    // claim handed over; deterministic names and AlreadyExists keep each volume single.
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    for (identity, lease) in [("a", "race-a"), ("b", "race-b")] {
        let mut config = env.config(identity, lease);
        config.agent = None;
        running.push(provisioner::start(config, shutdown.clone()).await.unwrap());
    }
    for i in 0..CLAIMS {
        env.create_claim(&format!("c{i:02}"), "nfs", json!({}))
            .await;
    }
    for i in 0..CLAIMS {
        env.bound(&format!("c{i:02}")).await;
    }
    let claims = env
        .claims()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let volumes = env
        .volumes()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let mut used = BTreeSet::new();
    for c in &claims {
        let volume = c.spec.as_ref().unwrap().volume_name.clone().unwrap();
        assert!(
            used.insert(volume.clone()),
            "volume {volume} bound to two claims"
        );
        let pv = volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
            .unwrap();
        let r = pv.spec.as_ref().unwrap().claim_ref.clone().unwrap();
        assert_eq!(r.uid, c.metadata.uid, "{volume} names its claim");
    }
    let statics_bound = used.iter().filter(|v| v.starts_with("static-")).count();
    eprintln!("claims bound to existing volumes: {statics_bound}/{STATIC}");
    assert!(
        statics_bound > 0,
        "existing volumes are preferred to new ones"
    );
    let provisioned: Vec<&PersistentVolume> = volumes
        .iter()
        .filter(|v| !v.metadata.name.as_deref().unwrap().starts_with("static-"))
        .collect();
    assert_eq!(
        provisioned.len(),
        CLAIMS - statics_bound,
        "one volume per claim handed over, none twice"
    );
    for c in &claims {
        let name = c.metadata.name.clone().unwrap();
        let volume = c.spec.as_ref().unwrap().volume_name.clone().unwrap();
        let succeeded = env
            .events_for(&name)
            .await
            .into_iter()
            .filter(|(_, r, _)| r == "ProvisioningSucceeded")
            .count();
        let expected = usize::from(!volume.starts_with("static-"));
        assert_eq!(
            succeeded, expected,
            "{name}: ProvisioningSucceeded once per created volume"
        );
    }
    // Provisioned volumes each have their directory, and nothing else is left in the export.
    let expected: BTreeSet<String> = provisioned
        .iter()
        .filter_map(|v| {
            v.metadata
                .annotations
                .as_ref()?
                .get("ballast.dev/directory")
                .cloned()
        })
        .collect();
    assert_eq!(dirs(env.export.path()), expected);

    // hostPath too: with node-1's agent reporting, both controllers place and create each
    // volume once, on the same node.
    let mut agent = env.config("agent-node-1", "unused");
    agent.controller = None;
    running.push(provisioner::start(agent, shutdown.clone()).await.unwrap());
    env.reported_free("node-1").await;
    let selected =
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}}});
    for i in 0..5 {
        env.create_claim(&format!("h{i}"), "hostpath", selected.clone())
            .await;
    }
    for i in 0..5 {
        let name = format!("h{i}");
        let (claim, pv) = env.bound(&name).await;
        assert_eq!(
            pv.metadata.name,
            Some(format!("pvc-{}", claim.metadata.uid.unwrap()))
        );
        let succeeded = env
            .events_for(&name)
            .await
            .into_iter()
            .filter(|(_, r, _)| r == "ProvisioningSucceeded")
            .count();
        assert_eq!(succeeded, 1, "{name}: one volume created");
    }
    let hostpath_volumes = env
        .volumes()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|v| v.spec.as_ref().is_some_and(|s| s.host_path.is_some()))
        .count();
    assert_eq!(hostpath_volumes, 5);

    shutdown.cancel();
    for r in running {
        r.wait().await.expect("clean shutdown");
    }
}

/// A client with exactly the controller's RBAC, as its ServiceAccount.
async fn provisioner_client(sim: &KubeSim) -> kube::Client {
    client_with(
        sim,
        "system:serviceaccount:ballast-system:provisioner",
        provisioner::CONTROLLER_RBAC,
    )
    .await
}

/// A client for `user` with exactly `rbac`.
async fn client_with(sim: &KubeSim, user: &str, rbac: &[(&str, &str, &[&str])]) -> kube::Client {
    for (group, resource, verbs) in rbac {
        for verb in *verbs {
            sim.allow(user, verb, group, resource);
        }
    }
    sim.client_as(user, &["system:serviceaccounts", "system:authenticated"])
        .await
}

#[tokio::test]
async fn fifty_claims_at_once_are_provisioned_once_each_and_bound_by_the_pv_controller() {
    const CLAIMS: usize = 50;
    let env = Env::start("prov-fifty").await;
    // A class of its own, so the metric counts this scenario's volumes only.
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "nfs-fifty"}, "provisioner": "ballast.dev/nfs",
        "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}))
    .unwrap();
    Api::<StorageClass>::all(env.sim.client())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    // Only the rights the manifests grant: no write to a claim's status is even possible.
    let mut config = env.config("p1", "provisioner");
    config.agent = None;
    config.kube = KubeAccess::Client(provisioner_client(&env.sim).await);
    let running = provisioner::start(config, shutdown.clone()).await.unwrap();

    let names: Vec<String> = (0..CLAIMS).map(|i| format!("c{i:02}")).collect();
    futures::future::join_all(
        names
            .iter()
            .map(|name| env.create_claim(name, "nfs-fifty", json!({}))),
    )
    .await;
    for i in 0..CLAIMS {
        let (claim, pv) = env.bound(&format!("c{i:02}")).await;
        let a = claim.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            a.get("pv.kubernetes.io/bind-completed").map(String::as_str),
            Some("yes"),
            "bound by the PV controller"
        );
        assert_eq!(
            a.get("pv.kubernetes.io/bound-by-controller")
                .map(String::as_str),
            Some("yes"),
            "volumeName set by the PV controller"
        );
        assert_eq!(
            pv.metadata.annotations.unwrap()["pv.kubernetes.io/provisioned-by"],
            "ballast.dev/nfs"
        );
        assert_eq!(
            pv.spec.unwrap().claim_ref.unwrap().uid,
            claim.metadata.uid,
            "created pre-bound"
        );
    }
    let events = Api::<Event>::namespaced(env.sim.client(), &env.ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let count = |reason: &str| {
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.count.unwrap_or(1))
            .sum::<i32>()
    };
    assert_eq!(count("ProvisioningSucceeded"), CLAIMS as i32);
    assert_eq!(
        count("ProvisioningFailed"),
        0,
        "no failure on healthy claims"
    );
    let succeeded_claims: BTreeSet<&str> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ProvisioningSucceeded"))
        .filter_map(|e| e.involved_object.name.as_deref())
        .collect();
    assert_eq!(succeeded_claims.len(), CLAIMS, "one per claim");
    assert_eq!(
        env.volumes()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        CLAIMS
    );
    let admin = running.admin_addr;
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        ballast_runtime::metrics::sample(
            &metrics,
            "provisioner_volumes_provisioned_total",
            &[("class", "nfs-fifty")]
        ),
        Some(CLAIMS as f64),
        "{metrics}"
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn hostpath_claim_on_a_node_without_an_agent_is_rescheduled_to_one_with_an_agent() {
    let env = Env::start_with(
        "prov-resched",
        SimConfig::default()
            .nodes(2)
            .pv_binder(true)
            .scheduler(true)
            .kubelet(true),
    )
    .await;
    let shutdown = CancellationToken::new();
    // The agent runs on node-1 only; node-2 has none.
    let running = env.provisioner("p1", &shutdown).await;
    // The scheduler had picked node-2 for the claim's pod.
    env.create_claim(
        "logs",
        "hostpath",
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-2"}}}),
    )
    .await;
    let message = wait_for("ProvisioningFailed for node-2", TIMEOUT, || async {
        env.events_for("logs")
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == "ProvisioningFailed")
            .map(|(_, _, m)| m)
    })
    .await;
    assert_eq!(
        message,
        "cannot provision on the selected node: node \"node-2\" has no provisioner agent \
         reporting free space (is the hostpath DaemonSet running there?)"
    );
    env.selected_node_removed("logs").await;
    assert!(
        env.claims()
            .get("logs")
            .await
            .unwrap()
            .spec
            .unwrap()
            .volume_name
            .is_none()
    );

    // The scheduler picks again for the pod (which asks for node-1): provisioned and bound there.
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "writer", "namespace": env.ns},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "node-1"},
                 "containers": [{"name": "app", "image": "registry.example/app:1"}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "logs"}}]}}))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(env.sim.client(), &env.ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let (claim, pv) = env.bound("logs").await;
    assert_eq!(
        claim.metadata.annotations.unwrap()["volume.kubernetes.io/selected-node"],
        "node-1"
    );
    assert_eq!(
        pinned_node(&pv).as_deref(),
        Some("kubernetes.io/hostname In [\"node-1\"]")
    );
    let events = env.events_for("logs").await;
    assert!(
        events.iter().any(|(_, r, m)| r == "ProvisioningSucceeded"
            && m.contains(pv.metadata.name.as_deref().unwrap())),
        "{events:?}"
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_volume_shown_released_while_its_claim_holds_it_keeps_its_data() {
    let env = Env::start("prov-held").await;
    let shutdown = CancellationToken::new();
    let running = env.provisioner("p1", &shutdown).await;
    let claim = env.create_claim("held", "nfs", json!({})).await;
    let (_, pv) = env.bound("held").await;
    let dir = format!("pvc-{}_prov-held_held", claim.metadata.uid.unwrap());
    std::fs::write(env.export.path().join(&dir).join("precious"), b"data").unwrap();

    // Someone marks the volume Released although its claim is still bound to it.
    let name = pv.metadata.name.clone().unwrap();
    let mut released = env.volumes().get(&name).await.unwrap();
    released.status.as_mut().unwrap().phase = Some("Released".into());
    env.volumes()
        .replace_status(&name, &PostParams::default(), &released)
        .await
        .unwrap();
    // The PV controller puts it right; the provisioner, which saw Released, deleted nothing.
    wait_for("the volume Bound again", TIMEOUT, || async {
        let pv = env.volumes().get(&name).await.ok()?;
        (pv.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
    assert!(
        env.export.path().join(&dir).join("precious").is_file(),
        "data of a volume its claim holds is never removed"
    );
    assert!(env.volumes().get_opt(&name).await.unwrap().is_some());

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_agent_never_removes_a_directory_whose_volume_or_claim_still_exists() {
    let env = Env::start("prov-agent").await;
    let shutdown = CancellationToken::new();
    // As packaged: the controller and node-1's agent in separate processes, each with only the
    // rights its ServiceAccount gets (the agent cannot write volumes, claims or Nodes).
    let mut controller = env.config("controller-0", "provisioner");
    controller.agent = None;
    controller.controller.as_mut().unwrap().nfs = None;
    controller.kube = KubeAccess::Client(provisioner_client(&env.sim).await);
    let mut agent = env.config("agent-node-1", "unused");
    agent.controller = None;
    agent.kube = KubeAccess::Client(
        client_with(
            &env.sim,
            "system:serviceaccount:ballast-hostpath:provisioner-agent",
            provisioner::AGENT_RBAC,
        )
        .await,
    );
    let controller = provisioner::start(controller, shutdown.clone())
        .await
        .unwrap();
    let agent = provisioner::start(agent, shutdown.clone()).await.unwrap();
    env.reported_free("node-1").await;

    let claim = env
        .create_claim(
            "kept",
            "hostpath",
            json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}}}),
        )
        .await;
    let (_, pv) = env.bound("kept").await;
    let pv_name = pv.metadata.name.clone().unwrap();
    let dir = env.hostpath.path().join(format!(
        "pvc-{}_prov-agent_kept",
        claim.metadata.uid.unwrap()
    ));
    wait_for("the agent creates the directory", TIMEOUT, || async {
        dir.is_dir().then_some(())
    })
    .await;
    std::fs::write(dir.join("precious"), b"data").unwrap();
    let survives = |why: &'static str| {
        let file = dir.join("precious");
        async move {
            // Two resyncs of the agent (2s each) and the events before them.
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(file.is_file(), "{why}: the data is still there");
        }
    };
    let patch = |labels: serde_json::Value| {
        let volumes = env.volumes();
        let name = pv_name.clone();
        async move {
            volumes
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"metadata": {"labels": labels}})),
                )
                .await
                .unwrap();
        }
    };

    // The volume leaves the agent's watch (its node label removed): gone from the agent's
    // cache, but the API still has it. The controller labels it again (as it labels volumes
    // made before agents watched by label), and the agent sees it back.
    patch(json!({"ballast.dev/hostpath-node": null})).await;
    wait_for(
        "the controller labels the volume again",
        TIMEOUT,
        || async {
            let pv = env.volumes().get(&pv_name).await.ok()?;
            (pv.metadata.labels?.get("ballast.dev/hostpath-node")? == "node-1").then_some(())
        },
    )
    .await;
    survives("the volume left the agent's cache but exists").await;

    // The volume really deleted (an administrator forcing it past its finalizer) while the
    // claim still exists.
    env.volumes()
        .delete(&pv_name, &DeleteParams::default())
        .await
        .unwrap();
    env.volumes()
        .patch(
            &pv_name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    wait_for("the volume gone", TIMEOUT, || async {
        env.volumes()
            .get_opt(&pv_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    survives("the claim still exists").await;

    // Once the claim is gone too (reclaim policy Delete), the agent removes the directory.
    env.claims()
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the directory removed", TIMEOUT, || async {
        let gone = !dir.exists();
        let volume_gone = env.volumes().get_opt(&pv_name).await.ok()?.is_none();
        (gone && volume_gone).then_some(())
    })
    .await;

    shutdown.cancel();
    controller.wait().await.expect("clean shutdown");
    agent.wait().await.expect("clean shutdown");
}

/// A standby replica has warm caches and reports ready, but writes nothing while another holds
/// the Lease; when the leader stops, its Lease is released once its work has ended and the
/// standby takes over. The leader serves hostPath only, so a pending NFS claim shows which
/// replica acts.
#[tokio::test]
async fn a_standby_controller_is_ready_but_writes_only_once_the_leader_has_stopped() {
    let env = Env::start("prov-standby").await;
    let leases: Api<Lease> = Api::namespaced(env.sim.client(), &env.ns);
    let holder = || async {
        leases
            .get_opt("provisioner")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };

    let leader_stop = CancellationToken::new();
    let mut config = env.config("p1", "provisioner");
    if let Some(c) = config.controller.as_mut() {
        c.nfs = None;
    }
    let leader = provisioner::start(config, leader_stop.clone())
        .await
        .expect("the leader starts");
    wait_for("p1 holds the Lease", TIMEOUT, || async {
        (holder().await.as_deref() == Some("p1")).then_some(())
    })
    .await;

    let shutdown = CancellationToken::new();
    let mut config = env.config("p2", "provisioner");
    config.agent = None;
    let standby = provisioner::start(config, shutdown.clone())
        .await
        .expect("the standby starts");
    let admin = standby.admin_addr;
    wait_for("the standby ready", TIMEOUT, || async {
        let r = reqwest::get(format!("http://{admin}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    env.create_claim("shared", "nfs", json!({})).await;
    // Longer than a resync (2s): the standby has passed over the claim at least once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let claim = env.claims().get("shared").await.unwrap();
    assert_eq!(
        claim.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "nobody provisions while the leader does not serve NFS"
    );
    assert!(
        env.volumes()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the standby wrote no volume"
    );
    assert_eq!(holder().await.as_deref(), Some("p1"));

    leader_stop.cancel();
    leader.wait().await.expect("the leader stops cleanly");
    assert_ne!(
        holder().await.as_deref(),
        Some("p1"),
        "the Lease is released when the leader's wait returns"
    );
    env.bound("shared").await;
    assert_eq!(holder().await.as_deref(), Some("p2"));

    shutdown.cancel();
    standby.wait().await.expect("the standby stops cleanly");
}
