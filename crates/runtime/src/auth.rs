//! Caller authentication for side APIs (callbacks, the control service), the way the API
//! server's own delegated auth works: the bearer token goes to a `TokenReview`, the user it names
//! to a `SubjectAccessReview` for the access asked.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

/// Who made a request, as the API server's TokenReview says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl Caller {
    /// The identity used when authentication is off (`--local`).
    pub fn local() -> Self {
        Self {
            username: "local".into(),
            uid: String::new(),
            groups: Vec::new(),
        }
    }
}

/// What the caller wants to do, as SubjectAccessReview resource attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Access {
    /// Access to a cluster-wide resource of a group.
    pub fn new(verb: &str, group: &str, resource: &str) -> Self {
        Self {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: None,
            name: None,
        }
    }

    fn describe(&self) -> String {
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        format!("{} {}", self.verb, resource)
    }
}

/// Why a caller was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, or the API server does not know it (HTTP 401, gRPC UNAUTHENTICATED).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// A known caller without the permission (HTTP 403, gRPC PERMISSION_DENIED).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The API server could not be asked (HTTP 503, gRPC UNAVAILABLE).
    #[error("failed to reach the API server to check the caller: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AuthError::Unauthenticated(_) => "unauthenticated",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::Unavailable(_) => "unavailable",
        }
    }
}

/// How callers are checked.
#[derive(Clone)]
pub enum Authenticator {
    /// TokenReview then SubjectAccessReview against this API server; tokens for the API
    /// server's own audience.
    Kube(kube::Client),
    /// The same, accepting only tokens issued for one of these audiences
    /// (`kubectl create token SA --audience AUD`), so a token sent here is worthless against
    /// the API server and the API server's tokens are refused here. Build with
    /// [`Authenticator::kube`].
    KubeAudiences(kube::Client, Vec<String>),
    /// Everyone is allowed, as [`Caller::local`]. Only for `--local` runs.
    AllowAll,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authenticator::Kube(_) => f.write_str("Authenticator::Kube"),
            Authenticator::KubeAudiences(_, audiences) => {
                write!(f, "Authenticator::KubeAudiences({audiences:?})")
            }
            Authenticator::AllowAll => f.write_str("Authenticator::AllowAll"),
        }
    }
}

impl Authenticator {
    /// TokenReview and SubjectAccessReview through `client`, for tokens of `audiences` (empty:
    /// the API server's own).
    pub fn kube(client: kube::Client, audiences: Vec<String>) -> Self {
        let audiences: Vec<String> = audiences
            .into_iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            Authenticator::Kube(client)
        } else {
            Authenticator::KubeAudiences(client, audiences)
        }
    }

    /// Checks the bearer token and the caller's permission for `access`.
    pub async fn authorize(
        &self,
        bearer: Option<&str>,
        access: &Access,
    ) -> Result<Caller, AuthError> {
        let (client, audiences) = match self {
            Authenticator::AllowAll => return Ok(Caller::local()),
            Authenticator::Kube(client) => (client, &[][..]),
            Authenticator::KubeAudiences(client, audiences) => (client, audiences.as_slice()),
        };
        let token = bearer
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::Unauthenticated("no bearer token in the request".into()))?;

        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
        let caller = caller_from_token_review(&reviewed)?;
        check_audiences(&reviewed, audiences)?;

        let sar = subject_access_review(&caller, access);
        let answered = Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|e| AuthError::Unavailable(format!("SubjectAccessReview failed: {e}")))?;
        check_access(&caller, access, &answered)?;
        Ok(caller)
    }
}

/// The caller a TokenReview answer names, or why it names none.
pub fn caller_from_token_review(review: &TokenReview) -> Result<Caller, AuthError> {
    let status = review.status.as_ref();
    if !status.and_then(|s| s.authenticated).unwrap_or(false) {
        let why = status
            .and_then(|s| s.error.clone())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "the token is not valid".into());
        return Err(AuthError::Unauthenticated(why));
    }
    let user = status.and_then(|s| s.user.as_ref());
    let username = user
        .and_then(|u| u.username.clone())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| AuthError::Unauthenticated("the token names no user".into()))?;
    Ok(Caller {
        username,
        uid: user.and_then(|u| u.uid.clone()).unwrap_or_default(),
        groups: user.and_then(|u| u.groups.clone()).unwrap_or_default(),
    })
}

/// With audiences asked for, an authenticated answer must name one of them in
/// `status.audiences`: an empty list means the token is valid for the API server's audience
/// only (or the reviewing server ignores audiences), which is not what was asked.
pub fn check_audiences(review: &TokenReview, wanted: &[String]) -> Result<(), AuthError> {
    if wanted.is_empty() {
        return Ok(());
    }
    let got = review
        .status
        .as_ref()
        .and_then(|s| s.audiences.as_deref())
        .unwrap_or_default();
    if got.iter().any(|a| wanted.contains(a)) {
        return Ok(());
    }
    Err(AuthError::Unauthenticated(format!(
        "the token is not valid for audience {}; mint one with `kubectl create token \
         SERVICE_ACCOUNT --audience {}`",
        wanted.join(", "),
        wanted[0]
    )))
}

/// The SubjectAccessReview asking whether `caller` may do `access`.
pub fn subject_access_review(caller: &Caller, access: &Access) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.username.clone()),
            uid: Some(caller.uid.clone()).filter(|u| !u.is_empty()),
            groups: Some(caller.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.clone()),
                group: Some(access.group.clone()),
                resource: Some(access.resource.clone()),
                namespace: access.namespace.clone(),
                name: access.name.clone(),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// Turns a SubjectAccessReview answer into a verdict.
pub fn check_access(
    caller: &Caller,
    access: &Access,
    answer: &SubjectAccessReview,
) -> Result<(), AuthError> {
    let status = answer.status.as_ref();
    if status.is_some_and(|s| s.allowed && !s.denied.unwrap_or(false)) {
        return Ok(());
    }
    let reason = status
        .and_then(|s| s.reason.clone().or_else(|| s.evaluation_error.clone()))
        .filter(|r| !r.is_empty())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    Err(AuthError::Forbidden(format!(
        "user \"{}\" may not {}{}",
        caller.username,
        access.describe(),
        reason
    )))
}

/// The token of an `Authorization: Bearer ...` header, if any.
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests;
