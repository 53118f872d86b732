//! The one path a mode change takes, whatever the transport (gRPC `SetMode`, the seed's HTTP
//! callbacks): rate limit per client address → authorise (`update` on
//! `interception.control.ballast.dev`) → validate → the host's `set_mode`, which writes the
//! audit line of the change. Every refusal is logged on the `audit` target, naming the client.
//!
//! The rate limit comes first, so a flood of calls cannot turn into a flood of TokenReviews; it
//! is per client, so one client's flood does not lock the others out.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use ballast_runtime::peer::{self, PerPeerLimiter};

use crate::auth::{AuthError, Authorize, Caller, VERB_GET, VERB_UPDATE};
use crate::state::{ControlError, ControlState, ModeChange};
use crate::types::{InterceptionState, Mode};

/// Why a mode change was not made; `V` is the transport's validation error.
#[derive(Debug)]
pub enum Refused<V> {
    /// The client sent more changes per second than allowed.
    RateLimited,
    /// The caller is unknown or may not change the mode.
    Auth(AuthError),
    /// The request is malformed (mode, reason).
    Invalid(V),
    /// The host could not store the change.
    Failed(ControlError),
}

impl<V> Refused<V> {
    /// A short label for metrics (`outcome`).
    pub fn outcome(&self) -> &'static str {
        match self {
            Refused::RateLimited => "rate_limited",
            Refused::Auth(AuthError::Unauthenticated(_)) => "unauthenticated",
            Refused::Auth(AuthError::Forbidden(_)) => "forbidden",
            Refused::Auth(AuthError::Unavailable(_)) => "auth_unavailable",
            Refused::Invalid(_) => "invalid",
            Refused::Failed(_) => "store_error",
        }
    }
}

/// The gate every mode change passes, shared by the transports of one host.
pub struct ModeChanges {
    limiter: PerPeerLimiter,
    authorizer: Arc<dyn Authorize>,
}

impl ModeChanges {
    /// `per_second` changes accepted from each client address; callers checked by `authorizer`.
    pub fn new(authorizer: Arc<dyn Authorize>, per_second: NonZeroU32) -> Self {
        ModeChanges {
            limiter: PerPeerLimiter::per_second(per_second),
            authorizer,
        }
    }

    /// Checks a reader (verb `get`), for hosts that require auth for reads.
    pub async fn authorize_read(&self, bearer: Option<&str>) -> Result<Caller, AuthError> {
        self.authorizer.authorize(bearer, VERB_GET).await
    }

    /// Runs one change through the gate. `via` names the transport in the audit log (`SetMode`,
    /// a callback path); `validate` turns the request into the mode and reason once the caller
    /// is known.
    pub async fn apply<S, V>(
        &self,
        state: &S,
        via: &str,
        client: Option<SocketAddr>,
        bearer: Option<&str>,
        validate: impl FnOnce() -> Result<(Mode, String), V>,
    ) -> Result<InterceptionState, Refused<V>>
    where
        S: ControlState + ?Sized,
        V: fmt::Display,
    {
        if !self.limiter.check(client) {
            tracing::warn!(
                target: "audit",
                via,
                client = %peer::display(client),
                "refused a mode change: rate limit reached"
            );
            return Err(Refused::RateLimited);
        }
        let caller = match self.authorizer.authorize(bearer, VERB_UPDATE).await {
            Ok(caller) => caller,
            Err(e) => {
                tracing::warn!(
                    target: "audit",
                    via,
                    client = %peer::display(client),
                    error = %e,
                    "refused a mode change"
                );
                return Err(Refused::Auth(e));
            }
        };
        let (mode, reason) = validate().map_err(|e| {
            tracing::info!(via, user = %caller.username, client = %peer::display(client), error = %e, "refused an invalid mode change");
            Refused::Invalid(e)
        })?;
        let change = ModeChange {
            mode,
            reason,
            caller: caller.username.clone(),
            client,
        };
        // The host writes the audit line: it alone knows the mode it replaced.
        state.set_mode(change).await.map_err(|e| {
            tracing::warn!(via, user = %caller.username, to = %mode, error = %e, "failed to change the mode");
            Refused::Failed(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryState;
    use crate::auth::AllowAll;

    fn client() -> Option<SocketAddr> {
        Some("10.0.0.7:40000".parse().unwrap())
    }

    #[tokio::test]
    async fn a_change_passes_the_gate_and_records_the_caller_and_reason() {
        let gate = ModeChanges::new(Arc::new(AllowAll), NonZeroU32::new(5).unwrap());
        let state = MemoryState::new(InterceptionState::default());
        let result = gate
            .apply(&state, "test", client(), None, || {
                Ok::<_, String>((Mode::Disabled, "drill".to_owned()))
            })
            .await;
        let status = result.unwrap();
        assert_eq!(status.mode, Mode::Disabled);
        assert_eq!(status.mode_changed_by, "local");
        assert_eq!(status.mode_reason, "drill");
    }

    #[tokio::test]
    async fn past_the_rate_the_client_is_refused_before_it_is_authorised_or_validated() {
        let gate = ModeChanges::new(Arc::new(AllowAll), NonZeroU32::MIN);
        let state = MemoryState::new(InterceptionState::default());
        let ok = || Ok::<_, String>((Mode::Forced, "x".to_owned()));
        assert!(gate.apply(&state, "test", client(), None, ok).await.is_ok());
        let refused = gate
            .apply(&state, "test", client(), None, || -> Result<_, String> {
                panic!("validated a rate-limited change")
            })
            .await
            .unwrap_err();
        assert_eq!(refused.outcome(), "rate_limited");
        let other: Option<SocketAddr> = Some("10.0.0.8:40000".parse().unwrap());
        assert!(
            gate.apply(&state, "test", other, None, ok).await.is_ok(),
            "another client has its own allowance"
        );
    }

    #[tokio::test]
    async fn an_invalid_request_is_refused_with_the_transports_error_and_changes_nothing() {
        let gate = ModeChanges::new(Arc::new(AllowAll), NonZeroU32::new(5).unwrap());
        let state = MemoryState::new(InterceptionState::default());
        let before = state.status().borrow().mode;
        let refused = gate
            .apply(&state, "test", client(), None, || {
                Err::<(Mode, String), _>("mode is required".to_owned())
            })
            .await
            .unwrap_err();
        assert_eq!(refused.outcome(), "invalid");
        assert!(matches!(refused, Refused::Invalid(ref m) if m == "mode is required"));
        assert_eq!(state.status().borrow().mode, before);
    }
}
