//! Structural `openAPIV3Schema`s of CustomResourceDefinitions, as the API server applies them:
//! pruning of unknown fields, defaulting, and validation with the messages of
//! apiextensions-apiserver (kube-openapi's texts wrapped in `field.Error`s). Pure: JSON in, JSON
//! and errors out.
//!
//! Covered: `type` (and `format` for numbers), `nullable`, `properties`, `additionalProperties`,
//! `items`, `required`, `enum`, `minimum`/`maximum` (and exclusive), `minLength`/`maxLength`,
//! `pattern`, `minItems`/`maxItems`, `default`, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-embedded-resource`, and the scale subresource's
//! checks. Not covered: `x-kubernetes-validations` (CEL), `multipleOf`, `uniqueItems`,
//! `minProperties`/`maxProperties`, `allOf`/`anyOf`/`oneOf`/`not`, string `format`s, and
//! validation ratcheting of unchanged fields on update.

use serde_json::{Map, Value, json};

use crate::errors::ApiError;

/// The fields of `metav1.ObjectMeta`: anything else under `metadata` is dropped on decode.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// `field.ErrorType`: the kind of a field error, its cause reason and its message word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Required,
    Invalid,
    TypeInvalid,
    NotSupported,
    TooLong,
    TooMany,
}

impl ErrorType {
    /// The `details.causes[].reason`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
        }
    }

    fn word(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
        }
    }
}

/// One `field.Error`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: ErrorType,
    pub field: String,
    /// The bad value as Go's `%v`/`%q` would print it; `None` when the message omits it.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    fn new(kind: ErrorType, field: &str, value: Option<String>, detail: impl Into<String>) -> Self {
        Self {
            kind,
            field: field.to_string(),
            value,
            detail: detail.into(),
        }
    }

    /// `ErrorBody()`: the message without the field, as in `details.causes[].message`.
    pub fn body(&self) -> String {
        let mut s = self.kind.word().to_string();
        let shows_value = !matches!(self.kind, ErrorType::Required | ErrorType::TooLong);
        if let (true, Some(v)) = (shows_value, &self.value) {
            s.push_str(": ");
            s.push_str(v);
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// `Error()`: `field: body`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

/// The 422 the API server answers for a custom resource that fails validation.
pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> ApiError {
    // `ErrorList.ToAggregate` drops repeated messages.
    let mut unique: Vec<&FieldError> = Vec::new();
    for e in errors {
        if !unique.iter().any(|u| u.message() == e.message()) {
            unique.push(e);
        }
    }
    let messages: Vec<String> = unique.iter().map(|e| e.message()).collect();
    let aggregate = match messages.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut err = ApiError::new(
        422,
        "Invalid",
        format!("{qualified} \"{name}\" is invalid: {aggregate}"),
    );
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
        .collect();
    let mut details = json!({"name": name, "kind": kind, "causes": causes});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    err.details = Some(details);
    err
}

/// Go's `%v` of a decoded JSON value.
fn go_v(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_number(n),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_v).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_v(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn go_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or_default();
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        f.to_string()
    }
}

/// Go's `%T` of a decoded JSON value (JSON integers decode to int64, others to float64).
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// How `field.Error` prints a bad value: `%v` for numbers and booleans, `%q` for strings.
fn bad_value(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Null => "\"null\"".into(),
        Value::Array(_) | Value::Object(_) => v.to_string(),
        other => go_v(other),
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

fn additional_schema(schema: &Value) -> Option<&Value> {
    schema.get("additionalProperties").filter(|a| a.is_object())
}

fn preserves_unknown(schema: &Value) -> bool {
    flag(schema, "x-kubernetes-preserve-unknown-fields")
        || schema.get("additionalProperties") == Some(&Value::Bool(true))
}

/// Drops fields the schema does not know, as the API server does when it decodes a custom
/// resource; returns their paths (the server warns `unknown field "spec.bogus"`). At the root
/// `apiVersion`, `kind` and `metadata` stay, and `metadata` keeps only ObjectMeta's fields.
pub fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_node(obj, schema, "", true, &mut pruned);
    pruned
}

fn prune_meta(meta: &mut Value, path: &str, pruned: &mut Vec<String>) {
    if let Some(m) = meta.as_object_mut() {
        let unknown: Vec<String> = m
            .keys()
            .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            m.remove(&k);
            pruned.push(child(path, &k));
        }
    }
}

fn prune_node(v: &mut Value, schema: &Value, path: &str, resource: bool, pruned: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let props = properties(schema);
            let additional = additional_schema(schema);
            let preserve = preserves_unknown(schema);
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let p = child(path, &k);
                if resource && matches!(k.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if resource && k == "metadata" {
                    if let Some(meta) = m.get_mut(&k) {
                        prune_meta(meta, &p, pruned);
                    }
                    continue;
                }
                let sub = props.and_then(|ps| ps.get(&k)).or(additional);
                match (sub, m.get_mut(&k)) {
                    (Some(s), Some(val)) => {
                        let embedded = flag(s, "x-kubernetes-embedded-resource");
                        prune_node(val, s, &p, embedded, pruned);
                    }
                    (None, _) if preserve => {}
                    (None, _) => {
                        m.remove(&k);
                        pruned.push(p);
                    }
                    (Some(_), None) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                let embedded = flag(s, "x-kubernetes-embedded-resource");
                for (i, item) in items.iter_mut().enumerate() {
                    prune_node(item, s, &format!("{path}[{i}]"), embedded, pruned);
                }
            }
        }
        _ => {}
    }
}

/// Applies the schema's `default`s where a field is missing (or null and not nullable), as the
/// API server does on create, update and read.
pub fn apply_defaults(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(m) => {
            if let Some(props) = properties(schema) {
                for (k, s) in props {
                    if m.get(k).is_some_and(Value::is_null) && !flag(s, "nullable") {
                        m.remove(k);
                    }
                    if !m.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        m.insert(k.clone(), d.clone());
                    }
                    if let Some(val) = m.get_mut(k) {
                        apply_defaults(val, s);
                    }
                }
            }
            if let Some(s) = additional_schema(schema) {
                for val in m.values_mut() {
                    apply_defaults(val, s);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    apply_defaults(item, s);
                }
            }
        }
        _ => {}
    }
}

/// The JSON schema type and format Go infers for a decoded value (kube-openapi's
/// `schemaInfoForType`).
fn type_of(v: &Value) -> (&'static str, &'static str) {
    match v {
        Value::Null => ("null", ""),
        Value::Bool(_) => ("boolean", ""),
        Value::Number(n) if n.is_f64() => ("number", "double"),
        Value::Number(_) => ("integer", "int64"),
        Value::String(_) => ("string", ""),
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
    }
}

fn schema_types(schema: &Value) -> Vec<&str> {
    if flag(schema, "x-kubernetes-int-or-string") {
        return vec!["integer", "string"];
    }
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn type_error(path: &str, expected: &str, got: &str) -> FieldError {
    FieldError::new(
        ErrorType::TypeInvalid,
        path,
        Some(bad_value(&json!(got))),
        format!(
            "{path} in body must be of type {expected}: {}",
            bad_value(&json!(got))
        ),
    )
}

/// kube-openapi's typeValidator: `None` when the type fits.
fn check_type(v: &Value, schema: &Value, path: &str) -> Option<FieldError> {
    let types = schema_types(schema);
    if v.is_null() {
        if !types.is_empty() && !types.contains(&"null") && !flag(schema, "nullable") {
            return Some(type_error(path, &types.join(","), "null"));
        }
        return None;
    }
    if types.is_empty() {
        return None;
    }
    let (ty, format) = type_of(v);
    let float_int = ty == "number"
        && v.as_f64().is_some_and(|f| f.fract() == 0.0)
        && types.contains(&"integer");
    let int_float = ty == "integer" && types.contains(&"number");
    let want_format = schema
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let is_string_or_array = matches!(v, Value::String(_) | Value::Array(_));
    let lower_int = want_format == "int64" && format == "int32";
    // A number or boolean must fit the declared format unless its type already fits.
    let fits_format =
        types.contains(&ty) || format == want_format || float_int || int_float || lower_int;
    if !(is_string_or_array || want_format.is_empty() || fits_format) {
        return Some(type_error(path, want_format, format));
    }
    // A string with a format in a non-numeric field is checked by the format, not the type.
    let numeric = types.contains(&"number") || types.contains(&"integer");
    if !(numeric || want_format.is_empty()) && matches!(v, Value::String(_)) {
        return None;
    }
    if !(types.contains(&ty) || float_int || int_float) {
        return Some(type_error(path, &types.join(","), ty));
    }
    None
}

fn num(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn go_f(f: f64) -> String {
    serde_json::Number::from_f64(f)
        .map(|n| go_number(&n))
        .unwrap_or_else(|| f.to_string())
}

/// Validates `obj` against `schema`; errors in kube-openapi's order for each node.
pub fn validate(obj: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_node(obj, schema, "", &mut errs);
    errs
}

fn invalid_value(path: &str, v: &Value, detail: String) -> FieldError {
    FieldError::new(ErrorType::Invalid, path, Some(bad_value(v)), detail)
}

fn validate_node(v: &Value, schema: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(e) = check_type(v, schema, path) {
        errs.push(e);
        return;
    }
    match v {
        // Like kube-openapi's string validator: the first failing check only (maxLength, then
        // minLength, then pattern), so an overlong value is not also matched against a pattern.
        Value::String(s) => {
            let len = s.chars().count() as u64;
            let max = schema.get("maxLength").and_then(Value::as_u64);
            let min = schema.get("minLength").and_then(Value::as_u64);
            let pattern = schema.get("pattern").and_then(Value::as_str);
            if let Some(max) = max.filter(|m| len > *m) {
                errs.push(FieldError::new(
                    ErrorType::TooLong,
                    path,
                    None,
                    format!("may not be more than {max} bytes"),
                ));
            } else if let Some(min) = min.filter(|m| len < *m) {
                errs.push(invalid_value(
                    path,
                    v,
                    format!("{path} in body should be at least {min} chars long"),
                ));
            } else if let Some(p) = pattern {
                match regex::Regex::new(p) {
                    Ok(re) if re.is_match(s) => {}
                    _ => errs.push(invalid_value(
                        path,
                        v,
                        format!("{path} in body should match '{p}'"),
                    )),
                }
            }
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or_default();
            if let Some(max) = num(schema, "maximum") {
                let exclusive = flag(schema, "exclusiveMaximum");
                if f > max || (exclusive && f == max) {
                    let rel = if exclusive {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    errs.push(invalid_value(
                        path,
                        v,
                        format!("{path} in body should be {rel} {}", go_f(max)),
                    ));
                }
            }
            // As kube-openapi's number validator: a value over the maximum is not also judged
            // against the minimum.
            let over = num(schema, "maximum")
                .is_some_and(|max| f > max || (flag(schema, "exclusiveMaximum") && f == max));
            if let Some(min) = num(schema, "minimum").filter(|_| !over) {
                let exclusive = flag(schema, "exclusiveMinimum");
                if f < min || (exclusive && f == min) {
                    let rel = if exclusive {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    errs.push(invalid_value(
                        path,
                        v,
                        format!("{path} in body should be {rel} {}", go_f(min)),
                    ));
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter().enumerate() {
                    validate_node(item, s, &format!("{path}[{i}]"), errs);
                }
            }
            let len = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && len < min
            {
                errs.push(invalid_value(
                    path,
                    v,
                    format!("{path} in body should have at least {min} items"),
                ));
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && len > max
            {
                errs.push(FieldError::new(
                    ErrorType::TooMany,
                    path,
                    Some(len.to_string()),
                    format!("must have at most {max} items"),
                ));
            }
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let values: Vec<String> = allowed
            .iter()
            .map(|a| {
                let text = match a {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Value::String(text).to_string()
            })
            .collect();
        errs.push(FieldError::new(
            ErrorType::NotSupported,
            path,
            Some(bad_value(v)),
            format!("supported values: {}", values.join(", ")),
        ));
    }
    if let Value::Object(m) = v {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for k in required.iter().filter_map(Value::as_str) {
                if m.get(k).is_none_or(Value::is_null) {
                    errs.push(FieldError::new(
                        ErrorType::Required,
                        &child(path, k),
                        None,
                        "",
                    ));
                }
            }
        }
        let props = properties(schema);
        let additional = additional_schema(schema);
        for (k, val) in m {
            if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                if let Some(s) = props.and_then(|ps| ps.get(k)) {
                    validate_node(val, s, k, errs);
                }
                continue;
            }
            if let Some(s) = props.and_then(|ps| ps.get(k)).or(additional) {
                validate_node(val, s, &child(path, k), errs);
            }
        }
    }
}

/// `unstructured.NestedInt64` along a dotted path: `Ok(None)` when absent.
fn nested_int64(obj: &Value, dotted: &str) -> Result<Option<i64>, String> {
    let fields: Vec<&str> = dotted.trim_start_matches('.').split('.').collect();
    let mut cur = obj;
    for (i, f) in fields.iter().enumerate() {
        match cur {
            Value::Object(m) => match m.get(*f) {
                Some(next) => cur = next,
                None => return Ok(None),
            },
            other => {
                return Err(format!(
                    ".{} accessor error: {} is of the type {}, expected map[string]interface{{}}",
                    fields[..i].join("."),
                    go_v(other),
                    go_type(other)
                ));
            }
        }
    }
    match cur {
        Value::Number(n) if n.is_i64() => Ok(n.as_i64()),
        other => Err(format!(
            ".{} accessor error: {} is of the type {}, expected int64",
            fields.join("."),
            go_v(other),
            go_type(other)
        )),
    }
}

/// The scale subresource's paths as written in the CRD (`.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScaleSpec {
    pub spec_replicas_path: String,
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
}

fn check_replicas(obj: &Value, raw_path: &str, errs: &mut Vec<FieldError>) {
    match nested_int64(obj, raw_path) {
        Err(e) => errs.push(FieldError::new(
            ErrorType::Invalid,
            raw_path,
            Some("0".into()),
            e,
        )),
        Ok(Some(n)) if n < 0 => errs.push(FieldError::new(
            ErrorType::Invalid,
            raw_path,
            Some(n.to_string()),
            "should be a non-negative integer",
        )),
        Ok(Some(n)) if n > i64::from(i32::MAX) => errs.push(FieldError::new(
            ErrorType::Invalid,
            raw_path,
            Some(n.to_string()),
            format!("should be less than or equal to {}", i32::MAX),
        )),
        Ok(_) => {}
    }
}

/// customResourceValidator's ValidateScaleSpec (when `spec` is true) and ValidateScaleStatus.
pub fn validate_scale(obj: &Value, scale: &ScaleSpec, spec: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec {
        check_replicas(obj, &scale.spec_replicas_path, &mut errs);
    }
    check_replicas(obj, &scale.status_replicas_path, &mut errs);
    if let Some(sel) = &scale.label_selector_path {
        let fields: Vec<&str> = sel.trim_start_matches('.').split('.').collect();
        let mut cur = Some(obj);
        for f in &fields {
            cur = cur.and_then(|c| c.get(*f));
        }
        if let Some(v) = cur.filter(|v| !v.is_string()) {
            errs.push(FieldError::new(
                ErrorType::Invalid,
                sel,
                Some("\"\"".into()),
                format!(
                    ".{} accessor error: {} is of the type {}, expected string",
                    fields.join("."),
                    go_v(v),
                    go_type(v)
                ),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests;
