use super::*;

/// The schema of `apps.mycompany.com/v1` PodManager, as the real fixtures were taken with.
fn podmanager_schema() -> Value {
    json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "minLength": 1},
                    "replicas": {"type": "integer", "format": "int32", "minimum": 1.0, "default": 3}
                }
            },
            "status": {
                "type": "object",
                "nullable": true,
                "properties": {
                    "currentReplicas": {"type": "integer", "format": "int32", "default": 0},
                    "selector": {"type": "string", "nullable": true}
                }
            }
        }
    })
}

fn scale() -> ScaleSpec {
    ScaleSpec {
        spec_replicas_path: ".spec.replicas".into(),
        status_replicas_path: ".status.currentReplicas".into(),
        label_selector_path: Some(".status.selector".into()),
    }
}

fn fixture(name: &str) -> Value {
    let text = match name {
        "defaulted" => include_str!("../../tests/data/real-api/crd-create-defaulted.json"),
        "replicas-0" => include_str!("../../tests/data/real-api/crd-create-replicas-0.json"),
        "wrong-type" => include_str!("../../tests/data/real-api/crd-create-wrong-type.json"),
        "pruned" => include_str!("../../tests/data/real-api/crd-create-unknown-field-pruned.json"),
        "scale-0" => include_str!("../../tests/data/real-api/crd-scale-to-0.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap()
}

/// What the API server does to a create body: prune, default, validate (schema then scale).
fn admit(body: &Value) -> Result<Value, ApiError> {
    let mut obj = body.clone();
    let schema = podmanager_schema();
    prune(&mut obj, &schema);
    apply_defaults(&mut obj, &schema);
    let mut errs = validate(&obj, &schema);
    errs.extend(validate_scale(&obj, &scale(), true));
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if errs.is_empty() {
        Ok(obj)
    } else {
        Err(invalid("PodManager", "apps.mycompany.com", &name, &errs))
    }
}

fn status_of(e: &ApiError) -> Value {
    let mut s = e.to_status();
    s.as_object_mut().unwrap().remove("metadata");
    s
}

fn expected_status(fx: &Value) -> Value {
    let mut s = fx["body"].clone();
    s.as_object_mut().unwrap().remove("metadata");
    s
}

#[test]
fn defaults_replicas_to_three_like_the_real_server() {
    let fx = fixture("defaulted");
    let out = admit(&fx["request"]["body"]).unwrap();
    assert_eq!(out["spec"], fx["body"]["spec"]);
}

#[test]
fn replicas_zero_is_refused_with_the_real_message_and_cause() {
    let fx = fixture("replicas-0");
    let err = admit(&fx["request"]["body"]).unwrap_err();
    assert_eq!(err.code, 422);
    assert_eq!(status_of(&err), expected_status(&fx));
}

#[test]
fn a_string_for_an_integer_gives_the_type_error_and_the_scale_accessor_error() {
    let fx = fixture("wrong-type");
    let err = admit(&fx["request"]["body"]).unwrap_err();
    assert_eq!(status_of(&err), expected_status(&fx));
}

#[test]
fn unknown_fields_are_pruned_and_reported() {
    let fx = fixture("pruned");
    let mut obj = fx["request"]["body"].clone();
    obj["metadata"]["bogusMeta"] = json!("x");
    let pruned = prune(&mut obj, &podmanager_schema());
    assert_eq!(pruned, vec!["metadata.bogusMeta", "spec.bogus"]);
    let out = admit(&obj).unwrap();
    assert_eq!(out["spec"], fx["body"]["spec"]);
    assert_eq!(out["metadata"], json!({"name": "pm-extra"}));
}

#[test]
fn scale_to_zero_is_refused_like_a_create() {
    let fx = fixture("scale-0");
    let mut obj = json!({"apiVersion": "apps.mycompany.com/v1", "kind": "PodManager",
                         "metadata": {"name": "pm-default"}, "spec": {"image": "nginx", "replicas": 3}});
    obj["spec"]["replicas"] = fx["request"]["body"]["spec"]["replicas"].clone();
    let err = admit(&obj).unwrap_err();
    assert_eq!(status_of(&err), expected_status(&fx));
}

#[test]
fn preserve_unknown_fields_keeps_them_and_properties_inside_are_still_pruned() {
    let schema = json!({"type": "object", "properties": {"spec": {
        "type": "object", "x-kubernetes-preserve-unknown-fields": true,
        "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}}}});
    let mut obj = json!({"spec": {"free": {"x": 1}, "known": {"a": "1", "b": 2}}, "top": 1});
    let pruned = prune(&mut obj, &schema);
    assert_eq!(pruned, vec!["spec.known.b", "top"]);
    assert_eq!(
        obj,
        json!({"spec": {"free": {"x": 1}, "known": {"a": "1"}}})
    );
}

#[test]
fn objects_without_properties_lose_every_field_and_maps_keep_theirs() {
    let schema = json!({"type": "object", "properties": {
        "closed": {"type": "object"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "list": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}}}}});
    let mut obj = json!({"closed": {"a": 1}, "labels": {"x": "y"}, "list": [{"n": "a", "m": 1}]});
    let pruned = prune(&mut obj, &schema);
    assert_eq!(pruned, vec!["closed.a", "list[0].m"]);
    assert_eq!(
        obj,
        json!({"closed": {}, "labels": {"x": "y"}, "list": [{"n": "a"}]})
    );
}

#[test]
fn defaults_fill_nested_objects_and_replace_non_nullable_nulls() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "a": {"type": "integer", "default": 1},
        "b": {"type": "string", "nullable": true, "default": "x"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"p": {"type": "integer", "default": 80}}}}}}}});
    let mut obj = json!({"spec": {"a": null, "b": null, "items": [{}, {"p": 1}]}});
    apply_defaults(&mut obj, &schema);
    assert_eq!(
        obj,
        json!({"spec": {"a": 1, "b": null, "items": [{"p": 80}, {"p": 1}]}})
    );
}

fn messages(obj: &Value, schema: &Value) -> Vec<String> {
    validate(obj, schema)
        .iter()
        .map(FieldError::message)
        .collect()
}

#[test]
fn enum_pattern_lengths_and_bounds_use_the_api_servers_texts() {
    let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
        "required": ["must"],
        "properties": {
            "policy": {"type": "string", "enum": ["Always", "Never"]},
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 3},
            "count": {"type": "integer", "maximum": 10, "exclusiveMinimum": true, "minimum": 0},
            "list": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
            "must": {"type": "string"}}}}});
    let obj =
        json!({"spec": {"policy": "Sometimes", "name": "ABCD", "count": 11, "list": ["a", 2]}});
    assert_eq!(
        messages(&obj, &schema),
        vec![
            "spec.must: Required value",
            "spec.count: Invalid value: 11: spec.count in body should be less than or equal to 10",
            "spec.list[1]: Invalid value: \"integer\": spec.list[1] in body must be of type string: \"integer\"",
            "spec.list: Too many: 2: must have at most 1 items",
            "spec.name: Too long: may not be more than 3 bytes",
            "spec.policy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\"",
        ]
    );
    let obj = json!({"spec": {"must": "x", "count": 0, "name": "AB"}});
    assert_eq!(
        messages(&obj, &schema),
        vec![
            "spec.count: Invalid value: 0: spec.count in body should be greater than 0",
            "spec.name: Invalid value: \"AB\": spec.name in body should match '^[a-z]+$'",
        ]
    );
}

#[test]
fn int_or_string_accepts_both_and_a_fraction_in_an_int32_field_names_the_formats() {
    let schema = json!({"type": "object", "properties": {
        "q": {"x-kubernetes-int-or-string": true},
        "n": {"type": "integer", "format": "int32"}}});
    assert!(messages(&json!({"q": "1Gi", "n": 2}), &schema).is_empty());
    assert!(messages(&json!({"q": 5}), &schema).is_empty());
    assert_eq!(
        messages(&json!({"q": true, "n": 1.5}), &schema),
        vec![
            "n: Invalid value: \"double\": n in body must be of type int32: \"double\"",
            "q: Invalid value: \"boolean\": q in body must be of type integer,string: \"boolean\"",
        ]
    );
}

#[test]
fn several_errors_are_listed_in_brackets_and_duplicates_dropped() {
    let errs = vec![
        FieldError::new(ErrorType::Required, "spec.a", None, ""),
        FieldError::new(ErrorType::Required, "spec.b", None, ""),
        FieldError::new(ErrorType::Required, "spec.b", None, ""),
    ];
    let e = invalid("Thing", "example.com", "t", &errs);
    assert_eq!(
        e.message,
        "Thing.example.com \"t\" is invalid: [spec.a: Required value, spec.b: Required value]"
    );
    assert_eq!(e.details.unwrap()["causes"].as_array().unwrap().len(), 3);
}

#[test]
fn scale_paths_refuse_negative_and_non_integer_replicas() {
    let obj = json!({"spec": {"replicas": -1}, "status": {"currentReplicas": 1.5, "selector": 3}});
    let msgs: Vec<String> = validate_scale(&obj, &scale(), true)
        .iter()
        .map(FieldError::message)
        .collect();
    assert_eq!(
        msgs,
        vec![
            ".spec.replicas: Invalid value: -1: should be a non-negative integer",
            ".status.currentReplicas: Invalid value: 0: .status.currentReplicas accessor error: 1.5 is of the type float64, expected int64",
            ".status.selector: Invalid value: \"\": .status.selector accessor error: 3 is of the type int64, expected string",
        ]
    );
    assert!(validate_scale(&json!({}), &scale(), true).is_empty());
}
