//! Who may call the control API: the bearer token from the `authorization` metadata is checked by
//! an [`Authorize`] implementation (in cluster: TokenReview then SubjectAccessReview).

use futures::future::BoxFuture;
use tonic::metadata::MetadataMap;

/// The API group of the SubjectAccessReview resource guarding the control API.
pub const ACCESS_GROUP: &str = "control.ballast.dev";
/// The resource of the SubjectAccessReview guarding the control API.
pub const ACCESS_RESOURCE: &str = "interception";
/// The verb SetMode needs.
pub const VERB_UPDATE: &str = "update";
/// The verb reads need when reads require auth.
pub const VERB_GET: &str = "get";

/// The authenticated caller and why one is refused: the runtime's, one pair for every side API.
pub use ballast_runtime::auth::{AuthError, Caller};

/// The gRPC status of a refused caller.
pub fn status(e: AuthError) -> tonic::Status {
    let msg = e.to_string();
    match e {
        AuthError::Unauthenticated(_) => tonic::Status::unauthenticated(msg),
        AuthError::Forbidden(_) => tonic::Status::permission_denied(msg),
        AuthError::Unavailable(_) => tonic::Status::unavailable(msg),
    }
}

/// Decides whether the holder of `bearer` may perform `verb` on
/// `interception.control.ballast.dev`.
pub trait Authorize: Send + Sync + 'static {
    fn authorize<'a>(
        &'a self,
        bearer: Option<&'a str>,
        verb: &'a str,
    ) -> BoxFuture<'a, Result<Caller, AuthError>>;
}

/// Lets everyone in as user `local`: for `--local` runs only, never in a cluster.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

/// The user name recorded for mode changes when auth is off.
pub const LOCAL_USER: &str = "local";

impl Authorize for AllowAll {
    fn authorize<'a>(
        &'a self,
        _bearer: Option<&'a str>,
        _verb: &'a str,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async { Ok(Caller::local()) })
    }
}

/// In cluster: TokenReview then SubjectAccessReview on `interception.control.ballast.dev`;
/// `AllowAll` admits everyone as `local`.
impl Authorize for ballast_runtime::auth::Authenticator {
    fn authorize<'a>(
        &'a self,
        bearer: Option<&'a str>,
        verb: &'a str,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let access = ballast_runtime::auth::Access::new(verb, ACCESS_GROUP, ACCESS_RESOURCE);
            ballast_runtime::auth::Authenticator::authorize(self, bearer, &access).await
        })
    }
}

/// The token of an `authorization: Bearer <token>` entry (scheme case-insensitive), if any.
pub fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn bearer_token_is_taken_from_the_authorization_metadata() {
        assert_eq!(bearer_token(&md("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(&md("bearer  xyz ")), Some("xyz"));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_token() {
        assert_eq!(bearer_token(&md("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer_token(&md("Bearer ")), None);
        assert_eq!(bearer_token(&md("Bearer")), None);
        assert_eq!(bearer_token(&MetadataMap::new()), None);
    }

    #[test]
    fn auth_errors_map_to_the_matching_grpc_codes() {
        let s = status(AuthError::Unauthenticated("no bearer token".into()));
        assert_eq!(s.code(), tonic::Code::Unauthenticated);
        assert_eq!(s.message(), "unauthenticated: no bearer token");
        let s = status(AuthError::Forbidden("nope".into()));
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        let s = status(AuthError::Unavailable("timeout".into()));
        assert_eq!(s.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn runtime_allow_all_admits_every_caller_as_local() {
        let auth = ballast_runtime::auth::Authenticator::AllowAll;
        let caller = Authorize::authorize(&auth, None, VERB_UPDATE)
            .await
            .unwrap();
        assert_eq!(caller.username, LOCAL_USER);
    }
}
