//! The conversion webhook the API server calls to move PodManagers between v1 and v2:
//! `POST /convert` with a `ConversionReview` (apiextensions.k8s.io/v1), answered by
//! [`crate::convert::review`]. Served over HTTPS on every replica (conversion is not leader work),
//! with the certificate from files reloaded on rotation, or generated once by the self-signed
//! bootstrap, which then puts its CA into the CRD's `spec.conversion.webhook.clientConfig`.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ballast_runtime::Service;
use base64::Engine;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::metrics::Conversion;

/// Path of the conversion endpoint (the CRD's clientConfig names it).
pub use crate::crd::CONVERSION_PATH as PATH;
/// Largest ConversionReview accepted: a list of PodManagers, far below any real one.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Where the conversion webhook listens and with which certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    /// (certificate, key) PEM files; `None` serves plain HTTP (`--local`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Generate the certificate at start-up instead of reading cert-manager's.
    pub self_signed: Option<SelfSigned>,
}

/// The self-signed bootstrap: the certificate kept in a Secret, its CA injected into the CRD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfSigned {
    /// Secret holding the generated certificate, in `namespace`.
    pub secret: String,
    pub namespace: String,
    /// DNS name of the webhook Service (`podmanager.ballast-system.svc`).
    pub service_dns: String,
    /// The CRD whose conversion webhook gets the CA.
    pub crd: String,
}

/// The HTTP routes of the webhook.
pub fn router() -> Router {
    Router::new()
        .route(PATH, post(convert))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

async fn convert(body: Bytes) -> Response {
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "conversion request is not JSON");
            Conversion::MALFORMED.count(1);
            return (
                StatusCode::BAD_REQUEST,
                format!("the body is not a ConversionReview: {e}"),
            )
                .into_response();
        }
    };
    if review.get("kind").and_then(Value::as_str) != Some("ConversionReview")
        || review.get("request").is_none_or(|r| !r.is_object())
    {
        Conversion::MALFORMED.count(1);
        return (
            StatusCode::BAD_REQUEST,
            "the body is not a ConversionReview with a request",
        )
            .into_response();
    }
    let answer = crate::convert::review(&review);
    Conversion::of(&review, &answer).count(1);
    let desired = review
        .pointer("/request/desiredAPIVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let objects: Vec<String> = review
        .pointer("/request/objects")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|o| {
                    format!(
                        "{}/{}",
                        o.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                        o.pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    match answer
        .pointer("/response/result/message")
        .and_then(Value::as_str)
    {
        Some(m) => {
            tracing::warn!(objects = ?objects, desired = %desired, error = %m, "conversion failed")
        }
        None => tracing::debug!(objects = ?objects, desired = %desired, "converted"),
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&answer).unwrap_or_default(),
    )
        .into_response()
}

/// The merge patch putting `ca_pem` into a CRD's conversion webhook.
pub fn ca_bundle_patch(ca_pem: &str) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    json!({"spec": {"conversion": {"webhook": {"clientConfig": {"caBundle": encoded}}}}})
}

/// Runs the self-signed bootstrap when configured; returns the certificate files to serve.
async fn bootstrap(
    client: &kube::Client,
    config: &WebhookConfig,
) -> Result<Option<(PathBuf, PathBuf)>> {
    let (Some(s), Some((cert, _))) = (&config.self_signed, &config.tls) else {
        return Ok(config.tls.clone());
    };
    let generated = ballast_runtime::bootstrap::ensure_certificate(
        client,
        &s.namespace,
        &s.secret,
        &[s.service_dns.as_str()],
    )
    .await
    .map_err(Error::Bootstrap)?;
    let dir = cert.parent().unwrap_or_else(|| std::path::Path::new("."));
    let paths = generated.write_to(dir)?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &s.crd,
        &PatchParams::default(),
        &Patch::Merge(ca_bundle_patch(&generated.ca_pem)),
    )
    .await
    .map_err(|source| Error::InjectCa {
        crd: s.crd.clone(),
        source,
    })?;
    tracing::info!(crd = %s.crd, "injected the CA bundle into the conversion webhook");
    Ok(Some(paths))
}

/// Binds the webhook and serves it among `svc`'s tasks; returns the bound address.
pub async fn start(
    svc: &mut Service<Error>,
    client: &kube::Client,
    config: WebhookConfig,
) -> Result<SocketAddr> {
    let tls_files = bootstrap(client, &config).await?;
    let (listener, addr) = svc
        .bind(
            "the conversion webhook (--webhook-port, WEBHOOK_PORT)",
            config.addr,
        )
        .await?;
    let tls = match &tls_files {
        Some((cert, key)) => Some(svc.tls(cert, key)?),
        None => None,
    };
    tracing::info!(%addr, tls = tls.is_some(), path = PATH, "serving the conversion webhook");
    svc.serve("the conversion webhook", listener, router(), tls);
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(body: &str) -> (StatusCode, String) {
        let resp = convert(Bytes::from(body.to_string())).await;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_BODY)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The conversion counter's value for these labels now.
    fn conversions(from: &str, to: &str, result: &str) -> f64 {
        let text = ballast_runtime::metrics::prometheus().render();
        let labels = [("from", from), ("to", to), ("result", result)];
        let name = crate::metrics::CONVERSION_REQUESTS_TOTAL;
        ballast_runtime::metrics::sample(&text, name, &labels).unwrap_or(0.0)
    }

    #[tokio::test]
    async fn a_conversion_review_is_answered_with_the_converted_objects() {
        let before = conversions("v1", "v2", "success");
        let review = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "request": {"uid": "u-1", "desiredAPIVersion": "apps.mycompany.com/v2", "objects": [
                {"apiVersion": "apps.mycompany.com/v1", "kind": "PodManager",
                 "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 1, "image": "nginx"}}]}});
        let (status, body) = answer(&review.to_string()).await;
        assert_eq!(status, StatusCode::OK);
        let out: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["result"]["status"], "Success");
        assert_eq!(
            out["response"]["convertedObjects"][0]["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
        assert_eq!(conversions("v1", "v2", "success"), before + 1.0, "counted");
    }

    #[tokio::test]
    async fn anything_else_is_a_400_saying_why() {
        let before = conversions("unknown", "unknown", "malformed");
        let (status, body) = answer("not json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body.starts_with("the body is not a ConversionReview: "),
            "{body}"
        );
        let (status, body) = answer(r#"{"kind": "AdmissionReview", "request": {}}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, "the body is not a ConversionReview with a request");
        assert_eq!(
            conversions("unknown", "unknown", "malformed"),
            before + 2.0,
            "both counted as malformed"
        );
    }

    #[test]
    fn the_ca_goes_into_the_conversion_client_config() {
        assert_eq!(
            ca_bundle_patch("PEM"),
            json!({"spec": {"conversion": {"webhook": {"clientConfig": {"caBundle": "UEVN"}}}}})
        );
    }
}
