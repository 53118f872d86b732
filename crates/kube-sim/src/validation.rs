//! Object metadata validation as the API server does it (k8s.io/apimachinery
//! `pkg/util/validation` and `pkg/api/validation.ValidateObjectMeta`): names by the rule of their
//! kind, `generateName` prefixes, label keys and values, annotation keys. Messages are the real
//! ones, word for word, because clients and users match on them.

use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::resources::ResourceType;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
/// Maximum lengths from RFC 1123 and the label rules.
const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;

/// How a kind's `metadata.name` is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most kinds, custom resources included.
    Subdomain,
    /// RFC 1123 label: namespaces, and services (Kubernetes 1.36 relaxed them from RFC 1035
    /// labels: a leading digit is fine).
    Label,
    /// Any path segment (no `/`, `%`, not `.` or `..`): RBAC objects (`system:...` names).
    PathSegment,
}

/// The rule the API server applies to names of `rt` (pkg/apis/*/validation).
pub fn name_rule(rt: &ResourceType) -> NameRule {
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "namespaces") => NameRule::Label,
        ("", "services") => NameRule::Label,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

/// One field error, as `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldErrorKind {
    Invalid(String),
    Required,
}

impl FieldError {
    fn invalid(field: &str, value: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value.into()),
            detail: detail.into(),
        }
    }

    pub fn required(field: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    /// `field.Error.ErrorBody()`.
    pub fn body(&self) -> String {
        match &self.kind {
            FieldErrorKind::Invalid(v) => format!(
                "Invalid value: {}: {}",
                serde_json::to_string(v).unwrap_or_default(),
                self.detail
            ),
            FieldErrorKind::Required => format!("Required value: {}", self.detail),
        }
    }

    /// The `reason` of the Status cause.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
        }
    }

    /// `field.Error.Error()`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `validation.RegexError`, with its odd but real spacing between examples.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = msg.to_string();
    if examples.is_empty() {
        return format!("{out} (regex used for validation is '{fmt}')");
    }
    out.push_str(" (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

fn matches_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(matches_dns1123_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns1123_label(s) {
        if matches_dns1123_subdomain(s) {
            errs.push("must not contain dots".into());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_ERR,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !matches_dns1123_subdomain(s) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_ERR,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `path.IsValidPathSegmentName`.
fn is_path_segment_name(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|bad| s.contains(**bad))
        .map(|bad| format!("may not contain '{bad}'"))
        .collect()
}

/// `validation.IsQualifiedName`: label keys and annotation keys.
pub fn is_qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".into());
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_ERR,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !matches_qualified_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `validation.IsValidLabelValue`.
pub fn is_label_value(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !s.is_empty() && !matches_qualified_name(s) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// A name (or, with `prefix`, a generateName) by `rule`; a prefix may end in `-`.
pub fn check_name(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let masked;
    let name = if prefix && name.len() > 1 && name.ends_with('-') {
        masked = format!("{}a", &name[..name.len() - 1]);
        masked.as_str()
    } else {
        name
    };
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(name),
        NameRule::Label => is_dns1123_label(name),
        NameRule::PathSegment => is_path_segment_name(name),
    }
}

fn string_map(obj: &Value, field: &str) -> Vec<(String, String)> {
    obj.pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `ValidateObjectMeta` for the parts the simulator checks: on create generateName and name,
/// always label keys and values and annotation keys. Errors in the API server's order.
pub fn validate_meta(rt: &ResourceType, obj: &Value, creating: bool) -> Vec<FieldError> {
    let rule = name_rule(rt);
    let mut errs = Vec::new();
    let meta_str = |f: &str| {
        obj.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if creating {
        let generate = meta_str("generateName");
        if !generate.is_empty() {
            for m in check_name(rule, &generate, true) {
                errs.push(FieldError::invalid("metadata.generateName", &generate, m));
            }
        }
        let name = meta_str("name");
        if name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        } else {
            for m in check_name(rule, &name, false) {
                errs.push(FieldError::invalid("metadata.name", &name, m));
            }
        }
    }
    for (k, v) in string_map(obj, "labels") {
        for m in is_qualified_name(&k) {
            errs.push(FieldError::invalid("metadata.labels", &k, m));
        }
        for m in is_label_value(&v) {
            errs.push(FieldError::invalid("metadata.labels", &v, m));
        }
    }
    for (k, _) in string_map(obj, "annotations") {
        for m in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid("metadata.annotations", &k, m));
        }
    }
    errs
}

impl ApiError {
    /// 422 Invalid from field errors, as `apierrors.NewInvalid`: the message names the
    /// qualified kind, `details` the kind, group and one cause per error.
    pub fn invalid_fields(rt: &ResourceType, name: &str, errs: &[FieldError]) -> Self {
        let qualified_kind = if rt.group.is_empty() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let mut messages: Vec<String> = Vec::new();
        for e in errs {
            let m = e.message();
            if !messages.contains(&m) {
                messages.push(m);
            }
        }
        let aggregate = match messages.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.body(), "field": e.field}))
            .collect();
        let mut details = json!({"name": name, "kind": rt.kind, "causes": causes});
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        Self {
            code: 422,
            reason: "Invalid".into(),
            message: format!("{qualified_kind} \"{name}\" is invalid: {aggregate}"),
            details: Some(details),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule_of_their_kind() {
        assert!(check_name(NameRule::Subdomain, "a.b-c", false).is_empty());
        assert_eq!(check_name(NameRule::Subdomain, "Bad_Name", false).len(), 1);
        assert_eq!(
            check_name(NameRule::Label, "bad.ns", false),
            vec!["must not contain dots"]
        );
        assert!(check_name(NameRule::Label, "1svc", false).is_empty());
        assert!(check_name(NameRule::PathSegment, "system:controller:x", false).is_empty());
        assert_eq!(
            check_name(NameRule::PathSegment, "a/b", false),
            vec!["may not contain '/'"]
        );
        assert!(check_name(NameRule::Subdomain, "web-", true).is_empty());
        assert!(!check_name(NameRule::Subdomain, "web-", false).is_empty());
        assert_eq!(
            check_name(NameRule::Label, &"a".repeat(64), false),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn label_keys_and_values_use_the_qualified_name_rules() {
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert!(is_qualified_name("MyKey").is_empty());
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty"]
        );
        assert!(is_qualified_name("a b")[0].starts_with("name part must consist of"));
        assert!(is_qualified_name("a/b/c")[0].starts_with("a qualified name must consist"));
        assert!(is_label_value("").is_empty());
        assert_eq!(
            is_label_value("not valid!"),
            vec![
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
    }
}
