//! Pure: the pod the operator creates for one ordinal of a PodManager.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::crd::PodManager;
use crate::plan::CONTAINER_NAME;
use crate::{LABEL_NAME, LABEL_UID};

/// Labels on every pod of `pm`: the PodManager's own labels (so `kubectl get pods -l app=...`
/// keeps working) overlaid with the owner labels, which always win.
pub fn pod_labels(pm: &PodManager) -> BTreeMap<String, String> {
    let mut labels = pm.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        LABEL_NAME.into(),
        pm.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        LABEL_UID.into(),
        pm.metadata.uid.clone().unwrap_or_default(),
    );
    labels
}

/// The pod named `name` for `pm`, controlled by it. `None` when `pm` has no uid yet (it has
/// not come from the API server), since an owner reference needs one.
pub fn pod_for(pm: &PodManager, name: &str) -> Option<Pod> {
    let mut owner = pm.controller_owner_ref(&())?;
    // Foreground deletion of the PodManager waits for its pods, as with controller-runtime's
    // SetControllerReference (needs update on podmanagers/finalizers, see RBAC).
    owner.block_owner_deletion = Some(true);
    Some(Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: pm.metadata.namespace.clone(),
            labels: Some(pod_labels(pm)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: CONTAINER_NAME.into(),
                image: Some(pm.spec.image.clone()),
                ..Container::default()
            }],
            restart_policy: Some("Always".into()),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// Whether `pod` is controlled by `pm` (controller owner reference with its uid).
pub fn is_controlled_by(pod: &Pod, pm: &PodManager) -> bool {
    let Some(uid) = pm.metadata.uid.as_deref() else {
        return false;
    };
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{mk_pm, mk_pod};

    #[test]
    fn pod_carries_owner_labels_over_the_podmanagers_own_labels() {
        let mut pm = mk_pm("my-pod-manager", 3, "nginx:1.21");
        pm.metadata.labels = Some(BTreeMap::from([
            ("app".to_string(), "my-app".to_string()),
            ("podmanager".to_string(), "spoofed".to_string()),
        ]));
        let pod = pod_for(&pm, "my-pod-manager-0").expect("pod");
        let labels = pod.metadata.labels.expect("labels");
        assert_eq!(labels["app"], "my-app");
        assert_eq!(labels["podmanager"], "my-pod-manager");
        assert_eq!(labels["podmanager-uid"], "uid-my-pod-manager");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.containers[0].name, "app");
        assert_eq!(spec.containers[0].image.as_deref(), Some("nginx:1.21"));
    }

    #[test]
    fn pod_has_a_controller_owner_reference_to_the_podmanager() {
        let pm = mk_pm("web", 1, "nginx:1.21");
        let pod = pod_for(&pm, "web-0").expect("pod");
        let owners = pod.metadata.owner_references.clone().expect("owners");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "PodManager");
        assert_eq!(owners[0].api_version, "apps.mycompany.com/v1");
        assert_eq!(owners[0].name, "web");
        assert_eq!(owners[0].uid, "uid-web");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        assert!(is_controlled_by(&pod, &pm));
        assert!(!is_controlled_by(&mk_pod("web-0"), &pm));
    }

    #[test]
    fn no_pod_without_a_podmanager_uid() {
        let mut pm = mk_pm("web", 1, "nginx:1.21");
        pm.metadata.uid = None;
        assert!(pod_for(&pm, "web-0").is_none());
    }
}
