//! Objects the benchmarks create, shaped like a real cluster's (pure builders).

use serde_json::{Value, json};

/// A worker node as a kubelet registers it: labels, annotations, managed fields, conditions,
/// addresses, node info and the image list (what makes real Node objects 10–15 KB).
pub fn node(name: &str, i: usize) -> Value {
    let zone = ["zone-a", "zone-b", "zone-c"][i % 3];
    let t = "2026-11-28T10:00:00Z";
    let images: Vec<Value> = (0..30)
        .map(|k| {
            json!({
                "names": [
                    format!("registry.example.com/team-{k}/service-{k}@sha256:{:064x}", k * 7919 + 1),
                    format!("registry.example.com/team-{k}/service-{k}:v1.{k}.0"),
                ],
                "sizeBytes": 20_000_000 + k * 1_048_576,
            })
        })
        .collect();
    let cond = |ty: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": msg,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "node.kubernetes.io/instance-type": "m5.xlarge",
                "topology.kubernetes.io/region": "eu-west-1",
                "topology.kubernetes.io/zone": zone,
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "csi.volume.kubernetes.io/nodeid": format!("{{\"ebs.csi.aws.com\":\"i-{i:017x}\"}}"),
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock",
            },
            "managedFields": [
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": t,
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {
                     ".": {}, "f:node.alpha.kubernetes.io/ttl": {},
                     "f:volumes.kubernetes.io/controller-managed-attach-detach": {}},
                     "f:labels": {".": {}, "f:kubernetes.io/arch": {}, "f:kubernetes.io/hostname": {},
                     "f:kubernetes.io/os": {}}}, "f:spec": {"f:providerID": {}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": t,
                 "fieldsType": "FieldsV1", "subresource": "status", "fieldsV1": {"f:status": {
                     "f:conditions": {"k:{\"type\":\"Ready\"}": {"f:lastHeartbeatTime": {},
                     "f:lastTransitionTime": {}, "f:message": {}, "f:reason": {}, "f:status": {}}},
                     "f:images": {}, "f:nodeInfo": {"f:bootID": {}}}}}
            ],
        },
        "spec": {
            "podCIDR": format!("10.{}.{}.0/24", i / 256 % 256, i % 256),
            "podCIDRs": [format!("10.{}.{}.0/24", i / 256 % 256, i % 256)],
            "providerID": format!("aws:///eu-west-1a/i-{i:017x}"),
        },
        "status": {
            "capacity": {"cpu": "4", "memory": "16101152Ki", "pods": "110",
                         "ephemeral-storage": "104845292Ki", "hugepages-2Mi": "0"},
            "allocatable": {"cpu": "3920m", "memory": "15083296Ki", "pods": "110",
                            "ephemeral-storage": "95551679124", "hugepages-2Mi": "0"},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": format!("10.0.{}.{}", i / 250 % 250, i % 250 + 1)},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{i:032x}"), "systemUUID": format!("ec2{i:029x}"),
                "bootID": format!("{:032x}", i * 31), "kernelVersion": "6.1.0-28-cloud-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)", "containerRuntimeVersion": "containerd://1.7.24",
                "kubeletVersion": "v1.36.0", "kubeProxyVersion": "v1.36.0",
                "operatingSystem": "linux", "architecture": "amd64",
            },
            "images": images,
        },
    })
}

/// A claim of `class`.
pub fn claim(name: &str, class: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteMany"],
                 "resources": {"requests": {"storage": "1Mi"}}},
    })
}

/// A volume for static provisioning, reserved for claim `namespace/claim` (`claimRef` without a
/// uid, as an administrator writes one).
pub fn static_volume(name: &str, class: &str, namespace: &str, claim: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class,
                 "claimRef": {"namespace": namespace, "name": claim},
                 "hostPath": {"path": format!("/srv/volumes/{name}")}},
    })
}

/// A claim of `class` naming volume `volume`, shaped like one `kubectl apply` created and the
/// PV controller bound on a real cluster: the last-applied copy and the managed fields of
/// kubectl and kube-controller-manager (kube-sim keeps what a client sends and adds none).
pub fn static_claim(name: &str, class: &str, volume: &str) -> Value {
    let t = "2026-11-28T10:00:00Z";
    let applied = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"annotations": {}, "labels": {"app": "bench"}, "name": name,
                     "namespace": "bench"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "storageClassName": class, "volumeName": volume},
    });
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "labels": {"app": "bench"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": format!("{applied}\n"),
            },
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                 "time": t, "fieldsType": "FieldsV1", "fieldsV1": {
                     "f:metadata": {"f:annotations": {".": {},
                         "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                         "f:labels": {".": {}, "f:app": {}}},
                     "f:spec": {"f:accessModes": {}, "f:resources": {"f:requests": {".": {},
                         "f:storage": {}}}, "f:storageClassName": {}, "f:volumeMode": {},
                         "f:volumeName": {}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": t, "fieldsType": "FieldsV1", "fieldsV1": {
                     "f:metadata": {"f:annotations": {"f:pv.kubernetes.io/bind-completed": {}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                 "time": t, "fieldsType": "FieldsV1", "subresource": "status", "fieldsV1": {
                     "f:status": {"f:accessModes": {}, "f:capacity": {".": {}, "f:storage": {}},
                         "f:phase": {}}}},
            ],
        },
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}, "volumeName": volume},
    })
}

/// A pod mounting claim `claim`.
pub fn pod_with_claim(name: &str, claim: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "containers": [{"name": "app", "image": "registry.example.com/app:1",
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    })
}

/// A PodManager of `replicas` pods.
pub fn podmanager(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps.mycompany.com/v1", "kind": "PodManager",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "image": "registry.example.com/app:1"},
    })
}

/// PodManagers `pm0000`, `pm0001`, … of 3 pods each: the controller runs' `n`.
pub fn podmanagers(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| podmanager(&format!("pm{i:04}"), 3))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_as_large_as_real_ones_and_ready() {
        let n = node("node-7", 7);
        let size = serde_json::to_vec(&n).unwrap().len();
        assert!((8_000..16_000).contains(&size), "{size} bytes");
        assert_eq!(n["status"]["conditions"][3]["type"], "Ready");
        assert_eq!(n["status"]["conditions"][3]["status"], "True");
        assert_eq!(
            n["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "zone-b"
        );
    }

    #[test]
    fn a_static_claim_names_the_volume_reserved_for_it() {
        let c = static_claim("c00001", "manual", "pv-00001");
        let v = static_volume("pv-00001", "manual", "bench", "c00001");
        assert_eq!(c["spec"]["volumeName"], v["metadata"]["name"]);
        assert_eq!(v["spec"]["claimRef"]["name"], c["metadata"]["name"]);
        assert_eq!(c["spec"]["storageClassName"], v["spec"]["storageClassName"]);
        let size = serde_json::to_vec(&c).unwrap().len();
        assert!((1_500..4_000).contains(&size), "{size} bytes");
    }
}
