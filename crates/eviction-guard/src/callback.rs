//! The seed's callbacks, same paths and JSON shapes, served beside `/validate`:
//! `POST /callback/disable-interception` (mode DISABLED), `POST /callback/enable-interception`
//! (back to AUTO), `GET /callback/status`. Writes take the same path as the gRPC SetMode
//! ([`ballast_control::ModeChanges`]: rate limit per client address, TokenReview then
//! SubjectAccessReview for `update` on `interception.control.ballast.dev`, validation, audit);
//! an optional JSON body `{"reason": "..."}` is recorded with the change.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ballast_control::{AuthError, ControlError, MAX_REASON_BYTES, Mode, ModeChanges, Refused};
use ballast_runtime::auth::{Authenticator, bearer_token};
use ballast_runtime::peer::Peer;
use serde_json::{Value, json};

use crate::guard::Guard;

/// Callback bodies hold at most a short reason.
const MAX_CALLBACK_BODY_BYTES: usize = 8 * 1024;

/// Shared by the callback handlers.
pub struct Callbacks {
    guard: Arc<Guard>,
    require_auth_for_reads: bool,
    changes: ModeChanges,
    /// What disabling does to refused deletions, told to the caller.
    after_lift: String,
}

impl Callbacks {
    pub fn new(
        guard: Arc<Guard>,
        auth: Authenticator,
        require_auth_for_reads: bool,
        writes_per_second: NonZeroU32,
    ) -> Arc<Self> {
        Self::with_after_lift(
            guard,
            auth,
            require_auth_for_reads,
            writes_per_second,
            crate::release::after_lift(&crate::release::ReleaseConfig::default()),
        )
    }

    /// [`Callbacks::new`] telling callers `after_lift` when they disable interception.
    pub fn with_after_lift(
        guard: Arc<Guard>,
        auth: Authenticator,
        require_auth_for_reads: bool,
        writes_per_second: NonZeroU32,
        after_lift: String,
    ) -> Arc<Self> {
        Arc::new(Callbacks {
            guard,
            require_auth_for_reads,
            changes: ModeChanges::new(Arc::new(auth), writes_per_second),
            after_lift,
        })
    }
}

/// The callback routes.
pub fn router(callbacks: Arc<Callbacks>) -> Router {
    Router::new()
        .route("/callback/disable-interception", post(disable))
        .route("/callback/enable-interception", post(enable))
        .route("/callback/status", get(status))
        .layer(DefaultBodyLimit::max(MAX_CALLBACK_BODY_BYTES))
        .with_state(callbacks)
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(json!({"status": "error", "message": message.into()})),
    )
        .into_response()
}

fn auth_error(e: &AuthError) -> Response {
    let code = match e {
        AuthError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(code, e.to_string())
}

/// The optional `{"reason": "..."}` body.
fn reason_from_body(body: &[u8], default: &str) -> Result<String, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(default.to_owned());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("failed to read the request body as JSON: {e}"))?;
    match value.get("reason") {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(r)) if r.len() > MAX_REASON_BYTES => {
            Err(format!("reason is longer than {MAX_REASON_BYTES} bytes"))
        }
        Some(Value::String(r)) => Ok(r.clone()),
        Some(_) => Err("reason must be a string".to_owned()),
    }
}

async fn set_mode(
    cb: &Callbacks,
    Peer(peer): Peer,
    headers: &HeaderMap,
    body: &[u8],
    mode: Mode,
    path: &str,
    done: String,
) -> Response {
    let result = cb
        .changes
        .apply(&*cb.guard, path, peer, bearer_token(headers), || {
            reason_from_body(body, &format!("POST {path}")).map(|reason| (mode, reason))
        })
        .await;
    match result {
        Ok(_) => (
            StatusCode::OK,
            axum::Json(json!({"status": "success", "message": done})),
        )
            .into_response(),
        Err(Refused::RateLimited) => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many mode changes; retry in a second",
        ),
        Err(Refused::Auth(e)) => auth_error(&e),
        Err(Refused::Invalid(e)) => error(StatusCode::BAD_REQUEST, e),
        Err(Refused::Failed(e)) => {
            let code = match e {
                ControlError::Conflict(_) => StatusCode::CONFLICT,
                ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                ControlError::FailedPrecondition(_) => StatusCode::PRECONDITION_FAILED,
                ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(code, e.to_string())
        }
    }
}

async fn disable(
    State(cb): State<Arc<Callbacks>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_mode(
        &cb,
        peer,
        &headers,
        &body,
        Mode::Disabled,
        "/callback/disable-interception",
        format!("Interception disabled successfully; {}", cb.after_lift),
    )
    .await
}

async fn enable(
    State(cb): State<Arc<Callbacks>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    set_mode(
        &cb,
        peer,
        &headers,
        &body,
        Mode::Auto,
        "/callback/enable-interception",
        "Interception enabled successfully".to_owned(),
    )
    .await
}

async fn status(State(cb): State<Arc<Callbacks>>, headers: HeaderMap) -> Response {
    if cb.require_auth_for_reads
        && let Err(e) = cb.changes.authorize_read(bearer_token(&headers)).await
    {
        return auth_error(&e);
    }
    let snap = cb.guard.snapshot();
    let mode = cb.guard.mode();
    let p = &snap.protection;
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let cfg = cb.guard.config();
    let watch = cb.guard.node_watch();
    axum::Json(json!({
        "status": "success",
        "data": {
            // the seed's two fields
            "intercepting": p.protecting,
            "notReadyNodes": p.notready,
            // and what an operator needs to act on them
            "mode": p.mode.as_str(),
            "reason": p.reason,
            "since": time(p.since),
            "protectedNodes": p.protected,
            "workerNodes": p.workers,
            "threshold": cfg.threshold,
            // as gRPC shows it (a protobuf Duration in JSON: "300s")
            "window": proto_duration(cfg.window),
            "synced": snap.synced,
            "modeChangedBy": mode.changed_by,
            "modeReason": mode.reason,
            "modeChangedAt": time(mode.changed_at),
            // false: the node cache may be stale (the watch retries; verdicts use the cache)
            "nodeWatch": {
                "healthy": watch.healthy,
                "errors": watch.errors,
                "lastError": watch.last_error,
                "lastErrorAt": time(watch.last_error_at),
            },
        }
    }))
    .into_response()
}

/// A duration as protobuf's JSON mapping writes it: seconds with an `s`, fractions only when
/// there are any ("300s", "1.500s").
pub fn proto_duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let frac = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_written_as_grpc_writes_a_duration() {
        assert_eq!(proto_duration(std::time::Duration::from_secs(300)), "300s");
        assert_eq!(
            proto_duration(std::time::Duration::from_millis(1500)),
            "1.5s"
        );
    }

    #[test]
    fn reason_body_is_optional_bounded_and_must_be_a_string() {
        assert_eq!(reason_from_body(b"", "POST /x"), Ok("POST /x".to_owned()));
        assert_eq!(reason_from_body(b"{}", "d"), Ok("d".to_owned()));
        assert_eq!(
            reason_from_body(br#"{"reason":"drain rack 4"}"#, "d"),
            Ok("drain rack 4".to_owned())
        );
        assert_eq!(
            reason_from_body(br#"{"reason":4}"#, "d"),
            Err("reason must be a string".to_owned())
        );
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(MAX_REASON_BYTES + 1));
        assert!(reason_from_body(long.as_bytes(), "d").is_err());
        assert!(
            reason_from_body(b"{not json", "d")
                .unwrap_err()
                .starts_with("failed to read the request body as JSON")
        );
    }
}
