//! Pure: the pod the operator creates for one ordinal of a PodManager, from its pod template
//! (v2's `spec.template`, kept on v1 objects in an annotation; just `spec.image` otherwise).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, Pod, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde_json::Value;

use crate::convert;
use crate::crd::PodManager;
use crate::crd::v2::{PodTemplate, TemplateContainer};
use crate::{LABEL_NAME, LABEL_UID};

/// Label with a hash of the template a pod was made from: pods with another hash are rolled.
pub const LABEL_TEMPLATE_HASH: &str = "podmanager.ballast.dev/template-hash";

/// The pod template of `pm`: the kept v2 template running `spec.image`, or one `app` container.
/// An unreadable annotation falls back to the image alone (and is logged).
pub fn template_of(pm: &PodManager) -> PodTemplate {
    let annotations = pm
        .metadata
        .annotations
        .as_ref()
        .map(|a| serde_json::to_value(a).unwrap_or(Value::Null));
    let name = format!(
        "{}/{}",
        pm.metadata.namespace.as_deref().unwrap_or_default(),
        pm.metadata.name.as_deref().unwrap_or_default()
    );
    convert::template_of_v1(&pm.spec, annotations.as_ref(), &name).unwrap_or_else(|e| {
        tracing::warn!(podmanager = %name, error = %e, "ignoring the kept v2 template");
        convert::default_template(&pm.spec.image)
    })
}

/// A short, stable hash of a template (FNV-1a over its JSON): the same in every process.
pub fn template_hash(template: &PodTemplate) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let text = serde_json::to_string(template).unwrap_or_default();
    let hash = text
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    format!("{:010x}", hash & 0xff_ffff_ffff)
}

/// Label the seed's pods carry (`kubectl get pods -l app=<name>`), set when no other gives it.
pub const LABEL_APP: &str = "app";

/// Labels on every pod of `pm`: the PodManager's own labels (so `kubectl get pods -l app=...`
/// keeps working) and the template's, `app=<name>` when neither has `app`, overlaid with the
/// owner labels, which always win.
pub fn pod_labels(pm: &PodManager) -> BTreeMap<String, String> {
    let template = template_of(pm);
    let mut labels = pm.metadata.labels.clone().unwrap_or_default();
    if let Some(meta) = &template.metadata {
        labels.extend(meta.labels.clone());
    }
    if !labels.contains_key(LABEL_APP) {
        labels.insert(
            LABEL_APP.into(),
            pm.metadata.name.clone().unwrap_or_default(),
        );
    }
    labels.insert(
        LABEL_NAME.into(),
        pm.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        LABEL_UID.into(),
        pm.metadata.uid.clone().unwrap_or_default(),
    );
    labels.insert(LABEL_TEMPLATE_HASH.into(), template_hash(&template));
    labels
}

/// The Pod Security `restricted` settings that cannot break an image: the runtime's default
/// seccomp profile for the pod, and no privilege escalation for each container, unless the
/// template says otherwise. `runAsNonRoot` and dropping ALL capabilities would break images that
/// run as root or bind low ports (nginx), so the template must ask for them.
fn restricted_pod_defaults(sc: Option<&PodSecurityContext>) -> PodSecurityContext {
    let mut sc = sc.cloned().unwrap_or_default();
    if sc.seccomp_profile.is_none() {
        sc.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        });
    }
    sc
}

fn restricted_container_defaults(sc: Option<&SecurityContext>) -> SecurityContext {
    let mut sc = sc.cloned().unwrap_or_default();
    if sc.allow_privilege_escalation.is_none() && sc.privileged != Some(true) {
        sc.allow_privilege_escalation = Some(false);
    }
    sc
}

fn container(c: &TemplateContainer) -> Container {
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    Container {
        name: c.name.clone(),
        image: Some(c.image.clone()),
        command: non_empty(&c.command),
        args: non_empty(&c.args),
        env: (!c.env.is_empty()).then(|| c.env.clone()),
        ports: (!c.ports.is_empty()).then(|| c.ports.clone()),
        resources: c.resources.clone(),
        security_context: Some(restricted_container_defaults(c.security_context.as_ref())),
        ..Container::default()
    }
}

/// The pod named `name` for `pm`, controlled by it. `None` when `pm` has no uid yet (it has
/// not come from the API server), since an owner reference needs one.
pub fn pod_for(pm: &PodManager, name: &str) -> Option<Pod> {
    let mut owner = pm.controller_owner_ref(&())?;
    // Foreground deletion of the PodManager waits for its pods, as with controller-runtime's
    // SetControllerReference (needs update on podmanagers/finalizers, see RBAC).
    owner.block_owner_deletion = Some(true);
    let template = template_of(pm);
    let spec = &template.spec;
    Some(Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: pm.metadata.namespace.clone(),
            labels: Some(pod_labels(pm)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: spec.containers.iter().map(container).collect(),
            security_context: Some(restricted_pod_defaults(spec.security_context.as_ref())),
            node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
            restart_policy: Some("Always".into()),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// Whether `pod` is controlled by `pm` (controller owner reference with its uid).
pub fn is_controlled_by(pod: &impl kube::Resource, pm: &PodManager) -> bool {
    let Some(uid) = pm.metadata.uid.as_deref() else {
        return false;
    };
    pod.meta()
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
        assert_eq!(
            labels[LABEL_TEMPLATE_HASH],
            template_hash(&convert::default_template("nginx:1.21"))
        );
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
    fn a_kept_v2_template_makes_the_pod_with_v1s_image() {
        let mut pm = mk_pm("web", 1, "nginx:1.28");
        let kept = serde_json::json!({"metadata": {"labels": {"tier": "front"}},
            "spec": {"containers": [
                {"name": "web", "image": "", "args": ["--fast"], "env": [{"name": "MODE", "value": "x"}]},
                {"name": "sidecar", "image": "busybox:1.36"}],
                "securityContext": {"runAsNonRoot": true}, "nodeSelector": {"disk": "ssd"}}});
        pm.metadata.annotations = Some(BTreeMap::from([(
            convert::TEMPLATE_ANNOTATION.to_string(),
            kept.to_string(),
        )]));
        let pod = pod_for(&pm, "web-0").expect("pod");
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["tier"], "front");
        let spec = pod.spec.expect("spec");
        let containers: Vec<(&str, Option<&str>)> = spec
            .containers
            .iter()
            .map(|c| (c.name.as_str(), c.image.as_deref()))
            .collect();
        assert_eq!(
            containers,
            [
                ("web", Some("nginx:1.28")),
                ("sidecar", Some("busybox:1.36"))
            ]
        );
        assert_eq!(spec.containers[0].args, Some(vec!["--fast".to_string()]));
        let pod_sc = spec.security_context.expect("pod securityContext");
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(
            pod_sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        assert_eq!(spec.node_selector.unwrap()["disk"], "ssd");
    }

    #[test]
    fn pods_get_app_and_the_restricted_defaults_that_keep_the_image_working() {
        let mut pm = mk_pm("web", 1, "nginx:1.21");
        let pod = pod_for(&pm, "web-0").expect("pod");
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[LABEL_APP], "web");
        let spec = pod.spec.expect("spec");
        let sc = spec.security_context.expect("pod securityContext");
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        assert_eq!(sc.run_as_non_root, None, "nginx runs as root");
        let csc = spec.containers[0]
            .security_context
            .clone()
            .expect("container securityContext");
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(csc.capabilities, None, "nginx binds port 80");
        // What the template asks for wins.
        let kept = serde_json::json!({"spec": {"containers": [{"name": "app", "image": "",
            "securityContext": {"privileged": true}}],
            "securityContext": {"seccompProfile": {"type": "Unconfined"}}}});
        pm.metadata.annotations = Some(BTreeMap::from([(
            convert::TEMPLATE_ANNOTATION.to_string(),
            kept.to_string(),
        )]));
        pm.metadata.labels = Some(BTreeMap::from([("app".into(), "shop".into())]));
        let pod = pod_for(&pm, "web-0").expect("pod");
        assert_eq!(pod.metadata.labels.as_ref().unwrap()[LABEL_APP], "shop");
        let spec = pod.spec.expect("spec");
        assert_eq!(
            spec.security_context
                .and_then(|s| s.seccomp_profile)
                .map(|p| p.type_)
                .as_deref(),
            Some("Unconfined")
        );
        let csc = spec.containers[0].security_context.clone().expect("sc");
        assert_eq!(
            (csc.privileged, csc.allow_privilege_escalation),
            (Some(true), None)
        );
    }

    #[test]
    fn the_template_hash_changes_with_any_template_field() {
        let a = convert::default_template("nginx:1.21");
        let mut b = a.clone();
        b.spec.containers[0].args = vec!["-v".into()];
        assert_ne!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_eq!(template_hash(&a).len(), 10);
    }

    #[test]
    fn no_pod_without_a_podmanager_uid() {
        let mut pm = mk_pm("web", 1, "nginx:1.21");
        pm.metadata.uid = None;
        assert!(pod_for(&pm, "web-0").is_none());
    }
}
