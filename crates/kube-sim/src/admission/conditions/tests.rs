use serde_json::json;

use super::*;

/// The eviction-guard's shipped ValidatingWebhookConfiguration: its two webhooks.
fn guard_webhooks() -> (Value, Value) {
    let yaml = include_str!("../../../../../kustomize/eviction-guard/base/webhook.yaml");
    let config: Value = serde_yaml::from_str(yaml).unwrap();
    (config["webhooks"][0].clone(), config["webhooks"][1].clone())
}

fn review(fixture: &str) -> Value {
    serde_json::from_str::<Value>(fixture).unwrap()["request"].clone()
}

fn verdict(webhook: &Value, request: &Value) -> Verdict {
    let inputs = Inputs::new(
        request,
        Some(&request["object"]).filter(|o| !o.is_null()),
        Some(&request["oldObject"]).filter(|o| !o.is_null()),
    );
    check(&Programs::default(), webhook, &inputs)
}

fn status_update_ready_true() -> Value {
    review(include_str!(
        "../../../tests/data/pod-status-update-ready.json"
    ))
}

fn disruption_target() -> Value {
    review(include_str!(
        "../../../tests/data/pod-status-update-node-controller-disruption-target.json"
    ))
}

#[test]
fn the_node_controllers_disruption_target_update_reaches_the_guard() {
    let (_, status) = guard_webhooks();
    assert_eq!(verdict(&status, &disruption_target()), Verdict::Call);
}

#[test]
fn a_kubelets_status_update_never_reaches_the_guard() {
    let (_, status) = guard_webhooks();
    let mut req = disruption_target();
    req["userInfo"] = json!({"username": "system:node:node-1", "groups": ["system:nodes", "system:authenticated"]});
    assert_eq!(
        verdict(&status, &req),
        Verdict::Skip(Some("not-kubelet".into()))
    );
}

#[test]
fn a_status_update_marking_nothing_unready_is_not_sent() {
    let (_, status) = guard_webhooks();
    assert_eq!(
        verdict(&status, &status_update_ready_true()),
        Verdict::Skip(Some("marks-unready-or-failed".into()))
    );
    let mut failed = status_update_ready_true();
    failed["object"]["status"]["phase"] = json!("Failed");
    assert_eq!(verdict(&status, &failed), Verdict::Call);
}

#[test]
fn deletes_and_evictions_reach_the_guard_and_plain_updates_do_not() {
    let (deletions, _) = guard_webhooks();
    let delete = review(include_str!(
        "../../../tests/data/pod-delete-node-controller-taint-eviction.json"
    ));
    assert_eq!(
        verdict(&deletions, &delete),
        Verdict::Call,
        "object is null"
    );
    let eviction = review(include_str!("../../../tests/data/pod-eviction-create.json"));
    assert_eq!(verdict(&deletions, &eviction), Verdict::Call);

    let pod = delete["oldObject"].clone();
    let mut relabelled = pod.clone();
    relabelled["metadata"]["labels"]["team"] = json!("storage");
    let update = |object: &Value| {
        json!({"operation": "UPDATE", "userInfo": {"username": "admin"}, "name": "web-1",
               "object": object, "oldObject": pod})
    };
    assert_eq!(
        verdict(&deletions, &update(&relabelled)),
        Verdict::Skip(Some("update-adds-deletion".into()))
    );
    let mut marked = pod.clone();
    marked["metadata"]["deletionTimestamp"] = json!("2026-11-28T10:00:00Z");
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    assert_eq!(verdict(&deletions, &update(&marked)), Verdict::Call);
}

fn hook(policy: &str, expressions: &[&str]) -> Value {
    let conditions: Vec<Value> = expressions
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"name": format!("c{i}"), "expression": e}))
        .collect();
    json!({"name": "h.example.com", "failurePolicy": policy, "matchConditions": conditions,
           "clientConfig": {"url": "https://127.0.0.1:8443/validate"}})
}

fn configmap_create(labels: Option<Value>) -> Value {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
    if let Some(l) = labels {
        cm["metadata"]["labels"] = l;
    }
    json!({"operation": "CREATE", "name": "cm", "namespace": "ns",
           "userInfo": {"username": "admin"}, "object": cm})
}

#[test]
fn an_evaluation_error_refuses_under_fail_and_skips_under_ignore() {
    let expr = "object.metadata.labels.guarded == 'yes'";
    let unlabelled = configmap_create(None);
    let error = format!("expression '{expr}' resulted in error: no such key: labels");
    assert_eq!(
        verdict(&hook("Fail", &[expr]), &unlabelled),
        Verdict::Refuse(error.clone())
    );
    assert_eq!(
        verdict(&hook("Ignore", &[expr]), &unlabelled),
        Verdict::Skip(None)
    );
    // no failurePolicy means Fail
    let mut default = hook("Fail", &[expr]);
    default.as_object_mut().unwrap().remove("failurePolicy");
    assert_eq!(verdict(&default, &unlabelled), Verdict::Refuse(error));
    let labelled = configmap_create(Some(json!({"guarded": "yes"})));
    assert_eq!(verdict(&hook("Fail", &[expr]), &labelled), Verdict::Call);
}

#[test]
fn a_false_condition_skips_even_when_another_fails_to_evaluate() {
    let h = hook(
        "Fail",
        &[
            "object.metadata.labels.x == 'y'",
            "request.operation == 'DELETE'",
        ],
    );
    assert_eq!(
        verdict(&h, &configmap_create(None)),
        Verdict::Skip(Some("c1".into()))
    );
}

#[test]
fn several_errors_are_reported_together_like_an_aggregate() {
    let h = hook("Fail", &["object.spec.a == 1", "object.data.b == 2"]);
    assert_eq!(
        verdict(&h, &configmap_create(None)),
        Verdict::Refuse(
            "[expression 'object.spec.a == 1' resulted in error: no such key: spec, \
             expression 'object.data.b == 2' resulted in error: no such key: data]"
                .into()
        )
    );
}

#[test]
fn has_needs_the_parent_to_exist_and_non_bool_results_are_errors() {
    let cm = configmap_create(None);
    assert_eq!(
        verdict(&hook("Fail", &["has(object.metadata.labels)"]), &cm),
        Verdict::Skip(Some("c0".into()))
    );
    assert!(matches!(
        verdict(&hook("Fail", &["has(object.status.phase)"]), &cm),
        Verdict::Refuse(e) if e.ends_with("no such key: status")
    ));
    assert!(matches!(
        verdict(&hook("Fail", &["request.name"]), &cm),
        Verdict::Refuse(e) if e.contains("expected a bool")
    ));
}

#[test]
fn request_fields_are_those_of_the_admission_request() {
    let cm = configmap_create(None);
    let ok = [
        "request.operation == 'CREATE'",
        "request.userInfo.username == 'admin'",
        "request.name == 'cm' && request.namespace == 'ns'",
        "!has(request.object) && !has(request.uid)",
        "oldObject == null",
        "object.kind == 'ConfigMap'",
    ];
    assert_eq!(verdict(&hook("Fail", &ok), &cm), Verdict::Call);
}

#[test]
fn the_authorizer_is_not_simulated_and_says_so() {
    let expr = "authorizer.group('').resource('pods').check('delete').allowed()";
    assert_eq!(
        verdict(&hook("Fail", &[expr]), &configmap_create(None)),
        Verdict::Refuse(format!(
            "expression '{expr}' resulted in error: {AUTHORIZER_NOT_SIMULATED}"
        ))
    );
}

#[test]
fn configurations_with_expressions_that_do_not_compile_are_invalid() {
    let (deletions, status) = guard_webhooks();
    assert_eq!(
        crate::admission::validate_configuration(&json!({"webhooks": [deletions, status]})),
        Ok(())
    );
    let bad = json!({"webhooks": [hook("Fail", &["true"]), hook("Fail", &["true", "request.("])]});
    let err = crate::admission::validate_configuration(&bad).unwrap_err();
    assert!(
        err.starts_with(
            "webhooks[1].matchConditions[1].expression: Invalid value: \"request.(\": compilation failed: ERROR: <input>:1:"
        ),
        "{err}"
    );
    assert_eq!(
        crate::admission::validate_configuration(&json!({"webhooks": [hook("Fail", &[" "])]})),
        Err("webhooks[0].matchConditions[0].expression: Required value".into())
    );
}

#[test]
fn each_expression_is_compiled_once() {
    let programs = Programs::default();
    let a = programs.get("request.operation == 'CREATE'");
    let b = programs.get("request.operation == 'CREATE'");
    assert!(Arc::ptr_eq(&a, &b));
    assert!(programs.get("(").is_err());
}
