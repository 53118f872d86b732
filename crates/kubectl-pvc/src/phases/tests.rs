use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass, VolumeAttachment};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::render;

const NS: &str = "default";
const NOW: &str = "2026-11-23T10:00:00Z";

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("fixture matches the Kubernetes schema")
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("RFC 3339 time")
}

fn mk_claim(
    name: &str,
    class: Option<&str>,
    volume: Option<&str>,
    phase: &str,
) -> PersistentVolumeClaim {
    from(json!({
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "creationTimestamp": "2026-11-23T09:00:00Z"},
        "spec": {"storageClassName": class, "volumeName": volume, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
        "status": {"phase": phase}
    }))
}

fn annotate(mut claim: PersistentVolumeClaim, key: &str, value: &str) -> PersistentVolumeClaim {
    claim
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value.to_owned());
    claim
}

fn mk_csi_pv(name: &str, driver: &str, claim: &str) -> PersistentVolume {
    from(json!({
        "metadata": {"name": name, "creationTimestamp": "2026-11-23T09:00:05Z",
                     "annotations": {"pv.kubernetes.io/provisioned-by": driver}},
        "spec": {"csi": {"driver": driver, "volumeHandle": format!("handle-{name}")},
                 "claimRef": {"name": claim, "namespace": NS, "uid": format!("uid-{claim}")},
                 "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}
    }))
}

fn mk_pv(name: &str, source: Value, claim: &str) -> PersistentVolume {
    let mut spec = json!({"claimRef": {"name": claim, "namespace": NS},
                          "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]});
    if let (Some(spec), Some(source)) = (spec.as_object_mut(), source.as_object()) {
        spec.extend(source.clone());
    }
    from(
        json!({"metadata": {"name": name, "creationTimestamp": "2026-11-23T09:00:05Z"}, "spec": spec}),
    )
}

fn mk_class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
    from(json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode}))
}

fn mk_driver(name: &str, attach_required: bool) -> CSIDriver {
    from(json!({"metadata": {"name": name}, "spec": {"attachRequired": attach_required}}))
}

fn mk_va(pv: &str, node: &str, attached: bool, error: Option<&str>) -> VolumeAttachment {
    from(json!({
        "metadata": {"name": format!("csi-{pv}-{node}")},
        "spec": {"attacher": "driver", "nodeName": node, "source": {"persistentVolumeName": pv}},
        "status": {"attached": attached, "attachError": error.map(|m| json!({"message": m}))}
    }))
}

#[derive(Clone, Copy)]
enum PodState {
    Running,
    Creating,
    Unscheduled,
    Succeeded,
}

fn mk_pod(name: &str, claim: &str, node: &str, state: PodState) -> Pod {
    let (phase, node, container_state, ready) = match state {
        PodState::Running => ("Running", Some(node), json!({"running": {}}), true),
        PodState::Creating => (
            "Pending",
            Some(node),
            json!({"waiting": {"reason": "ContainerCreating"}}),
            false,
        ),
        PodState::Unscheduled => ("Pending", None, json!({}), false),
        PodState::Succeeded => (
            "Succeeded",
            Some(node),
            json!({"terminated": {"exitCode": 0}}),
            false,
        ),
    };
    let statuses = match state {
        PodState::Unscheduled => json!([]),
        _ => json!([{"name": "app", "image": "app", "imageID": "", "ready": ready,
                     "restartCount": 0, "state": container_state}]),
    };
    from(json!({
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}")},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
        "status": {"phase": phase, "containerStatuses": statuses}
    }))
}

fn mk_event(kind: &str, name: &str, reason: &str, type_: &str, message: &str, at: &str) -> Event {
    from(json!({
        "metadata": {"name": format!("{name}.{reason}.{at}"), "namespace": NS},
        "involvedObject": {"kind": kind, "name": name, "namespace": NS, "uid": format!("uid-{name}")},
        "reason": reason, "type": type_, "message": message, "lastTimestamp": at
    }))
}

fn mk_set(claim: PersistentVolumeClaim) -> ObjectSet {
    ObjectSet {
        claim,
        volume: None,
        class: None,
        csi_driver: None,
        attachments: None,
        pods: Vec::new(),
        events: Vec::new(),
        now: ts(NOW),
    }
}

/// A bound CSI claim whose driver needs attach, with the pods given.
fn bound_csi(
    claim: &str,
    driver: &str,
    pods: Vec<Pod>,
    attachments: Vec<VolumeAttachment>,
) -> ObjectSet {
    let pv = format!("pvc-{claim}");
    let mut set = mk_set(mk_claim(claim, Some("ceph"), Some(&pv), "Bound"));
    set.volume = Some(Lookup::Found(mk_csi_pv(&pv, driver, claim)));
    set.class = Some(Lookup::Found(mk_class("ceph", driver, "Immediate")));
    set.csi_driver = Some(Lookup::Found(mk_driver(driver, true)));
    set.attachments = Some(Lookup::Found(attachments));
    set.pods = pods;
    set
}

fn statuses(r: &Inspection) -> [Status; 4] {
    [
        r.phase(Phase::Provision).status,
        r.phase(Phase::Bind).status,
        r.phase(Phase::Attach).status,
        r.phase(Phase::Mount).status,
    ]
}

#[test]
fn seed_rbd_claim_mounted_by_one_pod_prints_the_seed_all_success_table() {
    let mut set = bound_csi(
        "test-rbd",
        "rbd.csi.ceph.com",
        vec![mk_pod(
            "test-pod",
            "test-rbd",
            "calico-net2",
            PodState::Running,
        )],
        vec![mk_va("pvc-test-rbd", "calico-net2", true, None)],
    );
    set.claim.metadata.namespace = Some("kube-system".into());
    if let Some(Lookup::Found(pv)) = &mut set.volume
        && let Some(by) = pv.spec.as_mut().and_then(|s| s.claim_ref.as_mut())
    {
        by.namespace = Some("kube-system".into());
    }
    let report = derive(&set);
    // The seed README's first example, verbatim.
    let expected = "\
DESIRED POD                    DESIRED NODE
test-pod                       calico-net2
PHASE       STATUS    DETAIL
Provision   success
Bind        success
Attach      success
Mount       success
";
    assert_eq!(render::inspection(&report, false), expected);
    assert_eq!(report.outcome, Outcome::Succeeded);
}

#[test]
fn seed_cephfs_claim_shared_by_three_pods_reports_partly_fail_naming_the_unmounted_pod() {
    let pods = vec![
        mk_pod(
            "test-deploy-6445845799-c8cgq",
            "test-cephfs",
            "calico-master3",
            PodState::Creating,
        ),
        mk_pod(
            "test-deploy-6445845799-pd8s2",
            "test-cephfs",
            "calico-master1",
            PodState::Running,
        ),
        mk_pod(
            "test-deploy-6445845799-29czt",
            "test-cephfs",
            "calico-master2",
            PodState::Running,
        ),
    ];
    let vas = ["calico-master3", "calico-master1", "calico-master2"]
        .iter()
        .map(|n| mk_va("pvc-test-cephfs", n, true, None))
        .collect();
    let report = derive(&bound_csi("test-cephfs", "cephfs.csi.ceph.com", pods, vas));
    // The seed README's second example; its first pod line holds a tab, expanded here to the
    // 8-column stop a terminal shows it at, which lines it up with the other rows.
    let expected = "\
DESIRED POD                       DESIRED NODE
test-deploy-6445845799-c8cgq      calico-master3
test-deploy-6445845799-pd8s2      calico-master1
test-deploy-6445845799-29czt      calico-master2
PHASE       STATUS        DETAIL
Provision   success
Bind        success
Attach      success
Mount       partly fail   pods: [test-deploy-6445845799-c8cgq] are still not mounted as desired
";
    assert_eq!(render::inspection(&report, false), expected);
    assert_eq!(report.outcome, Outcome::Failed);
}

#[test]
fn provisioning_failed_event_text_is_the_provision_detail() {
    let mut set = mk_set(mk_claim("data", Some("fast"), None, "Pending"));
    set.class = Some(Lookup::Found(mk_class(
        "fast",
        "ebs.csi.aws.com",
        "Immediate",
    )));
    set.events = vec![
        mk_event(
            "PersistentVolumeClaim",
            "data",
            "ExternalProvisioning",
            "Normal",
            "Waiting for a volume to be created by the external provisioner",
            "2026-11-23T09:00:01Z",
        ),
        mk_event(
            "PersistentVolumeClaim",
            "data",
            "ProvisioningFailed",
            "Warning",
            "failed to provision volume with StorageClass \"fast\": quota exceeded",
            "2026-11-23T09:00:02Z",
        ),
    ];
    let report = derive(&set);
    let provision = report.phase(Phase::Provision);
    assert_eq!(provision.status, Status::Fail);
    assert_eq!(
        provision.detail,
        "failed to provision volume with StorageClass \"fast\": quota exceeded"
    );
    assert_eq!(report.phase(Phase::Bind).detail, "waiting for Provision");
    assert_eq!(
        statuses(&report),
        [
            Status::Fail,
            Status::Pending,
            Status::NotApplicable,
            Status::NotApplicable
        ]
    );
    assert_eq!(report.outcome, Outcome::Failed);
}

#[test]
fn a_failure_stays_fail_while_the_pv_controller_keeps_saying_it_waits() {
    let mut set = mk_set(mk_claim("data", Some("nfs"), None, "Pending"));
    set.class = Some(Lookup::Found(mk_class(
        "nfs",
        "ballast.dev/nfs",
        "Immediate",
    )));
    set.events = vec![
        mk_event(
            "PersistentVolumeClaim",
            "data",
            "ProvisioningFailed",
            "Warning",
            "export is full",
            "2026-11-23T09:00:02Z",
        ),
        mk_event(
            "PersistentVolumeClaim",
            "data",
            "ExternalProvisioning",
            "Normal",
            "Waiting for a volume to be created either by the external provisioner 'ballast.dev/nfs'",
            "2026-11-23T09:00:17Z",
        ),
    ];
    let report = derive(&set);
    let provision = report.phase(Phase::Provision);
    assert_eq!(provision.status, Status::Fail);
    assert_eq!(provision.detail, "export is full");
    assert_eq!(report.outcome, Outcome::Failed);
}

#[test]
fn provisioning_in_progress_after_an_earlier_failure_is_pending_with_the_latest_event() {
    let mut set = mk_set(mk_claim("data", Some("fast"), None, "Pending"));
    set.class = Some(Lookup::Found(mk_class(
        "fast",
        "ebs.csi.aws.com",
        "Immediate",
    )));
    set.events = vec![
        mk_event(
            "PersistentVolumeClaim",
            "data",
            "ProvisioningFailed",
            "Warning",
            "timeout",
            "2026-11-23T09:00:02Z",
        ),
        mk_event(
            "PersistentVolumeClaim",
            "data",
            "Provisioning",
            "Normal",
            "External provisioner is provisioning volume for claim \"default/data\"",
            "2026-11-23T09:00:09Z",
        ),
    ];
    let provision = derive(&set).phase(Phase::Provision).clone();
    assert_eq!(provision.status, Status::Pending);
    assert_eq!(
        provision.detail,
        "External provisioner is provisioning volume for claim \"default/data\""
    );
}

#[test]
fn events_of_an_earlier_claim_with_the_same_name_are_ignored() {
    let mut set = mk_set(mk_claim("data", Some("fast"), None, "Pending"));
    set.class = Some(Lookup::Found(mk_class(
        "fast",
        "ebs.csi.aws.com",
        "Immediate",
    )));
    let mut old = mk_event(
        "PersistentVolumeClaim",
        "data",
        "ProvisioningFailed",
        "Warning",
        "old",
        "2026-11-23T08:00:00Z",
    );
    old.involved_object.uid = Some("uid-of-a-deleted-claim".into());
    set.events = vec![old];
    let provision = derive(&set).phase(Phase::Provision).clone();
    assert_eq!(provision.status, Status::Pending);
    assert_eq!(
        provision.detail,
        "waiting for ebs.csi.aws.com to provision a volume"
    );
}

#[test]
fn missing_storage_class_fails_provision() {
    let mut set = mk_set(mk_claim("data", Some("nope"), None, "Pending"));
    set.class = Some(Lookup::Missing);
    let provision = derive(&set).phase(Phase::Provision).clone();
    assert_eq!(provision.status, Status::Fail);
    assert_eq!(
        provision.detail,
        "storageclass.storage.k8s.io \"nope\" not found"
    );
}

#[test]
fn wait_for_first_consumer_claim_without_pods_is_waiting_not_failed() {
    let mut set = mk_set(mk_claim("data", Some("local"), None, "Pending"));
    set.class = Some(Lookup::Found(mk_class(
        "local",
        "ballast.dev/hostpath",
        "WaitForFirstConsumer",
    )));
    set.events = vec![mk_event(
        "PersistentVolumeClaim",
        "data",
        "WaitForFirstConsumer",
        "Normal",
        "waiting for first consumer to be created before binding",
        "2026-11-23T09:00:01Z",
    )];
    let report = derive(&set);
    assert_eq!(
        statuses(&report),
        [
            Status::Pending,
            Status::Pending,
            Status::NotApplicable,
            Status::NotApplicable
        ]
    );
    assert_eq!(
        report.phase(Phase::Provision).detail,
        "waiting for first consumer to be created before binding"
    );
    assert_eq!(report.outcome, Outcome::Pending);
    let text = render::inspection(&report, false);
    assert!(
        text.contains(
            "Provision   pending   waiting for first consumer to be created before binding\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("DESIRED POD                    DESIRED NODE\n<none>\n"),
        "{text}"
    );
}

#[test]
fn wait_for_first_consumer_with_a_selected_node_is_provisioning_there() {
    let claim = annotate(
        mk_claim("data", Some("local"), None, "Pending"),
        "volume.kubernetes.io/selected-node",
        "node-2",
    );
    let mut set = mk_set(claim);
    set.class = Some(Lookup::Found(mk_class(
        "local",
        "ballast.dev/hostpath",
        "WaitForFirstConsumer",
    )));
    set.pods = vec![mk_pod("web-0", "data", "", PodState::Unscheduled)];
    let report = derive(&set);
    assert_eq!(
        report.phase(Phase::Provision).detail,
        "waiting for ballast.dev/hostpath to provision a volume on node node-2"
    );
    assert_eq!(
        statuses(&report),
        [
            Status::Pending,
            Status::Pending,
            Status::Pending,
            Status::Pending
        ]
    );
}

#[test]
fn unscheduled_pods_are_shown_as_such_with_the_scheduler_message() {
    let mut set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![
            mk_pod("web-0", "data", "node-1", PodState::Running),
            mk_pod("web-1", "data", "", PodState::Unscheduled),
        ],
        vec![mk_va("pvc-data", "node-1", true, None)],
    );
    set.events = vec![mk_event(
        "Pod",
        "web-1",
        "FailedScheduling",
        "Warning",
        "0/3 nodes are available: 3 Insufficient cpu.",
        "2026-11-23T09:30:00Z",
    )];
    let report = derive(&set);
    let mount = report.phase(Phase::Mount);
    assert_eq!(mount.status, Status::PartlyFail);
    assert_eq!(
        mount.detail,
        "pods: [web-1] are still not mounted as desired (web-1: unscheduled: 0/3 nodes are available: 3 Insufficient cpu.)"
    );
    assert_eq!(report.phase(Phase::Attach).status, Status::Success);
    let text = render::inspection(&report, false);
    assert!(
        text.contains("web-1                          <unscheduled>\n"),
        "{text}"
    );
}

#[test]
fn hostpath_and_nfs_volumes_need_no_attach() {
    for (source, kind) in [
        (json!({"hostPath": {"path": "/data/x"}}), "hostPath"),
        (
            json!({"nfs": {"server": "nfs.local", "path": "/export/x"}}),
            "nfs",
        ),
        (json!({"local": {"path": "/mnt/disk"}}), "local"),
    ] {
        let mut set = mk_set(mk_claim("data", Some("hostpath"), Some("pv-1"), "Bound"));
        set.volume = Some(Lookup::Found(mk_pv("pv-1", source, "data")));
        set.class = Some(Lookup::Found(mk_class(
            "hostpath",
            "ballast.dev/hostpath",
            "Immediate",
        )));
        set.pods = vec![mk_pod("web-0", "data", "node-1", PodState::Running)];
        let report = derive(&set);
        assert_eq!(
            statuses(&report),
            [
                Status::Success,
                Status::Success,
                Status::NotApplicable,
                Status::Success
            ]
        );
        assert_eq!(
            report.phase(Phase::Attach).detail,
            format!("{kind} volumes need no attach")
        );
        assert_eq!(report.outcome, Outcome::Succeeded);
    }
}

#[test]
fn csi_driver_without_attach_required_makes_attach_not_applicable() {
    let mut set = bound_csi(
        "data",
        "nfs.csi.k8s.io",
        vec![mk_pod("web-0", "data", "node-1", PodState::Running)],
        vec![],
    );
    set.csi_driver = Some(Lookup::Found(mk_driver("nfs.csi.k8s.io", false)));
    let attach = derive(&set).phase(Phase::Attach).clone();
    assert_eq!(attach.status, Status::NotApplicable);
    assert_eq!(
        attach.detail,
        "CSI driver nfs.csi.k8s.io does not require attach"
    );
}

#[test]
fn attach_error_on_the_volume_attachment_fails_attach() {
    let set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![mk_pod("web-0", "data", "node-1", PodState::Creating)],
        vec![mk_va(
            "pvc-data",
            "node-1",
            false,
            Some("rpc error: volume is attached to another node"),
        )],
    );
    let report = derive(&set);
    let attach = report.phase(Phase::Attach);
    assert_eq!(attach.status, Status::Fail);
    assert_eq!(
        attach.detail,
        "nodes: [node-1] are still not attached as desired (node-1: rpc error: volume is attached to another node)"
    );
    assert_eq!(report.phase(Phase::Mount).status, Status::Pending);
}

#[test]
fn attach_on_some_nodes_only_is_partly_fail_and_a_missing_attachment_is_pending() {
    let pods = vec![
        mk_pod("web-0", "data", "node-1", PodState::Running),
        mk_pod("web-1", "data", "node-2", PodState::Creating),
    ];
    let set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        pods.clone(),
        vec![mk_va("pvc-data", "node-1", true, None)],
    );
    let attach = derive(&set).phase(Phase::Attach).clone();
    assert_eq!(attach.status, Status::PartlyFail);
    assert_eq!(
        attach.detail,
        "nodes: [node-2] are still not attached as desired"
    );

    let waiting = bound_csi("data", "ebs.csi.aws.com", vec![pods[1].clone()], vec![]);
    let attach = derive(&waiting).phase(Phase::Attach).clone();
    assert_eq!(attach.status, Status::Pending);
    assert_eq!(
        attach.detail,
        "nodes: [node-2] are still not attached as desired"
    );
}

#[test]
fn failed_mount_event_fails_mount_when_no_pod_mounted() {
    let mut set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![mk_pod("web-0", "data", "node-1", PodState::Creating)],
        vec![mk_va("pvc-data", "node-1", true, None)],
    );
    set.events = vec![mk_event(
        "Pod",
        "web-0",
        "FailedMount",
        "Warning",
        "MountVolume.MountDevice failed for volume \"pvc-data\": mount failed: exit status 32",
        "2026-11-23T09:40:00Z",
    )];
    let report = derive(&set);
    let mount = report.phase(Phase::Mount);
    assert_eq!(mount.status, Status::Fail);
    assert_eq!(
        mount.detail,
        "pods: [web-0] are still not mounted as desired (web-0: MountVolume.MountDevice failed for volume \"pvc-data\": mount failed: exit status 32)"
    );
    assert_eq!(
        report.pods[0].mount,
        MountState::Failed(
            "MountVolume.MountDevice failed for volume \"pvc-data\": mount failed: exit status 32"
                .into()
        )
    );
}

#[test]
fn lost_claim_fails_provision_and_bind() {
    let mut set = mk_set(mk_claim("data", Some("fast"), Some("pv-gone"), "Lost"));
    set.volume = Some(Lookup::Missing);
    let report = derive(&set);
    assert_eq!(
        report.phase(Phase::Provision).detail,
        "persistentvolume \"pv-gone\" not found (the claim is Lost)"
    );
    assert_eq!(report.phase(Phase::Bind).status, Status::Fail);
}

#[test]
fn claim_without_class_and_failed_binding_fails_bind() {
    let mut set = mk_set(mk_claim("data", None, None, "Pending"));
    set.events = vec![mk_event(
        "PersistentVolumeClaim",
        "data",
        "FailedBinding",
        "Warning",
        "no persistent volumes available for this claim and no storage class is set",
        "2026-11-23T09:00:01Z",
    )];
    let report = derive(&set);
    assert_eq!(report.phase(Phase::Provision).status, Status::Pending);
    let bind = report.phase(Phase::Bind);
    assert_eq!(bind.status, Status::Fail);
    assert_eq!(
        bind.detail,
        "no persistent volumes available for this claim and no storage class is set"
    );
}

#[test]
fn volume_bound_to_another_claim_fails_bind() {
    let mut set = bound_csi("data", "ebs.csi.aws.com", vec![], vec![]);
    set.volume = Some(Lookup::Found(mk_csi_pv(
        "pvc-data",
        "ebs.csi.aws.com",
        "other",
    )));
    let bind = derive(&set).phase(Phase::Bind).clone();
    assert_eq!(bind.status, Status::Fail);
    assert_eq!(
        bind.detail,
        "persistentvolume pvc-data is bound to claim default/other"
    );
}

#[test]
fn bound_claim_without_pods_succeeds_with_attach_and_mount_not_applicable() {
    let report = derive(&bound_csi("data", "ebs.csi.aws.com", vec![], vec![]));
    assert_eq!(
        statuses(&report),
        [
            Status::Success,
            Status::Success,
            Status::NotApplicable,
            Status::NotApplicable
        ]
    );
    assert_eq!(report.phase(Phase::Mount).detail, "no pod uses this claim");
    assert_eq!(report.outcome, Outcome::Succeeded);
}

#[test]
fn finished_pods_and_pods_of_other_claims_are_not_desired() {
    let mut set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![
            mk_pod("job-1", "data", "node-1", PodState::Succeeded),
            mk_pod("other", "logs", "node-1", PodState::Running),
        ],
        vec![],
    );
    let mut ephemeral: Pod = from(json!({
        "metadata": {"name": "eph", "namespace": NS},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app"}],
                 "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]},
        "status": {"phase": "Running"}
    }));
    ephemeral.metadata.name = Some("eph".into());
    set.pods.push(ephemeral.clone());
    assert!(derive(&set).pods.is_empty());
    assert_eq!(claims_of(&ephemeral), vec!["eph-scratch".to_owned()]);
}

#[test]
fn unreadable_volume_attachments_are_inferred_from_running_pods() {
    let mut set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![mk_pod("web-0", "data", "node-1", PodState::Running)],
        vec![],
    );
    set.attachments = Some(Lookup::Unreadable("forbidden".into()));
    let attach = derive(&set).phase(Phase::Attach).clone();
    assert_eq!(attach.status, Status::Success);
    assert!(
        attach
            .evidence
            .contains("cannot read volumeattachments: forbidden"),
        "{}",
        attach.evidence
    );
}

const TIMING: &str = r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T09:00:00Z"},{"phase":"Bound","time":"2026-11-23T09:00:12Z"}]}"#;

#[test]
fn pvc_timing_annotation_shows_how_long_provision_and_bind_took() {
    let mut set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![mk_pod("web-0", "data", "node-1", PodState::Running)],
        vec![mk_va("pvc-data", "node-1", true, None)],
    );
    set.claim = annotate(set.claim, TIMING_ANNOTATION, TIMING);
    let report = derive(&set);
    // The volume appeared 5s after the claim, the claim was Bound 7s later.
    assert_eq!(
        report.phase(Phase::Provision).took,
        Some(Took {
            seconds: 5,
            finished: true
        })
    );
    assert_eq!(
        report.phase(Phase::Bind).took,
        Some(Took {
            seconds: 7,
            finished: true
        })
    );
    let text = render::inspection(&report, false);
    assert!(text.contains("PHASE       STATUS    DURATION   DETAIL\nProvision   success   5s\nBind        success   7s\nAttach      success   -\n"), "{text}");
}

#[test]
fn pending_claim_timing_counts_the_wait_so_far() {
    let claim = annotate(
        mk_claim("data", Some("fast"), None, "Pending"),
        TIMING_ANNOTATION,
        r#"{"currentPhase":"Pending","timings":[{"phase":"Pending","time":"2026-11-23T09:57:00Z"}]}"#,
    );
    let mut set = mk_set(claim);
    set.class = Some(Lookup::Found(mk_class(
        "fast",
        "ebs.csi.aws.com",
        "Immediate",
    )));
    let report = derive(&set);
    assert_eq!(
        report.phase(Phase::Provision).took,
        Some(Took {
            seconds: 180,
            finished: false
        })
    );
    assert_eq!(report.phase(Phase::Bind).took, None);
    assert!(render::inspection(&report, false).contains(
        "Provision   pending   3m0s so far   waiting for ebs.csi.aws.com to provision a volume\n"
    ));
}

#[test]
fn a_bind_pvc_timing_did_not_witness_shows_no_duration() {
    let mut set = bound_csi("data", "ebs.csi.aws.com", vec![], vec![]);
    set.claim = annotate(
        set.claim,
        TIMING_ANNOTATION,
        r#"{"currentPhase":"Bound","timings":[{"phase":"Pending","time":"2026-11-23T08:59:01Z"},{"phase":"Bound","time":"2026-11-23T10:00:00Z","observed":false}]}"#,
    );
    let report = derive(&set);
    assert!(
        report.phases.iter().all(|p| p.took.is_none()),
        "an hour from creation to first sighting is not how long binding took"
    );
}

#[test]
fn corrupt_pvc_timing_annotation_is_ignored() {
    let mut set = bound_csi("data", "ebs.csi.aws.com", vec![], vec![]);
    set.claim = annotate(set.claim, TIMING_ANNOTATION, "{not json");
    let report = derive(&set);
    assert!(report.phases.iter().all(|p| p.took.is_none()));
    assert!(render::inspection(&report, false).contains("PHASE       STATUS    DETAIL\n"));
}

#[test]
fn json_output_uses_the_seed_status_words() {
    let set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![
            mk_pod("web-0", "data", "node-1", PodState::Running),
            mk_pod("web-1", "data", "node-1", PodState::Creating),
        ],
        vec![mk_va("pvc-data", "node-1", true, None)],
    );
    let value = serde_json::to_value(derive(&set)).expect("serialisable");
    assert_eq!(value["phases"][3]["status"], "partly fail");
    assert_eq!(value["phases"][3]["phase"], "Mount");
    assert_eq!(value["outcome"], "failed");
    assert_eq!(value["pods"][1]["mount"]["state"], "waiting");
    assert_eq!(value["volume"], "pvc-data");
}

#[test]
fn wide_output_shows_pod_state_and_evidence_for_successful_phases() {
    let set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![mk_pod("web-0", "data", "node-1", PodState::Running)],
        vec![mk_va("pvc-data", "node-1", true, None)],
    );
    let text = render::inspection(&derive(&set), true);
    assert!(
        text.contains("DESIRED POD                    DESIRED NODE   READY   STATUS    MOUNT\n"),
        "{text}"
    );
    assert!(
        text.contains("web-0                          node-1         1/1     Running   mounted\n"),
        "{text}"
    );
    assert!(text.contains("Provision   success   -          persistentvolume pvc-data provisioned by ebs.csi.aws.com\n"), "{text}");
    assert!(
        text.contains("Attach      success   -          attached to nodes: [node-1]\n"),
        "{text}"
    );
}

#[test]
fn provisioner_class_mismatch_warning_fails_bind_of_a_claim_naming_a_volume() {
    let mut set = mk_set(mk_claim("data", Some("nfs"), Some("pv-1"), "Pending"));
    set.volume = Some(Lookup::Found(mk_pv(
        "pv-1",
        json!({"hostPath": {"path": "/data/x"}}),
        "data",
    )));
    set.events = vec![mk_event(
        "PersistentVolumeClaim",
        "data",
        "StorageClassMismatch",
        "Warning",
        "persistentvolume pv-1 has storage class hostpath, the claim asks for nfs",
        "2026-11-23T09:00:01Z",
    )];
    let report = derive(&set);
    assert_eq!(report.phase(Phase::Provision).status, Status::Success);
    let bind = report.phase(Phase::Bind);
    assert_eq!(bind.status, Status::Fail);
    assert_eq!(
        bind.detail,
        "persistentvolume pv-1 has storage class hostpath, the claim asks for nfs"
    );
}

#[test]
fn existing_volume_not_yet_bound_is_pending_bind() {
    let mut set = mk_set(mk_claim("data", Some("nfs"), Some("pv-1"), "Pending"));
    set.volume = Some(Lookup::Found(mk_pv(
        "pv-1",
        json!({"nfs": {"server": "nfs", "path": "/x"}}),
        "data",
    )));
    let bind = derive(&set).phase(Phase::Bind).clone();
    assert_eq!(bind.status, Status::Pending);
    assert_eq!(
        bind.detail,
        "persistentvolume pv-1 exists, waiting for the claim to be bound"
    );
}

#[test]
fn a_running_pod_proves_attach_where_no_volume_attachment_says_so() {
    let set = bound_csi(
        "data",
        "ebs.csi.aws.com",
        vec![mk_pod("web-0", "data", "node-1", PodState::Running)],
        vec![],
    );
    let attach = derive(&set).phase(Phase::Attach).clone();
    assert_eq!(attach.status, Status::Success);
    assert_eq!(
        attach.evidence,
        "attached to nodes: [node-1 (no attached VolumeAttachment, but a pod runs there)]"
    );
}
