use super::*;

fn claim(name: &str, class: &str, size: &str) -> Value {
    json!({"metadata": {"namespace": "ns", "name": name, "uid": format!("uid-{name}"), "resourceVersion": "7"},
           "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": size}}, "volumeMode": "Filesystem"},
           "status": {"phase": "Pending"}})
}

fn volume(name: &str, class: &str, size: &str) -> Value {
    json!({"metadata": {"name": name},
           "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                    "capacity": {"storage": size}, "volumeMode": "Filesystem"},
           "status": {"phase": "Available"}})
}

fn reserved_for(mut pv: Value, claim: &str, uid: &str) -> Value {
    pv["spec"]["claimRef"] = json!({"namespace": "ns", "name": claim, "uid": uid});
    pv
}

fn class(name: &str, provisioner: &str, mode: &str) -> Value {
    json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode})
}

#[test]
fn quantities_parse_binary_and_decimal_suffixes() {
    assert_eq!(quantity_bytes("1Gi"), Some(1073741824.0));
    assert_eq!(quantity_bytes("500M"), Some(5e8));
    assert_eq!(quantity_bytes("10"), Some(10.0));
    assert_eq!(quantity_bytes("ten"), None);
}

#[test]
fn a_volume_fits_a_claim_of_its_class_with_room_and_modes() {
    let pv = volume("pv", "manual", "2Gi");
    assert!(pv_fits(&pv, &claim("c", "manual", "1Gi")));
    assert!(!pv_fits(&pv, &claim("c", "manual", "3Gi")));
    assert!(!pv_fits(&pv, &claim("c", "fast", "1Gi")));
    let mut many = claim("c", "manual", "1Gi");
    many["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    assert!(!pv_fits(&pv, &many));
    let mut selective = claim("c", "manual", "1Gi");
    selective["spec"]["selector"] = json!({"matchLabels": {"tier": "gold"}});
    assert!(!pv_fits(&pv, &selective));
    let mut gold = pv.clone();
    gold["metadata"]["labels"] = json!({"tier": "gold"});
    assert!(pv_fits(&gold, &selective));
}

#[test]
fn a_claim_binds_the_smallest_available_volume_that_fits() {
    let pvs = [
        volume("big", "manual", "10Gi"),
        volume("small", "manual", "2Gi"),
        volume("tiny", "manual", "500Mi"),
        volume("other-class", "fast", "1Gi"),
    ];
    let v = Volumes::new(&pvs);
    let classes = [class("manual", "kubernetes.io/no-provisioner", "Immediate")];
    assert_eq!(
        sync_claim(&claim("c", "manual", "1Gi"), &v, &classes, &[]),
        ClaimSync::Bind("small".into())
    );
}

#[test]
fn a_volume_pre_bound_to_the_claim_wins_but_only_with_its_uid() {
    let pvs = [
        volume("small", "nfs", "1Gi"),
        reserved_for(volume("mine", "nfs", "5Gi"), "c", "uid-c"),
        reserved_for(volume("older", "nfs", "1Gi"), "c", "uid-of-a-deleted-claim"),
    ];
    let v = Volumes::new(&pvs);
    let classes = [class("nfs", "ballast.dev/nfs", "WaitForFirstConsumer")];
    assert_eq!(
        sync_claim(&claim("c", "nfs", "1Gi"), &v, &classes, &[]),
        ClaimSync::Bind("mine".into()),
        "pre-bound volumes bind even before a consumer exists"
    );
    let pvs = [reserved_for(
        volume("older", "nfs", "1Gi"),
        "c",
        "uid-of-a-deleted-claim",
    )];
    let v = Volumes::new(&pvs);
    let classes = [class("nfs", "ballast.dev/nfs", "Immediate")];
    assert_eq!(
        sync_claim(&claim("c", "nfs", "1Gi"), &v, &classes, &[]),
        ClaimSync::External("ballast.dev/nfs".into())
    );
}

#[test]
fn claims_of_an_external_provisioner_are_handed_over_unless_a_volume_fits() {
    let classes = [class("nfs", "ballast.dev/nfs", "Immediate")];
    let none: [Value; 0] = [];
    let v = Volumes::new(&none);
    assert_eq!(
        sync_claim(&claim("c", "nfs", "1Gi"), &v, &classes, &[]),
        ClaimSync::External("ballast.dev/nfs".into())
    );
    assert_eq!(
        external_provisioning_message("ballast.dev/nfs"),
        "Waiting for a volume to be created either by the external provisioner 'ballast.dev/nfs' \
         or manually by the system administrator. If volume creation is delayed, please verify \
         that the provisioner is running and correctly registered."
    );
    assert_eq!(
        sync_claim(&claim("c", "gone", "1Gi"), &v, &classes, &[]),
        ClaimSync::Pending(Some(note(
            "Warning",
            "ProvisioningFailed",
            "storageclass.storage.k8s.io \"gone\" not found"
        )))
    );
    assert_eq!(
        sync_claim(&claim("c", "", "1Gi"), &v, &classes, &[]),
        ClaimSync::Pending(Some(note(
            "Normal",
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set"
        )))
    );
}

#[test]
fn wait_for_first_consumer_claims_wait_for_the_selected_node() {
    let classes = [class(
        "local",
        "ballast.dev/hostpath",
        "WaitForFirstConsumer",
    )];
    let pvs = [volume("free", "local", "5Gi")];
    let v = Volumes::new(&pvs);
    let c = claim("c", "local", "1Gi");
    assert_eq!(
        sync_claim(&c, &v, &classes, &[]),
        ClaimSync::Pending(Some(note(
            "Normal",
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding"
        ))),
        "the scheduler, not the PV controller, binds free volumes of such a class"
    );
    let pod = json!({"metadata": {"namespace": "ns", "name": "web-0"},
        "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}}]}});
    assert_eq!(
        sync_claim(&c, &v, &classes, &[pod]),
        ClaimSync::Pending(Some(note(
            "Normal",
            "WaitForPodScheduled",
            "waiting for pod web-0 to be scheduled"
        )))
    );
    let mut selected = c.clone();
    selected["metadata"]["annotations"] = json!({ANN_SELECTED_NODE: "node-1"});
    assert_eq!(
        sync_claim(&selected, &v, &classes, &[]),
        ClaimSync::External("ballast.dev/hostpath".into())
    );
}

#[test]
fn a_claim_naming_a_volume_binds_it_only_when_it_satisfies_the_claim() {
    let pvs = [
        volume("fast-one", "fast", "5Gi"),
        reserved_for(volume("taken", "slow", "5Gi"), "someone-else", ""),
    ];
    let v = Volumes::new(&pvs);
    let named = |vol: &str| {
        let mut c = claim("c", "slow", "1Gi");
        c["spec"]["volumeName"] = json!(vol);
        c
    };
    assert_eq!(
        sync_claim(&named("fast-one"), &v, &[], &[]),
        ClaimSync::Pending(Some(note(
            "Warning",
            "VolumeMismatch",
            "Cannot bind to requested volume \"fast-one\": storageClassName does not match"
        )))
    );
    assert_eq!(
        sync_claim(&named("missing"), &v, &[], &[]),
        ClaimSync::Pending(None),
        "a missing volume: Pending without a word, as Kubernetes does"
    );
    assert_eq!(
        sync_claim(&named("taken"), &v, &[], &[]),
        ClaimSync::Pending(None)
    );
}

#[test]
fn a_bound_claim_whose_volume_is_gone_is_lost() {
    let mut c = claim("c", "nfs", "1Gi");
    c["spec"]["volumeName"] = json!("pv-1");
    c["metadata"]["annotations"] = json!({ANN_BIND_COMPLETED: "yes"});
    let none: [Value; 0] = [];
    assert!(matches!(
        sync_claim(&c, &Volumes::new(&none), &[], &[]),
        ClaimSync::Lost(Note {
            reason: "ClaimLost",
            ..
        })
    ));
    let pvs = [reserved_for(volume("pv-1", "nfs", "1Gi"), "c", "uid-c")];
    assert_eq!(
        sync_claim(&c, &Volumes::new(&pvs), &[], &[]),
        ClaimSync::Bind("pv-1".into()),
        "a half-done binding is finished, never lost"
    );
    let mut done = pvs[0].clone();
    done["status"]["phase"] = json!("Bound");
    c["status"] = json!({"phase": "Bound", "capacity": {"storage": "1Gi"},
                         "accessModes": ["ReadWriteOnce"]});
    assert_eq!(
        sync_claim(&c, &Volumes::new(&[done]), &[], &[]),
        ClaimSync::Idle,
        "nothing to write for a complete binding"
    );
}

#[test]
fn volumes_are_available_bound_released_or_freed_again() {
    let mut bound_claim = claim("c", "nfs", "1Gi");
    bound_claim["spec"]["volumeName"] = json!("pv-1");
    let claims: HashMap<(&str, &str), &Value> = [(("ns", "c"), &bound_claim)].into();
    let free = volume("free", "nfs", "1Gi");
    assert_eq!(sync_volume(&free, &claims), VolumeSync::Idle);
    let mut pending = free.clone();
    pending["status"]["phase"] = json!("Pending");
    assert_eq!(
        sync_volume(&pending, &claims),
        VolumeSync::Phase("Available")
    );
    let pv1 = reserved_for(volume("pv-1", "nfs", "1Gi"), "c", "uid-c");
    assert_eq!(sync_volume(&pv1, &claims), VolumeSync::Phase("Bound"));
    let orphan = reserved_for(volume("pv-2", "nfs", "1Gi"), "gone", "uid-gone");
    assert_eq!(sync_volume(&orphan, &claims), VolumeSync::Phase("Released"));
    let mut lost_race = reserved_for(volume("pv-3", "nfs", "1Gi"), "c", "uid-c");
    lost_race["metadata"]["annotations"] = json!({ANN_BOUND_BY_CONTROLLER: "yes"});
    assert_eq!(sync_volume(&lost_race, &claims), VolumeSync::Unbind);
    let mut provisioned = reserved_for(volume("pv-4", "nfs", "1Gi"), "c", "uid-c");
    provisioned["metadata"]["annotations"] = json!({ANN_PROVISIONED_BY: "ballast.dev/nfs"});
    provisioned["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
    assert_eq!(
        sync_volume(&provisioned, &claims),
        VolumeSync::Phase("Released"),
        "a provisioned volume its claim did not take goes back to its provisioner"
    );
}

#[test]
fn protection_waits_for_pods_using_the_claim() {
    let c = claim("data", "nfs", "1Gi");
    let pod = |phase: &str| {
        json!({"metadata": {"namespace": "ns", "name": "p"}, "status": {"phase": phase},
               "spec": {"nodeName": "node-1",
                        "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}})
    };
    assert!(claim_in_use(&c, &[pod("Running")]));
    assert!(!claim_in_use(&c, &[pod("Succeeded")]));
    let mut unscheduled = pod("Pending");
    unscheduled["spec"]["nodeName"] = Value::Null;
    assert!(
        !claim_in_use(&c, &[unscheduled]),
        "a pod not scheduled yet does not hold the claim"
    );
    assert!(!claim_in_use(&c, &[]));
    let mut obj = json!({"metadata": {"name": "x"}});
    add_protection_finalizer("persistentvolumeclaims", &mut obj);
    add_protection_finalizer("persistentvolumeclaims", &mut obj);
    assert_eq!(
        obj["metadata"]["finalizers"],
        json!([FINALIZER_PVC_PROTECTION])
    );
}
