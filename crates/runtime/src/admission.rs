//! Admission plumbing: decode an `AdmissionReview`, hand the request to a service's pure
//! handler, encode the answer. Bodies that are not an AdmissionReview get a 400 naming what is
//! wrong; bodies over [`MAX_BODY_BYTES`] get a 413; nothing here panics on input.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
pub use kube::core::DynamicObject;
pub use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::response::Status;

/// The largest AdmissionReview accepted. An object may be up to 1.5 MiB (etcd's request limit)
/// and an UPDATE carries it twice (`object` and `oldObject`), plus the envelope.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Request bodies buffered at once, across every webhook of the process, in KiB: one budget for
/// bodies up to [`SMALL_BODY_BYTES`] and one for larger ones (or of unknown length), so that
/// reviews of ordinary size (a few KiB) never queue behind large ones. With the body cap this
/// bounds buffering memory to 96 MiB whatever clients send.
const SMALL_BUDGET_KIB: u32 = 32 * 1024;
const LARGE_BUDGET_KIB: u32 = 64 * 1024;
/// Largest body that draws on the small budget.
const SMALL_BODY_BYTES: u64 = 256 * 1024;

/// Which budget a request draws on and how many KiB it reserves: its declared length, or the
/// cap when it declares none (chunked). `None` when the declared length is over the cap: refuse
/// without reading.
fn reservation(content_length: Option<u64>) -> Option<(&'static tokio::sync::Semaphore, u32)> {
    static SMALL: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(SMALL_BUDGET_KIB as usize);
    static LARGE: tokio::sync::Semaphore =
        tokio::sync::Semaphore::const_new(LARGE_BUDGET_KIB as usize);
    let bytes = match content_length {
        Some(len) if len > MAX_BODY_BYTES as u64 => return None,
        Some(len) => len,
        None => MAX_BODY_BYTES as u64,
    };
    let kib = u32::try_from(bytes.div_ceil(1024).max(1)).ok()?;
    let budget = if bytes <= SMALL_BODY_BYTES {
        &SMALL
    } else {
        &LARGE
    };
    Some((budget, kib))
}

/// A service's admission decision. The handler sees only decoded requests.
pub trait Handler: Send + Sync + 'static {
    fn review(
        &self,
        req: AdmissionRequest<DynamicObject>,
    ) -> impl Future<Output = AdmissionResponse> + Send;
}

/// Why a body is not a usable AdmissionReview.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("failed to decode the AdmissionReview: {0}")]
    Json(#[source] serde_json::Error),
    #[error(
        "expected kind AdmissionReview in admission.k8s.io/v1, got kind {kind:?} in {api_version:?}"
    )]
    WrongKind { kind: String, api_version: String },
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    #[error("the AdmissionReview request has an empty uid")]
    MissingUid,
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

impl DecodeError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DecodeError::Json(_) => "json",
            DecodeError::WrongKind { .. } => "wrong_kind",
            DecodeError::MissingRequest => "missing_request",
            DecodeError::MissingUid => "missing_uid",
            DecodeError::TooLarge => "too_large",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            DecodeError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Decodes an AdmissionReview body into its request.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, DecodeError> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(DecodeError::Json)?;
    if review.types.kind != "AdmissionReview"
        || !matches!(
            review.types.api_version.as_str(),
            "admission.k8s.io/v1" | "admission.k8s.io/v1beta1"
        )
    {
        return Err(DecodeError::WrongKind {
            kind: review.types.kind,
            api_version: review.types.api_version,
        });
    }
    let req: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| DecodeError::MissingRequest)?;
    if req.uid.is_empty() {
        return Err(DecodeError::MissingUid);
    }
    Ok(req)
}

/// The upper-case operation name the API server uses, for logs and metric labels.
pub fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// A refusal with an HTTP code (403 Forbidden, 429 TooManyRequests...) and reason that the API
/// server passes on to the client, as `admission webhook "..." denied the request: MESSAGE`.
pub fn deny(
    req: &AdmissionRequest<DynamicObject>,
    code: u16,
    reason: &str,
    message: impl Into<String>,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req);
    response.allowed = false;
    response.result = Status::failure(&message.into(), reason).with_code(code);
    response
}

/// Encodes the answer as the API server documents it: `patch` as a base64 string, as Go encodes
/// `[]byte` (kube-core's type would write an array of numbers, which the API server happens to
/// accept but no client should be asked to).
pub fn encode(response: AdmissionResponse) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine;
    let patch = response
        .patch
        .as_ref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let mut review = serde_json::to_value(response.into_review())?;
    if let (Some(patch), Some(body)) = (patch, review.get_mut("response")) {
        body["patch"] = serde_json::Value::String(patch);
    }
    serde_json::to_vec(&review)
}

/// The POST route of a webhook named `webhook` (used as the metric label).
pub fn route<H: Handler>(webhook: &'static str, handler: Arc<H>) -> MethodRouter {
    // The route records metrics: make sure they land somewhere, whoever builds the router.
    crate::metrics::prometheus();
    post(move |headers: header::HeaderMap, body: Body| {
        let handler = handler.clone();
        async move { handle(webhook, handler.as_ref(), &headers, body).await }
    })
}

async fn handle<H: Handler>(
    webhook: &'static str,
    handler: &H,
    headers: &header::HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let req = match reservation(declared) {
        // Declared too large: refused before a byte of the body is read.
        None => Err(DecodeError::TooLarge),
        Some((budget, kib)) => {
            // Wait for room in the budget before buffering; the permit is returned once the
            // body has been decoded.
            let _permit = budget.acquire_many(kib).await;
            match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
                Ok(bytes) => decode(&bytes),
                Err(_) => Err(DecodeError::TooLarge),
            }
        }
    };
    let req = match req {
        Ok(req) => req,
        Err(err) => {
            tracing::warn!(webhook, error = %err, "rejected a malformed admission request");
            metrics::counter!("admission_malformed_total", "webhook" => webhook, "error" => err.metric_label())
                .increment(1);
            return (err.status(), format!("{err}\n")).into_response();
        }
    };
    let operation = operation_name(&req.operation);
    let response = handler.review(req).await;
    let encoded = encode(response);
    metrics::histogram!("admission_duration_seconds", "webhook" => webhook, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    match encoded {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(bytes),
        )
            .into_response(),
        Err(err) => {
            tracing::error!(webhook, error = %err, "failed to encode the AdmissionReview response");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to encode the response\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests;
