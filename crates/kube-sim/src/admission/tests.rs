use super::*;
use crate::resources::builtins;

fn rt(resource: &str) -> ResourceType {
    builtins()
        .into_iter()
        .find(|t| t.group.is_empty() && t.resource == resource)
        .unwrap()
}

fn attrs<'a>(
    rt: &'a ResourceType,
    user: &'a UserInfo,
    op: &'static str,
    sub: Option<&'a str>,
) -> AdmissionAttrs<'a> {
    AdmissionAttrs {
        rt,
        subresource: sub,
        operation: op,
        namespace: "fixtures",
        name: "drain-me",
        user,
        dry_run: false,
        options: json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}),
        kind_override: None,
    }
}

fn hook(resources: &[&str], ops: &[&str]) -> Value {
    json!({"name": "h.ballast.dev", "rules": [{"apiGroups": [""], "apiVersions": ["v1"],
           "operations": ops, "resources": resources, "scope": "Namespaced"}]})
}

#[test]
fn rules_distinguish_main_resources_from_subresources() {
    let pods = rt("pods");
    let u = UserInfo::admin();
    let delete = attrs(&pods, &u, "DELETE", None);
    let evict = attrs(&pods, &u, "CREATE", Some("eviction"));
    let status = attrs(&pods, &u, "UPDATE", Some("status"));
    assert!(rules_match(&hook(&["pods"], &["DELETE"]), &delete));
    assert!(!rules_match(&hook(&["pods"], &["CREATE"]), &evict));
    assert!(rules_match(&hook(&["pods/eviction"], &["CREATE"]), &evict));
    assert!(rules_match(&hook(&["pods/*"], &["*"]), &status));
    assert!(!rules_match(&hook(&["pods/eviction"], &["*"]), &status));
    assert!(rules_match(&hook(&["*/*"], &["*"]), &status));
    assert!(!rules_match(&hook(&["*"], &["*"]), &status));
    assert!(!rules_match(
        &hook(&["persistentvolumeclaims"], &["*"]),
        &delete
    ));
}

#[test]
fn namespace_and_object_selectors_filter_requests() {
    let h = json!({"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                   "operator": "NotIn", "values": ["kube-system"]}]},
                   "objectSelector": {"matchLabels": {"app": "web"}}});
    let ns = |n: &str| json!({"metadata": {"labels": {"kubernetes.io/metadata.name": n}}});
    let web = json!({"metadata": {"labels": {"app": "web"}}});
    let db = json!({"metadata": {"labels": {"app": "db"}}});
    assert!(selectors_match(&h, Some(&ns("default")), Some(&web), None).unwrap());
    assert!(!selectors_match(&h, Some(&ns("kube-system")), Some(&web), None).unwrap());
    assert!(!selectors_match(&h, Some(&ns("default")), Some(&db), None).unwrap());
    assert!(
        selectors_match(&h, Some(&ns("default")), None, Some(&web)).unwrap(),
        "DELETE matches on oldObject"
    );
}

#[test]
fn eviction_review_is_shaped_like_the_real_api_servers() {
    let fixture: Value =
        serde_json::from_str(include_str!("../../tests/data/pod-eviction-create.json")).unwrap();
    let pods = rt("pods");
    let user = UserInfo {
        username: "admin".into(),
        uid: "admin".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    };
    let mut a = attrs(&pods, &user, "CREATE", Some("eviction"));
    a.kind_override = Some(("policy".into(), "v1".into(), "Eviction".into()));
    let eviction = json!({"kind": "Eviction", "apiVersion": "policy/v1",
                          "metadata": {"name": "drain-me", "namespace": "fixtures"}});
    let uid = fixture["request"]["uid"].as_str().unwrap();
    let ours = review_body(uid, &a, Some(&eviction), None);
    assert_eq!(ours, fixture);
}

#[test]
fn denial_keeps_the_webhook_code_and_formats_the_message() {
    let resp = json!({"uid": "x", "allowed": false,
                      "status": {"code": 429, "reason": "TooManyRequests", "message": "node storm in progress"}});
    let e = denial("evictions.ballast.dev", &resp);
    assert_eq!(e.code, 429);
    assert_eq!(e.reason, "TooManyRequests");
    assert_eq!(
        e.message,
        "admission webhook \"evictions.ballast.dev\" denied the request: node storm in progress"
    );
    let e = denial("w", &json!({"allowed": false, "status": {"code": 200}}));
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            400,
            "admission webhook \"w\" denied the request without explanation"
        )
    );
}

#[test]
fn webhook_urls_carry_the_deadline_like_the_api_servers() {
    assert_eq!(
        with_timeout("https://127.0.0.1:8443/validate", 5),
        "https://127.0.0.1:8443/validate?timeout=5s"
    );
    assert_eq!(
        with_timeout("https://h/convert?x=1", 10),
        "https://h/convert?x=1&timeout=10s"
    );
}

#[test]
fn webhook_urls_must_be_https_with_a_host_and_nothing_else() {
    let with = |client_config: Value| {
        let h = json!({"name": "h.example.com", "clientConfig": client_config});
        validate_configuration(&json!({"webhooks": [h]}))
    };
    assert_eq!(
        with(json!({"url": "https://10.0.0.1:8443/validate"})),
        Ok(())
    );
    assert_eq!(
        with(json!({"service": {"name": "guard", "namespace": "ballast-system"}})),
        Ok(())
    );
    let form = "; desired format: https://host[/path]";
    let field = "webhooks[0].clientConfig";
    assert_eq!(
        with(json!({"url": "http://127.0.0.1:8080/validate"})),
        Err(format!(
            "{field}.url: Invalid value: \"http\": 'https' is the only allowed URL scheme{form}"
        ))
    );
    assert_eq!(
        with(json!({"url": "https://127.0.0.1/validate?x=1"})),
        Err(format!(
            "{field}.url: Invalid value: \"x=1\": query parameters are not permitted in the URL"
        ))
    );
    assert_eq!(
        with(json!({"url": "https://me@127.0.0.1/validate"})),
        Err(format!(
            "{field}.url: Invalid value: \"me\": user information is not permitted in the URL"
        ))
    );
    assert_eq!(
        with(json!({"url": "https://127.0.0.1/validate#top"})),
        Err(format!(
            "{field}.url: Invalid value: \"top\": fragments are not permitted in the URL"
        ))
    );
    let neither = Err(format!(
        "{field}: Required value: exactly one of url or service is required"
    ));
    assert_eq!(with(json!({})), neither);
    assert_eq!(
        with(json!({"url": "https://h/x", "service": {"name": "s", "namespace": "n"}})),
        neither
    );
}
