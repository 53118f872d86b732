use super::*;

fn crd(conversion: Value) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "conversion": conversion,
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"a": {"type": "integer", "default": 1}}}}}}},
                {"name": "v2", "served": true, "storage": false,
                 "subresources": {"scale": {"specReplicasPath": ".spec.b", "statusReplicasPath": ".status.b"}},
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"b": {"type": "integer", "minimum": 1}}}}}}}
            ]
        }
    })
}

fn review_fixture() -> Value {
    serde_json::from_str(include_str!(
        "../../tests/data/real-api/conversion-review-request.json"
    ))
    .unwrap()
}

#[test]
fn reads_storage_version_schemas_scale_and_webhook_from_the_crd() {
    let info = CrdInfo::from_crd(&crd(json!({"strategy": "Webhook", "webhook": {
        "conversionReviewVersions": ["v1"],
        "clientConfig": {"url": "https://127.0.0.1:9443/convert", "caBundle": "Q0E="}}})))
    .unwrap();
    assert_eq!(info.storage_version, "v1");
    assert_eq!(info.storage_api_version(), "example.com/v1");
    assert_eq!(
        info.conversion,
        Conversion::Webhook {
            url: Some("https://127.0.0.1:9443/convert".into()),
            service: None,
            ca_bundle: "Q0E=".into()
        }
    );
    assert_eq!(
        info.versions[1].scale.as_ref().unwrap().spec_replicas_path,
        ".spec.b"
    );
    let none = CrdInfo::from_crd(&crd(json!({"strategy": "None"}))).unwrap();
    assert_eq!(none.conversion, Conversion::None);
}

#[test]
fn decode_and_validate_use_the_schema_of_the_named_version() {
    let info = CrdInfo::from_crd(&crd(json!({"strategy": "None"}))).unwrap();
    let mut obj = json!({"metadata": {"name": "t"}, "spec": {"b": 0}});
    assert_eq!(info.decode("v1", &mut obj), vec!["spec.b"]);
    assert_eq!(obj["spec"], json!({"a": 1}));
    let obj = json!({"metadata": {"name": "t"}, "spec": {"b": 0}});
    let err = info.validate("v2", &obj, None).unwrap_err();
    assert_eq!(
        err.message,
        "Thing.example.com \"t\" is invalid: spec.b: Invalid value: 0: spec.b in body should be greater than or equal to 1"
    );
}

#[test]
fn versions_sort_like_kubernetes_discovery() {
    let mut vs = vec!["v1alpha1", "foo", "v1", "v2beta1", "v2", "v1beta2", "v10"];
    vs.sort_by(|a, b| compare_versions(a, b));
    assert_eq!(
        vs,
        vec!["v10", "v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]
    );
}

#[test]
fn the_review_request_has_the_real_servers_shape() {
    let fx = review_fixture();
    let req = &fx["request"];
    let ours = review_request(
        req["uid"].as_str().unwrap(),
        req["desiredAPIVersion"].as_str().unwrap(),
        req["objects"].as_array().unwrap(),
    );
    assert_eq!(ours, fx);
}

#[test]
fn webhook_answers_are_checked_like_the_api_server_checks_them() {
    let ok = |objs: Value| {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
               "response": {"uid": "u1", "result": {"status": "Success"}, "convertedObjects": objs}})
    };
    assert_eq!(
        converted_objects("u1", &ok(json!([{"a": 1}]))).unwrap(),
        vec![json!({"a": 1})]
    );
    assert_eq!(
        converted_objects("u2", &ok(json!([]))).unwrap_err(),
        "expected response.uid=\"u2\", got \"u1\""
    );
    let failed = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
        "response": {"uid": "u1", "result": {"status": "Failure", "message": "cannot convert spec.x"}}});
    assert_eq!(
        converted_objects("u1", &failed).unwrap_err(),
        "cannot convert spec.x"
    );
    let wrong = json!({"apiVersion": "v1", "kind": "Status"});
    assert_eq!(
        converted_objects("u1", &wrong).unwrap_err(),
        "expected webhook response of apiextensions.k8s.io/v1, Kind=ConversionReview, got v1, Kind=Status"
    );
}

#[test]
fn converted_objects_keep_the_original_metadata_except_labels_and_annotations() {
    let original = json!({"apiVersion": "example.com/v1", "kind": "Thing",
        "metadata": {"name": "t", "namespace": "ns", "uid": "1", "resourceVersion": "5", "labels": {"a": "1"}}});
    let converted = json!({"apiVersion": "example.com/v2", "kind": "Thing",
        "metadata": {"name": "t", "namespace": "ns", "uid": "1", "resourceVersion": "99", "annotations": {"x": "y"}}, "spec": {}});
    let out = accept_converted(&original, converted).unwrap();
    assert_eq!(
        out["metadata"],
        json!({"name": "t", "namespace": "ns", "uid": "1", "resourceVersion": "5", "annotations": {"x": "y"}})
    );
    let renamed = json!({"metadata": {"name": "other", "namespace": "ns", "uid": "1"}});
    assert_eq!(
        accept_converted(&original, renamed).unwrap_err(),
        "must have the same name: t != other"
    );
}

#[test]
fn webhook_urls_get_the_timeout_query() {
    assert_eq!(
        with_timeout_query("https://h:1/convert", Duration::from_secs(30)),
        "https://h:1/convert?timeout=30s"
    );
    assert_eq!(
        with_timeout_query("https://h:1/convert?x=1", Duration::from_secs(30)),
        "https://h:1/convert?x=1&timeout=30s"
    );
}
