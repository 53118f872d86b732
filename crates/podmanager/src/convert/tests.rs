use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ContainerPort, EnvVar, PodSecurityContext, ResourceRequirements, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use proptest::prelude::*;

use super::*;

fn v1_object(spec: Value, annotations: Option<Value>) -> Value {
    let mut o = json!({"apiVersion": V1, "kind": "PodManager",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
        "spec": spec, "status": {"readyReplicas": 1, "currentReplicas": 2}});
    if let Some(a) = annotations {
        o["metadata"]["annotations"] = a;
    }
    o
}

#[test]
fn a_v1_object_reads_as_v2_with_one_app_container_running_its_image() {
    let v1 = v1_object(json!({"replicas": 2, "image": "nginx:1.27"}), None);
    let v2 = convert(&v1, V2).unwrap();
    assert_eq!(v2["apiVersion"], V2);
    assert_eq!(
        v2["spec"],
        json!({"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}})
    );
    assert_eq!(v2["metadata"], v1["metadata"]);
    assert_eq!(v2["status"], v1["status"]);
    assert_eq!(convert(&v2, V1).unwrap(), v1);
}

#[test]
fn what_v1_cannot_express_is_kept_in_an_annotation_without_the_image() {
    let v2 = json!({"apiVersion": V2, "kind": "PodManager", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "template": {
            "metadata": {"labels": {"tier": "front"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "env": [{"name": "MODE", "value": "fast"}]}],
                     "nodeSelector": {"disk": "ssd"}}}}});
    let v1 = convert(&v2, V1).unwrap();
    assert_eq!(v1["spec"], json!({"replicas": 3, "image": "nginx:1.27"}));
    let kept: Value = serde_json::from_str(
        v1["metadata"]["annotations"][TEMPLATE_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        kept,
        json!({"metadata": {"labels": {"tier": "front"}},
               "spec": {"containers": [{"name": "web", "image": "", "env": [{"name": "MODE", "value": "fast"}]}],
                        "nodeSelector": {"disk": "ssd"}}})
    );
    // A v1 edit of the image shows in v2, with everything else kept.
    let mut edited = v1.clone();
    edited["spec"]["image"] = json!("nginx:1.28");
    let back = convert(&edited, V2).unwrap();
    assert_eq!(
        back["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.28"
    );
    assert_eq!(
        back["spec"]["template"]["spec"]["nodeSelector"],
        json!({"disk": "ssd"})
    );
    assert!(back["metadata"].get("annotations").is_none());
}

#[test]
fn unreadable_input_is_an_error_naming_the_object() {
    let bad = v1_object(
        json!({"replicas": 1, "image": "x"}),
        Some(json!({TEMPLATE_ANNOTATION: "{not json"})),
    );
    let err = convert(&bad, V2).unwrap_err();
    assert!(
        err.to_string().starts_with(
            "failed to read annotation podmanager.ballast.dev/v2-template of shop/web: "
        ),
        "{err}"
    );
    let empty = json!({"apiVersion": V2, "metadata": {"name": "e", "namespace": "n"},
                       "spec": {"replicas": 1, "template": {"spec": {"containers": []}}}});
    assert_eq!(
        convert(&empty, V1).unwrap_err().to_string(),
        "n/e has no containers in spec.template.spec.containers"
    );
    assert_eq!(
        convert(&empty, "apps.mycompany.com/v3")
            .unwrap_err()
            .to_string(),
        "cannot convert apps.mycompany.com/v2 to apps.mycompany.com/v3: unsupported versions"
    );
}

#[test]
fn a_review_answers_every_object_or_fails_with_the_reason() {
    let v1 = v1_object(json!({"replicas": 1, "image": "nginx"}), None);
    let ok = review(
        &json!({"request": {"uid": "abc", "desiredAPIVersion": V2, "objects": [v1.clone()]}}),
    );
    assert_eq!(ok["apiVersion"], "apiextensions.k8s.io/v1");
    assert_eq!(ok["kind"], "ConversionReview");
    assert_eq!(ok["response"]["uid"], "abc");
    assert_eq!(ok["response"]["result"]["status"], "Success");
    assert_eq!(ok["response"]["convertedObjects"][0]["apiVersion"], V2);
    let failed =
        review(&json!({"request": {"uid": "abc", "desiredAPIVersion": "x/v9", "objects": [v1]}}));
    assert_eq!(failed["response"]["result"]["status"], "Failure");
    assert_eq!(
        failed["response"]["result"]["message"],
        "cannot convert apps.mycompany.com/v1 to x/v9: unsupported versions"
    );
}

// Generated objects: every field the template subset has, in canonical form.

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9-]{0,6}[a-z0-9])?"
}

fn image() -> impl Strategy<Value = String> {
    "[a-z]{1,6}(/[a-z]{1,6})?(:[0-9]{1,2}\\.[0-9]{1,2})?"
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-z]{1,6}(\\.io/[a-z]{1,4})?", "[a-z0-9]{0,6}", 0..3)
}

fn security_context() -> impl Strategy<Value = Option<SecurityContext>> {
    prop::option::of(
        (
            prop::option::of(any::<bool>()),
            prop::option::of(1000i64..70000),
            prop::option::of(any::<bool>()),
            any::<bool>(),
        )
            .prop_map(|(non_root, user, escalation, drop_all)| SecurityContext {
                run_as_non_root: non_root,
                run_as_user: user,
                allow_privilege_escalation: escalation,
                capabilities: drop_all.then(|| Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
    )
}

fn resources() -> impl Strategy<Value = Option<ResourceRequirements>> {
    prop::option::of(
        ("[1-9][0-9]{0,2}m", "[1-9][0-9]{0,2}Mi").prop_map(|(cpu, mem)| ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".to_string(), Quantity(cpu))])),
            limits: Some(BTreeMap::from([("memory".to_string(), Quantity(mem))])),
            ..ResourceRequirements::default()
        }),
    )
}

fn container() -> impl Strategy<Value = v2::TemplateContainer> {
    (
        dns_label(),
        image(),
        prop::collection::vec("[a-z/-]{1,8}", 0..3),
        prop::collection::vec("[a-z0-9=-]{0,8}", 0..3),
        prop::collection::vec(("[A-Z][A-Z_]{0,6}", "[a-z0-9 ]{0,8}"), 0..3),
        prop::collection::vec((1i32..65535, prop::option::of(dns_label())), 0..3),
        resources(),
        security_context(),
    )
        .prop_map(
            |(name, image, command, args, env, ports, resources, security_context)| {
                v2::TemplateContainer {
                    name,
                    image,
                    command,
                    args,
                    env: env
                        .into_iter()
                        .map(|(name, value)| EnvVar {
                            name,
                            value: Some(value),
                            ..EnvVar::default()
                        })
                        .collect(),
                    ports: ports
                        .into_iter()
                        .map(|(container_port, name)| ContainerPort {
                            container_port,
                            name,
                            ..ContainerPort::default()
                        })
                        .collect(),
                    resources,
                    security_context,
                }
            },
        )
}

fn template() -> impl Strategy<Value = v2::PodTemplate> {
    (
        prop::option::of(string_map()),
        prop::collection::vec(container(), 1..3),
        prop::option::of((any::<bool>(), prop::option::of(1000i64..70000))),
        string_map(),
    )
        .prop_map(
            |(labels, containers, pod_sc, node_selector)| v2::PodTemplate {
                metadata: labels.map(|labels| v2::TemplateMetadata { labels }),
                spec: v2::TemplateSpec {
                    containers,
                    security_context: pod_sc.map(|(non_root, fs_group)| PodSecurityContext {
                        run_as_non_root: Some(non_root),
                        fs_group,
                        ..PodSecurityContext::default()
                    }),
                    node_selector,
                },
            },
        )
}

/// Metadata without the conversion's own annotation, maybe with others.
fn metadata() -> impl Strategy<Value = Value> {
    (dns_label(), string_map(), string_map()).prop_map(|(name, labels, annotations)| {
        let mut m = json!({"name": name, "namespace": "ns", "uid": "u", "resourceVersion": "7"});
        if !labels.is_empty() {
            m["labels"] = json!(labels);
        }
        if !annotations.is_empty() {
            m["annotations"] = json!(annotations);
        }
        m
    })
}

fn status() -> impl Strategy<Value = Option<Value>> {
    prop::option::of((0i32..10, 0i32..10).prop_map(|(ready, current)| {
        json!({"readyReplicas": ready, "currentReplicas": current, "selector": "podmanager=x"})
    }))
}

fn with_status(mut o: Value, status: Option<Value>) -> Value {
    if let Some(s) = status {
        o["status"] = s;
    }
    o
}

proptest! {
    #[test]
    fn v2_to_v1_to_v2_is_the_identity(
        meta in metadata(), replicas in 1i32..=v2::MAX_REPLICAS, template in template(), status in status()
    ) {
        let spec = v2::PodManagerSpec { replicas, template };
        let original = with_status(
            json!({"apiVersion": V2, "kind": "PodManager", "metadata": meta, "spec": spec}),
            status,
        );
        let hub = convert(&original, V1).unwrap();
        prop_assert_eq!(&hub["apiVersion"], V1);
        let back = convert(&hub, V2).unwrap();
        prop_assert_eq!(back, original);
    }

    #[test]
    fn v1_to_v2_to_v1_is_the_identity(
        meta in metadata(), replicas in 1i32..=1000, image in image(),
        kept in prop::option::of(template()), status in status()
    ) {
        let mut original = with_status(
            json!({"apiVersion": V1, "kind": "PodManager", "metadata": meta,
                   "spec": {"replicas": replicas, "image": image}}),
            status,
        );
        // A kept template is stored without the first container's image, and only when it says
        // more than the image alone.
        if let Some(mut t) = kept {
            t.spec.containers[0].image.clear();
            if t != default_template("") {
                original["metadata"]["annotations"][TEMPLATE_ANNOTATION] =
                    json!(serde_json::to_string(&t).unwrap());
            }
        }
        let spoke = convert(&original, V2).unwrap();
        prop_assert_eq!(&spoke["apiVersion"], V2);
        prop_assert!(spoke["metadata"]["annotations"].get(TEMPLATE_ANNOTATION).is_none());
        let back = convert(&spoke, V1).unwrap();
        prop_assert_eq!(back, original);
    }
}
