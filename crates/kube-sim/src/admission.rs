//! Dynamic admission: mutating then validating webhooks, matched by rules, namespaceSelector and
//! objectSelector, called over HTTPS with the configuration's caBundle (verified as the API
//! server's Go client verifies, see [`tls`]) at `url?timeout=Ns`, with failurePolicy,
//! timeoutSeconds and the real API server's denial messages.
//!
//! `matchConditions` (CEL, [`conditions`]) decide after rules and selectors whether a webhook is
//! called, with the real semantics and error messages. Configurations are checked when stored
//! ([`validate_configuration`]: client config and expressions).
//!
//! Not simulated: `clientConfig.service` cannot be resolved on loopback and fails the call (so
//! failurePolicy applies); reinvocationPolicy is ignored (each mutating webhook runs once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::errors::ApiError;
use crate::resources::ResourceType;
use crate::selectors::LabelSelector;
use crate::store::{StorageKey, Store};
use conditions::Verdict;

pub mod conditions;
pub mod tls;

/// The API server's default webhook timeout.
const DEFAULT_TIMEOUT_SECONDS: u64 = 10;

/// What is being admitted.
pub struct AdmissionAttrs<'a> {
    pub rt: &'a ResourceType,
    pub subresource: Option<&'a str>,
    pub operation: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub user: &'a UserInfo,
    pub dry_run: bool,
    pub options: Value,
    /// (group, version, kind) of the object when it is not the resource's kind (Eviction).
    pub kind_override: Option<(String, String, String)>,
}

/// What admission reads from the API server: the stored webhook configurations and namespaces,
/// and the clients and compiled match conditions of the webhooks.
#[derive(Clone, Copy)]
pub struct Api<'a> {
    pub store: &'a Store,
    pub webhooks: &'a Webhooks,
}

/// HTTP clients per caBundle, so webhook calls reuse connections, and compiled matchConditions.
#[derive(Default)]
pub struct Webhooks {
    clients: Mutex<HashMap<String, reqwest::Client>>,
    programs: conditions::Programs,
}

impl Webhooks {
    /// The HTTPS client for a webhook (or conversion webhook) whose `clientConfig.caBundle` is
    /// `ca_bundle` (base64 of PEM, as stored), verifying the server as the API server does
    /// ([`tls::GoLikeVerifier`]). Clients are cached per bundle so connections are reused.
    pub fn client(&self, ca_bundle: &str) -> Result<reqwest::Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(ca_bundle) {
            return Ok(c.clone());
        }
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca_bundle.trim())
            .map_err(|e| format!("failed to decode caBundle: {e}"))?;
        let tls = tls::GoLikeVerifier::new(&pem)?.client_config()?;
        let c = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| format!("failed to build client: {e}"))?;
        clients.insert(ca_bundle.to_string(), c.clone());
        Ok(c)
    }
}

/// Checks a webhook configuration as the API server does when it is stored: exactly one of
/// `clientConfig.url` and `clientConfig.service`, an `https` URL with a host and no user,
/// query or fragment, and every `matchConditions[].expression` compiling. Returns the first
/// error, naming the field.
pub fn validate_configuration(config: &Value) -> Result<(), String> {
    let webhooks = config.get("webhooks").and_then(Value::as_array);
    for (i, webhook) in webhooks.into_iter().flatten().enumerate() {
        validate_client_config(
            webhook.get("clientConfig"),
            &format!("webhooks[{i}].clientConfig"),
        )?;
        conditions::validate(webhook, i)?;
    }
    Ok(())
}

/// `clientConfig` as admissionregistration validation checks it (`ValidateWebhookURL`).
fn validate_client_config(cc: Option<&Value>, field: &str) -> Result<(), String> {
    let url = cc.and_then(|c| c.get("url")).filter(|u| !u.is_null());
    let service = cc.and_then(|c| c.get("service")).filter(|s| !s.is_null());
    if url.is_some() == service.is_some() {
        return Err(format!(
            "{field}: Required value: exactly one of url or service is required"
        ));
    }
    let Some(url) = url else { return Ok(()) };
    let field = format!("{field}.url");
    const FORM: &str = "; desired format: https://host[/path]";
    let raw = url.as_str().unwrap_or_default();
    let parsed = reqwest::Url::parse(raw)
        .map_err(|e| format!("{field}: Required value: url must be a valid URL: {e}{FORM}"))?;
    if parsed.scheme() != "https" {
        return Err(format!(
            "{field}: Invalid value: {:?}: 'https' is the only allowed URL scheme{FORM}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().unwrap_or_default().is_empty() {
        return Err(format!(
            "{field}: Invalid value: \"\": host must be provided{FORM}"
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{field}: Invalid value: {:?}: user information is not permitted in the URL",
            parsed.username()
        ));
    }
    if let Some(fragment) = parsed.fragment() {
        return Err(format!(
            "{field}: Invalid value: {fragment:?}: fragments are not permitted in the URL"
        ));
    }
    if let Some(query) = parsed.query() {
        return Err(format!(
            "{field}: Invalid value: {query:?}: query parameters are not permitted in the URL"
        ));
    }
    Ok(())
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether one of a webhook's rules matches the request (pure).
pub fn rules_match(webhook: &Value, attrs: &AdmissionAttrs<'_>) -> bool {
    let Some(rules) = webhook.get("rules").and_then(Value::as_array) else {
        return false;
    };
    let sub = attrs.subresource.unwrap_or_default();
    let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
    rules.iter().any(|r| {
        let ops = strings(r.get("operations"));
        let groups = strings(r.get("apiGroups"));
        let versions = strings(r.get("apiVersions"));
        let resources = strings(r.get("resources"));
        let scope = r.get("scope").and_then(Value::as_str).unwrap_or("*");
        let scope_ok = match scope {
            "Cluster" => !attrs.rt.namespaced,
            "Namespaced" => attrs.rt.namespaced,
            _ => true,
        };
        let res_ok = resources.iter().any(|pat| {
            let (pr, ps) = pat.split_once('/').unwrap_or((pat.as_str(), ""));
            let r_ok = pr == "*" || pr == attrs.rt.resource;
            let s_ok = if sub.is_empty() {
                ps.is_empty()
            } else {
                ps == "*" || ps == sub
            };
            r_ok && s_ok
        });
        any(&ops, attrs.operation)
            && any(&groups, &attrs.rt.group)
            && any(&versions, &attrs.rt.version)
            && res_ok
            && scope_ok
    })
}

/// Whether the namespaceSelector and objectSelector match (pure). `ns_labels` is `None` for
/// cluster-scoped objects other than namespaces, which namespaceSelector never excludes.
pub fn selectors_match(
    webhook: &Value,
    ns_labels: Option<&Value>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Result<bool, String> {
    let ns_sel =
        LabelSelector::from_json(webhook.get("namespaceSelector")).map_err(|e| e.to_string())?;
    if let Some(ns) = ns_labels
        && !ns_sel.matches(ns)
    {
        return Ok(false);
    }
    let obj_sel =
        LabelSelector::from_json(webhook.get("objectSelector")).map_err(|e| e.to_string())?;
    if obj_sel.is_empty() {
        return Ok(true);
    }
    Ok([object, old]
        .into_iter()
        .flatten()
        .any(|o| obj_sel.matches(o)))
}

/// The AdmissionReview a webhook receives (shaped like the real API server's).
pub fn review_body(
    uid: &str,
    attrs: &AdmissionAttrs<'_>,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Value {
    let rt = attrs.rt;
    let resource = json!({"group": rt.group, "version": rt.version, "resource": rt.resource});
    let kind = match &attrs.kind_override {
        Some((g, v, k)) => json!({"group": g, "version": v, "kind": k}),
        None => json!({"group": rt.group, "version": rt.version, "kind": rt.kind}),
    };
    let mut req = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": attrs.name,
        "operation": attrs.operation,
        "userInfo": attrs.user.to_json(),
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": old.cloned().unwrap_or(Value::Null),
        "dryRun": attrs.dry_run,
        "options": attrs.options,
    });
    if let Some(sub) = attrs.subresource {
        req["subResource"] = json!(sub);
        req["requestSubResource"] = json!(sub);
    }
    if rt.namespaced {
        req["namespace"] = json!(attrs.namespace);
    }
    json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": req})
}

/// The client-facing error for a webhook's denial (pure).
pub fn denial(webhook_name: &str, response: &Value) -> ApiError {
    let status = response.get("status").cloned().unwrap_or_default();
    let message = status
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let code = status.get("code").and_then(Value::as_u64).unwrap_or(0);
    let denied = format!("admission webhook \"{webhook_name}\" denied the request");
    let text = if !message.is_empty() {
        format!("{denied}: {message}")
    } else if !reason.is_empty() {
        format!("{denied}: {reason}")
    } else {
        format!("{denied} without explanation")
    };
    let code = if (400..600).contains(&code) {
        code as u16
    } else {
        400
    };
    let mut err = ApiError::new(code, reason, text);
    if let Some(details) = status.get("details") {
        err.details = Some(details.clone());
    }
    err
}

enum Kind {
    Mutating,
    Validating,
}

async fn call(api: &Api<'_>, webhook: &Value, body: &Value) -> Result<Value, String> {
    let cc = webhook.get("clientConfig").cloned().unwrap_or_default();
    let url = match cc.get("url").and_then(Value::as_str) {
        Some(u) => u.to_string(),
        None => {
            return Err(
                "clientConfig.service is not supported by kube-sim: use clientConfig.url".into(),
            );
        }
    };
    let ca = cc
        .get("caBundle")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let timeout = webhook
        .get("timeoutSeconds")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    let client = api.webhooks.client(ca)?;
    let url = with_timeout(&url, timeout);
    let resp = client
        .post(&url)
        .timeout(Duration::from_secs(timeout))
        .json(body)
        .send()
        .await
        .map_err(|e| call_error(&url, &e))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("failed to read webhook response: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "received invalid webhook response: HTTP {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let review: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("received invalid webhook response: {e}"))?;
    review
        .get("response")
        .cloned()
        .filter(Value::is_object)
        .ok_or_else(|| "received invalid webhook response: no response".to_string())
}

/// The URL the API server posts to: it tells the webhook its deadline in a `timeout` query
/// parameter (client-go's `Request.Timeout`), e.g. `https://host/validate?timeout=5s`.
pub fn with_timeout(url: &str, timeout_seconds: u64) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}timeout={timeout_seconds}s")
}

/// How a failed call to the webhook at `url` reads: Go's wording for certificate failures, the
/// error chain otherwise (`failed to call webhook: Post "url": ...`).
pub fn call_error(url: &str, e: &reqwest::Error) -> String {
    if let Some(tls) = tls::verification_failure(e) {
        return format!("failed to call webhook: Post \"{url}\": {tls}");
    }
    let mut msg = format!("failed to call webhook: Post \"{url}\": {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

fn webhooks_of(api: &Api<'_>, kind: &Kind) -> Vec<Value> {
    let resource = match kind {
        Kind::Mutating => "mutatingwebhookconfigurations",
        Kind::Validating => "validatingwebhookconfigurations",
    };
    let (configs, _) = api.store.list(
        &StorageKey::new("admissionregistration.k8s.io", resource),
        None,
    );
    configs
        .iter()
        .flat_map(|c| {
            c.get("webhooks")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// What `webhook`'s matchConditions decide for the review `body` about to be sent.
fn conditions_verdict(
    api: &Api<'_>,
    webhook: &Value,
    body: &Value,
    object: Option<&Value>,
    old: Option<&Value>,
) -> Verdict {
    let has_conditions = webhook
        .get("matchConditions")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if !has_conditions {
        return Verdict::Call;
    }
    let inputs = conditions::Inputs::new(&body["request"], object, old);
    conditions::check(&api.webhooks.programs, webhook, &inputs)
}

/// The API server's refusal when matchConditions fail to evaluate under `failurePolicy: Fail`:
/// 403 `Forbidden` on the resource (`apierrors.NewForbidden`).
pub fn match_conditions_forbidden(attrs: &AdmissionAttrs<'_>, error: &str) -> ApiError {
    let rt = attrs.rt;
    let resource = if rt.group.is_empty() {
        rt.resource.clone()
    } else {
        format!("{}.{}", rt.resource, rt.group)
    };
    let message = if attrs.name.is_empty() {
        format!("{resource} is forbidden: {error}")
    } else {
        format!("{resource} \"{}\" is forbidden: {error}", attrs.name)
    };
    let mut err = ApiError::forbidden(message);
    let mut details = json!({"kind": rt.resource});
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    if !attrs.name.is_empty() {
        details["name"] = json!(attrs.name);
    }
    err.details = Some(details);
    err
}

/// Runs mutating then validating webhooks; returns the (possibly mutated) object.
pub async fn admit(
    api: &Api<'_>,
    attrs: &AdmissionAttrs<'_>,
    object: Option<Value>,
    old: Option<&Value>,
) -> Result<Option<Value>, ApiError> {
    admit_validated(api, attrs, object, old, &|_| Ok(())).await
}

/// Checks the mutated object between the mutating and the validating webhooks, where the API
/// server validates it.
pub type Validate<'a> = &'a (dyn Fn(&mut Value) -> Result<(), ApiError> + Send + Sync);

/// [`admit`] with the object validated (and normalized) after the mutating webhooks.
pub async fn admit_validated(
    api: &Api<'_>,
    attrs: &AdmissionAttrs<'_>,
    mut object: Option<Value>,
    old: Option<&Value>,
    validate: Validate<'_>,
) -> Result<Option<Value>, ApiError> {
    // Webhook configurations and reviews are never themselves subject to webhooks (but are
    // validated).
    if attrs.rt.group == "admissionregistration.k8s.io" || attrs.rt.virtual_review {
        if let Some(obj) = object.as_mut() {
            validate(obj)?;
        }
        return Ok(object);
    }
    let ns_labels = if attrs.rt.group.is_empty() && attrs.rt.resource == "namespaces" {
        Some(
            object
                .as_ref()
                .or(old)
                .and_then(|o| o.pointer("/metadata/labels"))
                .cloned()
                .unwrap_or(json!({})),
        )
    } else if attrs.rt.namespaced {
        let ns = api
            .store
            .get(&StorageKey::new("", "namespaces"), "", attrs.namespace);
        Some(
            ns.and_then(|n| n.pointer("/metadata/labels").cloned())
                .unwrap_or(json!({})),
        )
    } else {
        None
    };
    let ns_wrapped = ns_labels.map(|l| json!({"metadata": {"labels": l}}));
    for kind in [Kind::Mutating, Kind::Validating] {
        if matches!(kind, Kind::Validating)
            && let Some(obj) = object.as_mut()
        {
            validate(obj)?;
        }
        for webhook in webhooks_of(api, &kind) {
            let name = webhook
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !rules_match(&webhook, attrs) {
                continue;
            }
            match selectors_match(&webhook, ns_wrapped.as_ref(), object.as_ref(), old) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "failed calling webhook \"{name}\": invalid selector: {e}"
                    )));
                }
            }
            let uid = uuid::Uuid::new_v4().to_string();
            let body = review_body(&uid, attrs, object.as_ref(), old);
            match conditions_verdict(api, &webhook, &body, object.as_ref(), old) {
                Verdict::Call => {}
                Verdict::Skip(condition) => {
                    tracing::debug!(webhook = %name, namespace = %attrs.namespace, name = %attrs.name, condition = condition.as_deref().unwrap_or("(error, failurePolicy Ignore)"), "webhook skipped by matchConditions");
                    continue;
                }
                Verdict::Refuse(e) => {
                    tracing::warn!(webhook = %name, namespace = %attrs.namespace, name = %attrs.name, error = %e, "failed evaluating match conditions, failing closed");
                    return Err(match_conditions_forbidden(attrs, &e));
                }
            }
            let fail_open = webhook.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
            let response = match call(api, &webhook, &body).await {
                Ok(r) => r,
                Err(e) if fail_open => {
                    tracing::warn!(webhook = %name, namespace = %attrs.namespace, name = %attrs.name, error = %e, "webhook call failed, ignored (failurePolicy Ignore)");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(webhook = %name, namespace = %attrs.namespace, name = %attrs.name, error = %e, "webhook call failed, request rejected (failurePolicy Fail)");
                    return Err(ApiError::internal(format!(
                        "failed calling webhook \"{name}\": {e}"
                    )));
                }
            };
            if response.get("uid").and_then(Value::as_str) != Some(uid.as_str()) {
                let e =
                    format!("received invalid webhook response: expected response.uid=\"{uid}\"");
                if fail_open {
                    continue;
                }
                return Err(ApiError::internal(format!(
                    "failed calling webhook \"{name}\": {e}"
                )));
            }
            if response.get("allowed").and_then(Value::as_bool) != Some(true) {
                tracing::info!(webhook = %name, resource = %attrs.rt.resource, namespace = %attrs.namespace, name = %attrs.name, operation = attrs.operation, "admission denied");
                return Err(denial(&name, &response));
            }
            if let (Kind::Mutating, Some(patch)) = (
                &kind,
                response
                    .get("patch")
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty()),
            ) {
                let Some(obj) = object.as_mut() else {
                    return Err(ApiError::internal(format!(
                        "admission webhook \"{name}\" attempted to modify the object, which is not supported for this operation"
                    )));
                };
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .map_err(|e| {
                        ApiError::internal(format!(
                            "failed calling webhook \"{name}\": invalid patch: {e}"
                        ))
                    })?;
                // As the API server: a patch that does not apply fails the request with 500
                // whatever the failurePolicy (it is not an error calling the webhook).
                let ops = crate::patch::decode_json_patch(&raw)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                crate::patch::apply_json_patch(obj, &ops).map_err(|e| {
                    tracing::warn!(webhook = %name, namespace = %attrs.namespace, name = %attrs.name, error = %e, "mutating webhook patch does not apply");
                    ApiError::internal(e)
                })?;
                let shape_ok = obj.is_object()
                    && ["metadata", "spec", "status"]
                        .iter()
                        .all(|f| obj.get(*f).is_none_or(|v| v.is_object() || v.is_null()));
                if !shape_ok {
                    return Err(ApiError::internal(format!(
                        "failed calling webhook \"{name}\": the patch leaves an invalid object"
                    )));
                }
                tracing::debug!(webhook = %name, namespace = %attrs.namespace, name = %attrs.name, "mutating webhook patch applied");
            }
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests;
