//! API errors, rendered as `metav1.Status` with the reasons and codes the real API server uses.

use serde_json::{Value, json};

/// A failed API call, as the client sees it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(404, "NotFound", format!("namespaces \"{ns}\" not found"))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 500 as `apierrors.NewInternalError`: the error is also the one cause.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            code: 500,
            reason: "InternalError".into(),
            message: format!("Internal error occurred: {message}"),
            details: Some(json!({"causes": [{"message": message}]})),
        }
    }

    /// `details.retryAfterSeconds` when positive: the API server then sends a `Retry-After` header.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.details
            .as_ref()
            .and_then(|d| d.get("retryAfterSeconds"))
            .and_then(Value::as_i64)
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_comes_from_positive_details_retry_after_seconds_only() {
        let mut e = ApiError::new(429, "TooManyRequests", "try later");
        assert_eq!(e.retry_after_seconds(), None);
        e.details = Some(json!({"retryAfterSeconds": 7}));
        assert_eq!(e.retry_after_seconds(), Some(7));
        e.details =
            Some(json!({"retryAfterSeconds": 0, "causes": [{"reason": "DisruptionBudget"}]}));
        assert_eq!(e.retry_after_seconds(), None);
        e.details = Some(json!({"retryAfterSeconds": -3}));
        assert_eq!(e.retry_after_seconds(), None);
    }
}
