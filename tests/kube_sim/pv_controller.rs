//! The PV controller as kube-controller-manager runs it, for claims of external provisioners,
//! checked against a real 1.36 control plane's answers (`tests/data/real-api/pvc-*.json`): the
//! claim is handed over with both storage-provisioner annotations and the pvc-protection
//! finalizer, `ExternalProvisioning` repeats in one Event whose count grows, a volume pre-bound
//! by the provisioner is bound by the controller (claim `volumeName`, status, binder annotations),
//! free volumes bind smallest first, WaitForFirstConsumer claims wait for a selected node, and a
//! claim in use by a pod is only deleted once the pod is gone. Every scenario runs unchanged on
//! kube-sim and on a real control plane (E2E_KUBECONFIG), where kube-controller-manager's own PV
//! controller answers; the classes and volumes carry the namespace's name and the harness removes
//! them.

use std::time::Duration;

use ballast_e2e::{SimConfig, TestEnv, wait_for};
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

/// Longest wait for one condition; the real PV controller retries on its 15s resync.
const TIMEOUT: Duration = Duration::from_secs(60);
const PV_CONTROLLER: &str = "persistentvolume-controller";

async fn start() -> TestEnv {
    TestEnv::start(SimConfig::default().pv_binder(true)).await
}

/// A StorageClass named after the test's namespace (classes are cluster-wide).
async fn class(env: &TestEnv, suffix: &str, provisioner: &str, mode: &str) -> String {
    let name = format!("{}-{suffix}", env.namespace);
    let sc: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"ballast.dev/e2e": "true"}},
        "provisioner": provisioner, "volumeBindingMode": mode, "reclaimPolicy": "Delete"}))
    .unwrap();
    Api::<StorageClass>::all(env.client.clone())
        .create(&PostParams::default(), &sc)
        .await
        .unwrap();
    name
}

async fn claim(env: &TestEnv, name: &str, class: &str, size: &str) -> PersistentVolumeClaim {
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": size}}}}))
    .unwrap();
    env.api::<PersistentVolumeClaim>()
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap()
}

async fn volume(env: &TestEnv, name: &str, class: &str, size: &str, extra: Value) -> String {
    let name = format!("{}-{name}", env.namespace);
    let mut pv = json!({
        "metadata": {"name": name, "labels": {"ballast.dev/e2e": "true"}},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class, "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": format!("/tmp/{name}")}}});
    for (k, v) in extra.as_object().into_iter().flatten() {
        for (kk, vv) in v.as_object().into_iter().flatten() {
            pv[k][kk] = vv.clone();
        }
    }
    let pv: PersistentVolume = serde_json::from_value(pv).unwrap();
    Api::<PersistentVolume>::all(env.client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    name
}

async fn events(env: &TestEnv, object: &str) -> Vec<Event> {
    env.api::<Event>()
        .list(&ListParams::default().fields(&format!("involvedObject.name={object}")))
        .await
        .unwrap()
        .items
}

fn phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn bound(env: &TestEnv, name: &str) -> PersistentVolumeClaim {
    let pvcs = env.api::<PersistentVolumeClaim>();
    wait_for(&format!("claim {name} Bound"), TIMEOUT, || async {
        let c = pvcs.get(name).await.ok()?;
        (phase(&c) == "Bound").then_some(c)
    })
    .await
}

#[tokio::test]
async fn pv_controller_hands_claims_to_an_external_provisioner_and_binds_its_pre_bound_volume() {
    let env = start().await;
    let provisioner = format!("e2e.ballast.dev/{}", env.namespace);
    let sc = class(&env, "ext", &provisioner, "Immediate").await;
    let created = claim(&env, "waiting", &sc, "1Gi").await;
    let pvcs = env.api::<PersistentVolumeClaim>();

    // As the real controller left it (tests/data/real-api/pvc-waiting-for-external-provisioner.json).
    let real: Value = serde_json::from_str(include_str!(
        "../data/real-api/pvc-waiting-for-external-provisioner.json"
    ))
    .unwrap();
    let handed = wait_for("both storage-provisioner annotations", TIMEOUT, || async {
        let c = pvcs.get("waiting").await.ok()?;
        let a = c.metadata.annotations.clone()?;
        (a.get("volume.kubernetes.io/storage-provisioner") == Some(&provisioner)
            && a.get("volume.beta.kubernetes.io/storage-provisioner") == Some(&provisioner))
        .then_some(c)
    })
    .await;
    assert_eq!(
        handed.finalizers(),
        real["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .as_slice(),
    );
    assert_eq!(phase(&handed), real["status"]["phase"]);
    assert!(handed.spec.as_ref().unwrap().volume_name.is_none());

    // One Event, repeated with a count (tests/data/real-api/pvc-external-provisioning-events.json).
    let real_events: Value = serde_json::from_str(include_str!(
        "../data/real-api/pvc-external-provisioning-events.json"
    ))
    .unwrap();
    let real_event = &real_events[0];
    let expected = real_event["message"]
        .as_str()
        .unwrap()
        .replace("ballast.dev/nfs", &provisioner);
    let event = wait_for("ExternalProvisioning repeated", TIMEOUT, || async {
        let evs = events(&env, "waiting").await;
        let mine: Vec<Event> = evs
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ExternalProvisioning"))
            .collect();
        assert!(mine.len() <= 1, "repeats fold into one Event: {mine:?}");
        mine.into_iter().find(|e| e.count.unwrap_or(0) >= 2)
    })
    .await;
    assert_eq!(event.message.as_deref(), Some(expected.as_str()));
    assert_eq!(event.type_.as_deref(), real_event["type"].as_str());
    assert_eq!(
        event.source.as_ref().and_then(|s| s.component.as_deref()),
        Some(PV_CONTROLLER)
    );
    assert_eq!(event.reporting_component.as_deref(), Some(PV_CONTROLLER));
    assert_eq!(
        event.involved_object.kind.as_deref(),
        Some("PersistentVolumeClaim")
    );
    assert_eq!(event.involved_object.uid, created.metadata.uid);

    // Play the external provisioner: a volume pre-bound to the claim (namespace, name, uid).
    let pv_name = volume(
        &env,
        "provisioned",
        &sc,
        "1Gi",
        json!({"metadata": {"annotations": {"pv.kubernetes.io/provisioned-by": provisioner}},
               "spec": {"claimRef": {"namespace": env.namespace, "name": "waiting",
                                     "uid": created.metadata.uid}}}),
    )
    .await;
    let c = bound(&env, "waiting").await;
    assert_eq!(
        c.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(pv_name.as_str())
    );
    assert_eq!(c.annotations()["pv.kubernetes.io/bind-completed"], "yes");
    assert_eq!(
        c.annotations()["pv.kubernetes.io/bound-by-controller"],
        "yes",
        "the controller set volumeName"
    );
    let status = c.status.unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "1Gi");
    assert_eq!(status.access_modes.unwrap(), vec!["ReadWriteOnce"]);
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    let pv = wait_for("the volume Bound", TIMEOUT, || async {
        let pv = pvs.get(&pv_name).await.ok()?;
        (pv.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(pv)
    })
    .await;
    assert!(
        !pv.annotations()
            .contains_key("pv.kubernetes.io/bound-by-controller"),
        "the provisioner, not the controller, chose this claim"
    );
    let claim_ref = pv.spec.unwrap().claim_ref.unwrap();
    assert_eq!(claim_ref.uid, created.metadata.uid);

    pvcs.delete("waiting", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the claim's volume Released", TIMEOUT, || async {
        let pv = pvs.get(&pv_name).await.ok()?;
        (pv.status.as_ref()?.phase.as_deref() == Some("Released")).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn pv_controller_binds_the_smallest_free_volume_and_never_a_volume_reserved_for_another_uid()
{
    let env = start().await;
    let sc = class(&env, "static", "kubernetes.io/no-provisioner", "Immediate").await;
    let big = volume(&env, "big", &sc, "5Gi", json!({})).await;
    let small = volume(&env, "small", &sc, "2Gi", json!({})).await;
    let tiny = volume(&env, "tiny", &sc, "1Gi", json!({})).await;
    // Reserved for an earlier claim of the same name (another uid): never this claim's.
    let stale = volume(
        &env,
        "stale",
        &sc,
        "2Gi",
        json!({"spec": {"claimRef": {"namespace": env.namespace, "name": "data",
               "uid": "00000000-0000-4000-8000-000000000000"}}}),
    )
    .await;
    claim(&env, "data", &sc, "1500Mi").await;
    let c = bound(&env, "data").await;
    assert_eq!(
        c.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(small.as_str()),
        "smallest volume that fits"
    );
    let pvs: Api<PersistentVolume> = Api::all(env.client.clone());
    let pv = pvs.get(&small).await.unwrap();
    assert_eq!(
        pv.annotations()["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    assert_eq!(pv.spec.unwrap().claim_ref.unwrap().uid, c.metadata.uid);
    wait_for("the stale reservation Released", TIMEOUT, || async {
        let pv = pvs.get(&stale).await.ok()?;
        (pv.status.as_ref()?.phase.as_deref() == Some("Released")).then_some(())
    })
    .await;
    // Too small, and not the smallest that fits: both stay free.
    for free in [&big, &tiny] {
        wait_for(
            &format!("{free} Available and unclaimed"),
            TIMEOUT,
            || async {
                let pv = pvs.get(free).await.ok()?;
                let unclaimed = pv.spec?.claim_ref.is_none();
                (unclaimed && pv.status?.phase.as_deref() == Some("Available")).then_some(())
            },
        )
        .await;
    }
    env.shutdown().await;
}

#[tokio::test]
async fn pv_controller_waits_for_a_selected_node_with_wait_for_first_consumer() {
    let env = start().await;
    let provisioner = format!("e2e.ballast.dev/{}", env.namespace);
    let sc = class(&env, "wffc", &provisioner, "WaitForFirstConsumer").await;
    claim(&env, "later", &sc, "1Gi").await;
    let event = wait_for("WaitForFirstConsumer event", TIMEOUT, || async {
        events(&env, "later")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("WaitForFirstConsumer"))
    })
    .await;
    assert_eq!(
        event.message.as_deref(),
        Some("waiting for first consumer to be created before binding")
    );
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    let pvcs = env.api::<PersistentVolumeClaim>();
    let c = pvcs.get("later").await.unwrap();
    assert!(
        !c.annotations()
            .contains_key("volume.kubernetes.io/storage-provisioner"),
        "not handed over before a node is selected"
    );
    // The scheduler's part: select a node (any name; the PV controller does not look at it).
    let patch =
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-x"}}});
    pvcs.patch(
        "later",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    wait_for("handed over once a node is selected", TIMEOUT, || async {
        let c = pvcs.get("later").await.ok()?;
        (c.annotations()
            .get("volume.kubernetes.io/storage-provisioner")
            == Some(&provisioner))
        .then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn a_claim_used_by_a_scheduled_pod_is_deleted_only_after_the_pod() {
    let env = TestEnv::start(SimConfig::default().nodes(1).pv_binder(true)).await;
    let node = env.node(1);
    let provisioner = format!("e2e.ballast.dev/{}", env.namespace);
    let sc = class(&env, "prot", &provisioner, "Immediate").await;
    claim(&env, "used", &sc, "1Gi").await;
    // Placed on a node already (only a scheduled pod holds its claims).
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "user"},
        "spec": {"nodeName": node,
                 "containers": [{"name": "app", "image": "registry.example/web:1.0"}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "used"}}]}}))
    .unwrap();
    let pods = env.api::<Pod>();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pvcs = env.api::<PersistentVolumeClaim>();
    pvcs.delete("used", &DeleteParams::default()).await.unwrap();
    // Still there a while later, terminating, held by the pvc-protection finalizer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = pvcs.get("used").await.expect("claim kept while in use");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.finalizers(), ["kubernetes.io/pvc-protection"]);
    pods.delete("user", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_for("the claim gone after its pod", TIMEOUT, || async {
        pvcs.get_opt("used").await.ok()?.is_none().then_some(())
    })
    .await;
    env.shutdown().await;
}
