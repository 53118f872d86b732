//! Admission plumbing: decode an `AdmissionReview`, hand the request to a service's pure
//! handler, encode the answer. Bodies that are not an AdmissionReview get a 400 naming what is
//! wrong; bodies over [`MAX_BODY_BYTES`] get a 413; nothing here panics on input.
//!
//! A review is decoded into [`Request`], borrowed from the body: strings without escapes are not
//! copied, and `object` / `oldObject` are decoded as the handler's own view of them
//! ([`Handler::Object`]), which names the few fields its decision reads; every other field is
//! skipped without being allocated. The answer ([`Answer`]) is written straight into the
//! response body.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
pub use kube::core::admission::Operation;
use serde::{Deserialize, Serialize};

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

/// For `#[serde(deserialize_with)]`: a field sent as `null` reads as its default, as Go's
/// decoder leaves a struct field alone on `null`.
pub fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `group`, `version` and `kind` of the object under review.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct Kind<'a> {
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    #[serde(borrow, default)]
    pub kind: Cow<'a, str>,
}

/// `group`, `version` and `resource` of the request.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct Resource<'a> {
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    #[serde(borrow, default)]
    pub resource: Cow<'a, str>,
}

/// Who sent the request.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct UserInfo<'a> {
    #[serde(borrow, default)]
    pub username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub groups: Option<Vec<Cow<'a, str>>>,
}

impl UserInfo<'_> {
    /// The user name, empty when the API server sent none.
    pub fn name(&self) -> &str {
        self.username.as_deref().unwrap_or_default()
    }

    /// The user's groups.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().flatten().map(|g| g.as_ref())
    }
}

/// The request of an AdmissionReview, with its objects decoded as `O`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
pub struct Request<'a, O> {
    /// The review's `apiVersion`, echoed in the answer.
    #[serde(skip)]
    pub api_version: Cow<'a, str>,
    #[serde(borrow, default)]
    pub uid: Cow<'a, str>,
    #[serde(borrow, default)]
    pub kind: Kind<'a>,
    #[serde(borrow, default)]
    pub resource: Resource<'a>,
    #[serde(borrow, default)]
    pub sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    pub operation: Operation,
    #[serde(borrow, default)]
    pub user_info: UserInfo<'a>,
    #[serde(default = "none")]
    pub object: Option<O>,
    #[serde(default = "none")]
    pub old_object: Option<O>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

fn none<O>() -> Option<O> {
    None
}

impl<O> Request<'_, O> {
    /// The namespace, empty for cluster-scoped objects.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    /// The subresource, empty for the main resource.
    pub fn sub_resource(&self) -> &str {
        self.sub_resource.as_deref().unwrap_or_default()
    }

    /// Whether the request changes nothing (`dryRun`).
    pub fn is_dry_run(&self) -> bool {
        self.dry_run == Some(true)
    }
}

/// The AdmissionReview around a request; `response` and anything else are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "O: Deserialize<'de>"))]
struct Review<'a, O> {
    #[serde(borrow, default)]
    api_version: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
    #[serde(default = "none")]
    request: Option<Request<'a, O>>,
}

/// A refusal: the HTTP code (403 Forbidden, 429 TooManyRequests...), reason and message the API
/// server passes on to the client as `admission webhook "..." denied the request: MESSAGE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details.retryAfterSeconds`, which the API server turns into a `Retry-After` header.
    pub retry_after_seconds: Option<u32>,
}

/// A handler's answer to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// None: allowed.
    pub refusal: Option<Refusal>,
    /// A JSON patch (RFC 6902) of the object, serialized.
    pub patch: Option<Vec<u8>>,
    /// Warnings for the client.
    pub warnings: Vec<String>,
}

impl Answer {
    /// Allowed, unchanged.
    pub fn allow() -> Self {
        Answer::default()
    }

    /// Refused with `code` and `reason`.
    pub fn deny(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Answer {
            refusal: Some(Refusal {
                code,
                reason,
                message: message.into(),
                retry_after_seconds: None,
            }),
            ..Answer::default()
        }
    }

    /// Adds a retry hint to a refusal.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        if let Some(refusal) = &mut self.refusal {
            refusal.retry_after_seconds = Some(seconds);
        }
        self
    }

    /// Allowed with `patch` applied.
    pub fn with_patch(mut self, patch: &json_patch::Patch) -> Result<Self, serde_json::Error> {
        self.patch = Some(serde_json::to_vec(patch)?);
        Ok(self)
    }

    /// Adds warnings for the client.
    pub fn with_warnings(mut self, warnings: impl IntoIterator<Item = String>) -> Self {
        self.warnings.extend(warnings);
        self
    }

    pub fn allowed(&self) -> bool {
        self.refusal.is_none()
    }
}

/// A service's admission decision. The handler sees only decoded requests.
pub trait Handler: Send + Sync + 'static {
    /// What the handler reads of `object` and `oldObject`: a view naming only those fields.
    type Object<'a>: Deserialize<'a> + Send + Sync;

    fn review<'r, 'a: 'r>(
        &'r self,
        req: &'r Request<'a, Self::Object<'a>>,
    ) -> impl Future<Output = Answer> + Send + 'r;
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

/// Decodes an AdmissionReview body into its request, borrowing from `body`.
pub fn decode<'a, O: Deserialize<'a>>(body: &'a [u8]) -> Result<Request<'a, O>, DecodeError> {
    let review: Review<'a, O> = serde_json::from_slice(body).map_err(DecodeError::Json)?;
    checked(review)
}

/// Decodes an AdmissionReview already parsed as JSON (tests, tools).
pub fn decode_value<O: Deserialize<'static>>(
    review: serde_json::Value,
) -> Result<Request<'static, O>, DecodeError> {
    checked(Review::deserialize(review).map_err(DecodeError::Json)?)
}

fn checked<O>(review: Review<'_, O>) -> Result<Request<'_, O>, DecodeError> {
    if review.kind != "AdmissionReview"
        || !matches!(
            review.api_version.as_ref(),
            "admission.k8s.io/v1" | "admission.k8s.io/v1beta1"
        )
    {
        return Err(DecodeError::WrongKind {
            kind: review.kind.into_owned(),
            api_version: review.api_version.into_owned(),
        });
    }
    let mut req = review.request.ok_or(DecodeError::MissingRequest)?;
    if req.uid.is_empty() {
        return Err(DecodeError::MissingUid);
    }
    req.api_version = review.api_version;
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

/// The AdmissionReview answer as the API server reads it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// base64, as Go encodes `[]byte`.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Base64<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// A `metav1.Status` of a refusal.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusOut<'a> {
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    reason: &'a str,
    code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<DetailsOut>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailsOut {
    retry_after_seconds: u32,
}

struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::display::Base64Display;
        s.collect_str(&Base64Display::new(
            self.0,
            &base64::engine::general_purpose::STANDARD,
        ))
    }
}

/// Encodes the answer to `req` as the API server documents it: the request's `uid` and
/// `apiVersion`, `status` only on a refusal, `patch` as a base64 string.
pub fn encode<O>(req: &Request<'_, O>, answer: &Answer) -> Result<Vec<u8>, serde_json::Error> {
    let api_version = if req.api_version.is_empty() {
        "admission.k8s.io/v1"
    } else {
        &req.api_version
    };
    let out = ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: &req.uid,
            allowed: answer.allowed(),
            status: answer.refusal.as_ref().map(|r| StatusOut {
                metadata: Empty {},
                status: "Failure",
                message: &r.message,
                reason: r.reason,
                code: r.code,
                details: r.retry_after_seconds.map(|s| DetailsOut {
                    retry_after_seconds: s,
                }),
            }),
            patch_type: answer.patch.as_ref().map(|_| "JSONPatch"),
            patch: answer.patch.as_deref().map(Base64),
            warnings: &answer.warnings,
        },
    };
    let mut body = Vec::with_capacity(256 + answer.refusal.as_ref().map_or(0, |r| r.message.len()));
    serde_json::to_writer(&mut body, &out)?;
    Ok(body)
}

/// The duration histogram of one webhook, per operation, registered once.
struct Durations([metrics::Histogram; 4]);

impl Durations {
    fn new(webhook: &'static str) -> Self {
        let ops = [
            Operation::Create,
            Operation::Update,
            Operation::Delete,
            Operation::Connect,
        ];
        Durations(ops.map(|op| {
            metrics::histogram!("admission_duration_seconds", "webhook" => webhook, "operation" => operation_name(&op))
        }))
    }

    fn of(&self, op: &Operation) -> &metrics::Histogram {
        let i = match op {
            Operation::Create => 0,
            Operation::Update => 1,
            Operation::Delete => 2,
            Operation::Connect => 3,
        };
        &self.0[i]
    }
}

/// The POST route of a webhook named `webhook` (used as the metric label).
pub fn route<H: Handler>(webhook: &'static str, handler: Arc<H>) -> MethodRouter {
    // The route records metrics: make sure they land somewhere, whoever builds the router.
    crate::metrics::prometheus();
    let durations = Arc::new(Durations::new(webhook));
    post(move |headers: header::HeaderMap, body: Body| {
        let handler = handler.clone();
        let durations = durations.clone();
        async move { handle(webhook, handler.as_ref(), &durations, &headers, body).await }
    })
}

async fn handle<H: Handler>(
    webhook: &'static str,
    handler: &H,
    durations: &Durations,
    headers: &header::HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Room in the budget is reserved before the body is buffered and held until the answer is
    // written: the request borrows from the body.
    let mut _permit = None;
    let bytes = match reservation(declared) {
        // Declared too large: refused before a byte of the body is read.
        None => None,
        Some((budget, kib)) => {
            _permit = budget.acquire_many(kib).await.ok();
            axum::body::to_bytes(body, MAX_BODY_BYTES).await.ok()
        }
    };
    let req = match &bytes {
        Some(bytes) => decode::<H::Object<'_>>(bytes),
        None => Err(DecodeError::TooLarge),
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
    let answer = handler.review(&req).await;
    let encoded = encode(&req, &answer);
    durations
        .of(&req.operation)
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
