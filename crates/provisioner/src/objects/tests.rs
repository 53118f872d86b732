use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use kube::Resource;
use serde_json::{Value, json};

use super::*;
use crate::plan::{self, Backend, ClaimAction, Provisioners, VolumeAction, World};

#[test]
fn node_names_become_label_values_and_long_ones_a_stable_hash() {
    assert_eq!(node_label("node-1"), "node-1");
    let long = "n".repeat(64);
    let label = node_label(&long);
    assert_eq!(label.len(), 18);
    assert!(label.starts_with("h-"));
    assert_eq!(label, node_label(&long), "stable");
    assert_ne!(label, node_label(&"m".repeat(64)));
}

/// A claim as an API server returns it after `kubectl apply` and the PV controller's hand-over.
fn full_claim() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": "data", "namespace": "ns", "uid": "u-1", "resourceVersion": "42",
            "generation": 3, "creationTimestamp": "2026-12-01T00:00:00Z",
            "deletionTimestamp": "2026-12-02T00:00:00Z",
            "finalizers": ["kubernetes.io/pvc-protection"],
            "labels": {"app": "db", "tier": "data"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"a\":1}",
                ANN_STORAGE_PROVISIONER: PROVISIONER_NFS,
                ANN_BETA_STORAGE_PROVISIONER: PROVISIONER_NFS,
                ANN_SELECTED_NODE: "node-1",
                ANN_BINDING_PROBLEM: "too small",
                "example.com/other": "x",
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                                 "uid": "o-1"}],
            "managedFields": [{"manager": "kubectl", "operation": "Update",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "storageClassName": "nfs",
            "volumeName": "pv-7",
            "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
            "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "5Gi", "example.com/x": "1"},
                          "limits": {"storage": "10Gi"}},
            "selector": {"matchLabels": {"disk": "ssd"}},
            "dataSource": {"kind": "PersistentVolumeClaim", "name": "seed"},
        },
        "status": {
            "phase": "Pending",
            "capacity": {"storage": "5Gi"},
            "conditions": [{"type": "Resizing", "status": "True"}],
        },
    })
}

fn full_volume() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": "pv-7", "uid": "v-1", "resourceVersion": "43",
            "finalizers": ["kubernetes.io/pv-protection"],
            "labels": {LABEL_NODE: "node-1", "other": "label"},
            "annotations": {
                ANN_PROVISIONED_BY: PROVISIONER_HOSTPATH,
                ANN_DIRECTORY: "pv-7_ns_data",
                "pv.kubernetes.io/bound-by-controller": "yes",
            },
            "managedFields": [{"manager": "ballast-provisioner", "operation": "Update"}],
        },
        "spec": {
            "storageClassName": "hostpath",
            "capacity": {"storage": "5Gi"},
            "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete",
            "mountOptions": ["hard", "nfsvers=4.1"],
            "hostPath": {"path": "/var/lib/ballast/pv-7_ns_data", "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns",
                         "name": "data", "uid": "u-1", "resourceVersion": "41"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["z"]},
                    {"key": LABEL_HOSTNAME, "operator": "NotIn", "values": ["node-9"]},
                    {"key": LABEL_HOSTNAME, "operator": "In", "values": ["node-1", "node-2"]},
                ]},
            ]}},
        },
        "status": {"phase": "Released", "lastPhaseTransitionTime": "2026-12-02T00:00:00Z"},
    })
}

fn lean<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("decodes")
}

#[test]
fn a_claim_decodes_keeping_only_what_decisions_read() {
    let c: CachedClaim = lean(full_claim());
    let m = &c.metadata;
    assert_eq!(
        (m.name.as_deref(), m.namespace.as_deref(), m.uid.as_deref()),
        (Some("data"), Some("ns"), Some("u-1"))
    );
    assert_eq!(m.resource_version.as_deref(), Some("42"));
    assert!(m.deletion_timestamp.is_some());
    assert_eq!(claim_class(&c), "nfs");
    assert_eq!(named_volume(&c), Some("pv-7"));
    assert_eq!(claim_request(&c), Some(5 << 30));
    assert_eq!(c.request.as_deref(), Some("5Gi"));
    assert_eq!(claim_modes(&c), ["ReadWriteMany", "ReadOnlyMany"]);
    assert_eq!(claim_volume_mode(&c), FILESYSTEM);
    assert_eq!(phase_of_claim(&c), "Pending");
    assert_eq!(selected_node(&c), Some("node-1"));
    assert!(handed_to(&c, PROVISIONER_NFS));
    assert_eq!(c.storage_provisioner.as_deref(), Some(PROVISIONER_NFS));
    assert_eq!(c.beta_storage_provisioner.as_deref(), Some(PROVISIONER_NFS));
    assert_eq!(binding_problem(&c), Some("too small"));
}

#[test]
fn a_volume_decodes_keeping_only_what_decisions_read() {
    let v: CachedVolume = lean(full_volume());
    let m = &v.metadata;
    assert_eq!(
        (
            m.name.as_deref(),
            m.uid.as_deref(),
            m.resource_version.as_deref()
        ),
        (Some("pv-7"), Some("v-1"), Some("43"))
    );
    assert_eq!(provisioned_by(&v), Some(PROVISIONER_HOSTPATH));
    assert_eq!(directory(&v), Some("pv-7_ns_data"));
    assert_eq!(v.node_label.as_deref(), Some("node-1"));
    assert_eq!(volume_class(&v), "hostpath");
    assert_eq!(volume_capacity(&v), Some(5 << 30));
    assert_eq!(v.access_modes[..], ["ReadWriteOnce"]);
    assert_eq!(v.volume_mode.as_deref(), Some(FILESYSTEM));
    assert_eq!(reclaim_policy(&v), "Delete");
    assert_eq!(claim_ref(&v), Some(("ns", "data", "u-1")));
    assert_eq!(volume_node(&v), Some("node-1"), "the first hostname In");
    assert_eq!(phase_of_volume(&v), "Released");
}

#[test]
fn a_node_decodes_to_its_name_hostname_and_ready_condition() {
    let node = |ready: &str| -> CachedNode {
        lean(json!({
            "metadata": {"name": "n1", "labels": {LABEL_HOSTNAME: "n1-host", "zone": "z"},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": ready, "reason": "KubeletReady"},
                ],
                "images": [{"names": ["registry.example/app:1"], "sizeBytes": 1234}],
                "capacity": {"cpu": "2", "memory": "8Gi"},
            },
        }))
    };
    let n = node("True");
    assert!(n.ready);
    assert_eq!(n.metadata.name.as_deref(), Some("n1"));
    assert_eq!(n.hostname.as_deref(), Some("n1-host"));
    assert!(!node("Unknown").ready);
    let bare: CachedNode = lean(json!({"metadata": {"name": "n2"}}));
    assert!(!bare.ready, "no Ready condition: not ready");
}

#[test]
fn nulls_and_missing_parts_decode_as_absent() {
    let c: CachedClaim = lean(json!({
        "metadata": {"name": "a", "annotations": null, "labels": null},
        "spec": {"accessModes": null, "resources": {"requests": null}},
        "status": null,
    }));
    assert!(c.access_modes.is_empty());
    assert_eq!((claim_request(&c), phase_of_claim(&c)), (None, ""));
    let v: CachedVolume = lean(json!({
        "metadata": {"name": "pv"},
        "spec": {"claimRef": {"name": "c"}, "nodeAffinity": {"required": null}},
    }));
    assert_eq!(claim_ref(&v), Some(("", "c", "")));
    assert_eq!((volume_node(&v), reclaim_policy(&v)), (None, "Retain"));
    let empty: CachedVolume = lean(json!({}));
    assert_eq!(empty, CachedVolume::default());
}

/// Every field the decisions read, from the lean shape and from k8s-openapi's full object of
/// the same JSON: a field the lean decoding dropped or misread shows up here.
#[test]
fn lean_shapes_read_the_same_as_the_full_objects() {
    let claim_json = full_claim();
    let volume_json = full_volume();
    let full_c: PersistentVolumeClaim = lean(claim_json.clone());
    let full_v: PersistentVolume = lean(volume_json.clone());
    let c: CachedClaim = lean(claim_json);
    let v: CachedVolume = lean(volume_json);
    let spec = full_c.spec.as_ref().unwrap();
    assert_eq!(c.class.as_deref(), spec.storage_class_name.as_deref());
    assert_eq!(c.volume_name.as_deref(), spec.volume_name.as_deref());
    assert_eq!(
        c.request.as_deref(),
        spec.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref()?.get("storage"))
            .map(|q| q.0.as_str())
    );
    assert_eq!(Some(&c.access_modes[..]), spec.access_modes.as_deref());
    assert_eq!(c.volume_mode.as_deref(), spec.volume_mode.as_deref());
    assert_eq!(
        c.phase.as_deref(),
        full_c.status.as_ref().unwrap().phase.as_deref()
    );
    let full = |key| annotation(&full_c.metadata, key);
    assert_eq!(selected_node(&c), full(ANN_SELECTED_NODE));
    assert_eq!(
        c.storage_provisioner.as_deref(),
        full(ANN_STORAGE_PROVISIONER)
    );
    assert_eq!(
        c.beta_storage_provisioner.as_deref(),
        full(ANN_BETA_STORAGE_PROVISIONER)
    );
    assert_eq!(binding_problem(&c), full(ANN_BINDING_PROBLEM));
    let full = |key| annotation(&full_v.metadata, key);
    assert_eq!(provisioned_by(&v), full(ANN_PROVISIONED_BY));
    assert_eq!(directory(&v), full(ANN_DIRECTORY));
    assert_eq!(reference(&c), {
        let m = &full_c.metadata;
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            ..Default::default()
        }
    });
    let spec = full_v.spec.as_ref().unwrap();
    assert_eq!(v.class.as_deref(), spec.storage_class_name.as_deref());
    assert_eq!(
        v.capacity.as_deref(),
        spec.capacity
            .as_ref()
            .unwrap()
            .get("storage")
            .map(|q| q.0.as_str())
    );
    assert_eq!(Some(&v.access_modes[..]), spec.access_modes.as_deref());
    assert_eq!(v.volume_mode.as_deref(), spec.volume_mode.as_deref());
    assert_eq!(
        v.reclaim_policy.as_deref(),
        spec.persistent_volume_reclaim_policy.as_deref()
    );
    let r = spec.claim_ref.as_ref().unwrap();
    assert_eq!(
        claim_ref(&v),
        Some((
            r.namespace.as_deref().unwrap(),
            r.name.as_deref().unwrap(),
            r.uid.as_deref().unwrap()
        ))
    );
    assert_eq!(
        v.phase.as_deref(),
        full_v.status.as_ref().unwrap().phase.as_deref()
    );
    fn full_label<'a>(m: &'a ObjectMeta, key: &str) -> Option<&'a str> {
        m.labels.as_ref()?.get(key).map(String::as_str)
    }
    assert_eq!(
        v.node_label.as_deref(),
        full_label(&full_v.metadata, LABEL_NODE)
    );
    let full_n: Node = lean(json!({"metadata": {"name": "n", "labels": {LABEL_HOSTNAME: "h"}}}));
    let n: CachedNode = lean(json!({"metadata": {"name": "n", "labels": {LABEL_HOSTNAME: "h"}}}));
    assert_eq!(
        n.hostname.as_deref(),
        full_label(&full_n.metadata, LABEL_HOSTNAME)
    );
}

/// The decisions over lean objects decoded from full API JSON: a claim naming a volume of
/// ours that is reserved for it is settled; the same volume Released is reclaimed with its
/// directory (every field those paths read must survive the decoding for these to hold).
#[test]
fn decisions_over_decoded_objects_see_every_field_they_read() {
    let mut claim = full_claim();
    claim["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("deletionTimestamp");
    claim["spec"]["storageClassName"] = json!("hostpath");
    claim["spec"]["accessModes"] = json!(["ReadWriteOnce"]);
    let class: k8s_openapi::api::storage::v1::StorageClass = lean(json!({
        "metadata": {"name": "hostpath"}, "provisioner": PROVISIONER_HOSTPATH}));
    let c: Arc<CachedClaim> = Arc::new(lean(claim));
    let v: Arc<CachedVolume> = Arc::new(lean(full_volume()));
    let world = World {
        claims: vec![],
        volumes: vec![v.clone()],
        classes: vec![Arc::new(class)],
        nodes: Default::default(),
        provisioners: Arc::new(Provisioners::default()),
    };
    assert_eq!(plan::decide_claim(&c, &world), ClaimAction::ClearProblem);
    assert_eq!(
        plan::decide_volume(&v, &world),
        VolumeAction::Delete {
            backend: Backend::HostPath,
            directory: Some("pv-7_ns_data".into()),
            archive: false,
        }
    );
    // The claim still naming it holds it.
    let held = World {
        claims: vec![c],
        ..world
    };
    assert_eq!(
        plan::decide_volume(&v, &held),
        VolumeAction::Nothing("a claim still holds the volume")
    );
}

#[test]
fn lean_shapes_are_the_same_resources_as_the_full_ones() {
    fn same<A: Resource<DynamicType = ()>, B: Resource<DynamicType = ()>>(ns: Option<&str>) {
        assert_eq!(A::url_path(&(), ns), B::url_path(&(), ns));
        assert_eq!(A::kind(&()), B::kind(&()));
        assert_eq!(A::api_version(&()), B::api_version(&()));
    }
    same::<Lean<CachedClaim>, PersistentVolumeClaim>(Some("ns"));
    same::<Lean<CachedVolume>, PersistentVolume>(None);
    same::<Lean<CachedNode>, Node>(None);
}

/// What `Api` and kube's watcher see of a decoded object: the metadata they read, nothing
/// more (the rest of the full object is never built), and the cached shape beside it.
#[test]
fn a_watched_object_carries_only_the_metadata_the_watcher_reads() {
    let mut claim = full_claim();
    claim["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update"}]);
    claim["metadata"]["labels"] = json!({"app": "db"});
    let l: Lean<CachedClaim> = lean(claim.clone());
    assert_eq!(
        l.metadata,
        ObjectMeta {
            name: Some("data".into()),
            namespace: Some("ns".into()),
            uid: Some("u-1".into()),
            resource_version: Some("42".into()),
            ..Default::default()
        }
    );
    assert_eq!(l.object, lean::<CachedClaim>(claim));
}

/// Values many objects hold alike point at one copy: two claims of a namespace and class share
/// those strings; names and uids are their own.
#[test]
fn common_values_are_shared_between_cached_objects() {
    let claim = |name: &str, uid: &str| -> CachedClaim {
        lean(json!({
            "metadata": {"name": name, "namespace": "team-a", "uid": uid,
                "annotations": {ANN_STORAGE_PROVISIONER: PROVISIONER_NFS}},
            "spec": {"storageClassName": "nfs", "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"},
        }))
    };
    let (a, b) = (claim("a", "u-a"), claim("b", "u-b"));
    let same = |x: &Option<Arc<str>>, y: &Option<Arc<str>>| {
        Arc::ptr_eq(x.as_ref().unwrap(), y.as_ref().unwrap())
    };
    assert!(same(&a.metadata.namespace, &b.metadata.namespace));
    assert!(same(&a.class, &b.class));
    assert!(same(&a.request, &b.request));
    assert!(same(&a.phase, &b.phase));
    assert!(same(&a.storage_provisioner, &b.storage_provisioner));
    assert!(Arc::ptr_eq(&a.access_modes, &b.access_modes));
    assert_eq!(
        (a.metadata.name.as_deref(), b.metadata.uid.as_deref()),
        (Some("a"), Some("u-b"))
    );
}
