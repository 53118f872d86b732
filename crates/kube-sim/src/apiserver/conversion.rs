//! Conversion of custom resources between versions through their CRD's conversion webhook, and
//! objects served in the requested version or stored in the storage version (see [`crate::crd`]).

use std::time::Duration;

use serde_json::{Value, json};

use super::Sim;
use crate::admission::Webhooks;
use crate::crd::{
    Conversion, CrdInfo, accept_converted, api_version_of, converted_objects, gvk, review_request,
    with_timeout_query,
};
use crate::errors::ApiError;
use crate::resources::{ResourceType, present};

/// The API server's client timeout for conversion webhooks (it has no per-CRD setting).
const CONVERSION_TIMEOUT: Duration = Duration::from_secs(30);

async fn post_review(
    webhooks: &Webhooks,
    url: &str,
    ca_bundle: &str,
    body: &Value,
) -> Result<Value, String> {
    let client = webhooks.client(ca_bundle)?;
    let resp = client
        .post(url)
        .timeout(CONVERSION_TIMEOUT)
        .json(body)
        .send()
        .await
        .map_err(|e| {
            let mut msg = format!("Post \"{url}\": {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("Post \"{url}\": {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "an error on the server ({:?}) has prevented the request from succeeding",
            String::from_utf8_lossy(&bytes)
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("failed to decode the response: {e}"))
}

fn conversion_error(message: String) -> ApiError {
    // The API server returns conversion failures unwrapped: code 500 with no reason.
    ApiError::new(500, "", message)
}

/// An object's uid and resourceVersion.
fn version_key(obj: &Value) -> (String, String) {
    let meta = |k: &str| {
        obj.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (meta("uid"), meta("resourceVersion"))
}

/// Converts every object not yet in `desired` (an apiVersion), in one ConversionReview.
pub async fn convert(
    webhooks: &Webhooks,
    info: &CrdInfo,
    mut objects: Vec<Value>,
    desired: &str,
) -> Result<Vec<Value>, ApiError> {
    let todo: Vec<usize> = (0..objects.len())
        .filter(|&i| api_version_of(&objects[i]) != desired)
        .collect();
    let Some(&first) = todo.first() else {
        return Ok(objects);
    };
    let (url, service, ca_bundle) = match &info.conversion {
        Conversion::None => {
            for i in todo {
                objects[i]["apiVersion"] = json!(desired);
            }
            return Ok(objects);
        }
        Conversion::Webhook {
            url,
            service,
            ca_bundle,
        } => (url, service, ca_bundle),
    };
    let from = gvk(api_version_of(&objects[first]), &info.kind);
    let failed = |e: String| conversion_error(format!("conversion webhook for {from} failed: {e}"));
    let url = match (url, service) {
        (Some(u), _) => with_timeout_query(u, CONVERSION_TIMEOUT),
        (None, Some(svc)) => {
            let s = |k: &str| svc.get(k).and_then(Value::as_str).unwrap_or_default();
            let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443);
            let target = with_timeout_query(
                &format!(
                    "https://{}.{}.svc:{port}{}",
                    s("name"),
                    s("namespace"),
                    s("path")
                ),
                CONVERSION_TIMEOUT,
            );
            return Err(failed(format!(
                "Post \"{target}\": services cannot be resolved by kube-sim: use clientConfig.url"
            )));
        }
        (None, None) => return Err(failed("no clientConfig url or service".into())),
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let sent: Vec<Value> = todo.iter().map(|&i| objects[i].clone()).collect();
    let body = review_request(&uid, desired, &sent);
    let review = match post_review(webhooks, &url, ca_bundle, &body).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(crd = %format!("{}.{}", info.kind, info.group), error = %e, "conversion webhook call failed");
            return Err(failed(e));
        }
    };
    let converted = converted_objects(&uid, &review).map_err(failed)?;
    if converted.len() != todo.len() {
        return Err(conversion_error(format!(
            "conversion webhook for {from} returned {} objects, expected {}",
            converted.len(),
            todo.len()
        )));
    }
    for (idx, (&i, conv)) in todo.iter().zip(converted).enumerate() {
        let invalid = |e: String| {
            conversion_error(format!(
                "conversion webhook for {from} returned invalid object at index {idx}: {e}"
            ))
        };
        let got = api_version_of(&conv).to_string();
        if got != desired {
            return Err(invalid(format!(
                "invalid groupVersion (expected {desired}, received {got})"
            )));
        }
        let kind = conv.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind != info.kind {
            return Err(invalid(format!(
                "invalid kind (expected {}, received {kind})",
                info.kind
            )));
        }
        objects[i] = accept_converted(&objects[i], conv).map_err(|e| {
            conversion_error(format!(
                "conversion webhook for {from} returned invalid object: {e}"
            ))
        })?;
    }
    Ok(objects)
}

impl Sim {
    /// Objects as `rt`'s version serves them: custom resources defaulted with the schema of the
    /// version they are stored in, converted, then pruned and defaulted with `rt`'s schema.
    pub async fn served_all(
        &self,
        rt: &ResourceType,
        objects: Vec<Value>,
    ) -> Result<Vec<Value>, ApiError> {
        self.served_objects(rt, objects, false).await
    }

    /// Objects as a list or watch of `rt`'s version serves them: like [`Sim::served_all`], but
    /// from the version's watch cache when the conversion webhook fails. The API server keeps a
    /// watch cache per served version of a custom resource, filled with objects converted as
    /// they were written; lists and watches are answered from it, so they go on answering with
    /// what was converted before while the webhook is down — as long as nothing changed since
    /// (a change it cannot convert stops that cache). A GET reads storage and fails.
    pub async fn served_from_cache(
        &self,
        rt: &ResourceType,
        objects: Vec<Value>,
    ) -> Result<Vec<Value>, ApiError> {
        self.served_objects(rt, objects, true).await
    }

    /// One object as a watch of `rt`'s version serves it (see [`Sim::served_from_cache`]).
    pub async fn watched(&self, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
        let mut out = self.served_from_cache(rt, vec![obj]).await?;
        out.pop()
            .ok_or_else(|| ApiError::internal("conversion returned no object"))
    }

    async fn served_objects(
        &self,
        rt: &ResourceType,
        mut objects: Vec<Value>,
        cached: bool,
    ) -> Result<Vec<Value>, ApiError> {
        if let Some(info) = self.crd_info(rt) {
            let current: Vec<(String, String)> = objects.iter().map(version_key).collect();
            for o in &mut objects {
                let stored = api_version_of(o)
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                info.decode(&stored, o);
            }
            let desired = rt.api_version();
            let by_webhook = matches!(info.conversion, Conversion::Webhook { .. });
            objects = match convert(&self.webhooks, &info, objects, &desired).await {
                Ok(converted) => converted,
                Err(e) if cached && by_webhook => {
                    self.converted_before(&current, &desired).ok_or(e)?
                }
                Err(e) => return Err(e),
            };
            for o in &mut objects {
                info.decode(&rt.version, o);
            }
            if by_webhook {
                self.remember_converted(&current, &desired, &objects);
            }
        }
        Ok(objects.into_iter().map(|o| present(rt, o)).collect())
    }

    fn remember_converted(&self, keys: &[(String, String)], desired: &str, objects: &[Value]) {
        let mut cache = self.converted.lock().unwrap_or_else(|e| e.into_inner());
        for ((uid, rv), obj) in keys.iter().zip(objects) {
            cache.insert((uid.clone(), desired.to_owned()), (rv.clone(), obj.clone()));
        }
    }

    /// Every object as converted to `desired` at its current resourceVersion, if all were.
    fn converted_before(&self, keys: &[(String, String)], desired: &str) -> Option<Vec<Value>> {
        let cache = self.converted.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|(uid, rv)| {
                cache
                    .get(&(uid.clone(), desired.to_owned()))
                    .filter(|(at, _)| at == rv)
                    .map(|(_, obj)| obj.clone())
            })
            .collect()
    }

    /// One object as `rt`'s version serves it (see [`Sim::served_all`]).
    pub async fn served(&self, rt: &ResourceType, obj: Value) -> Result<Value, ApiError> {
        let mut out = self.served_all(rt, vec![obj]).await?;
        out.pop()
            .ok_or_else(|| ApiError::internal("conversion returned no object"))
    }

    /// A custom resource converted to its storage version and defaulted there, ready to store.
    pub async fn for_storage(&self, info: &CrdInfo, obj: Value) -> Result<Value, ApiError> {
        let mut out = convert(&self.webhooks, info, vec![obj], &info.storage_api_version())
            .await?
            .pop()
            .ok_or_else(|| ApiError::internal("conversion returned no object"))?;
        info.decode(&info.storage_version, &mut out);
        Ok(out)
    }
}
