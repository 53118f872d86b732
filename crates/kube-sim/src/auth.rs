//! Who is calling (bearer token → user) and what they may do (the answers to
//! SubjectAccessReviews and to the simulator's own authorization).
//!
//! Built-in grants, as a real cluster's RBAC gives them: `system:masters`, every kube-system
//! service account (`system:serviceaccounts:kube-system`, where the controllers run) and the
//! kubelets (`system:nodes`) may do anything. Everyone else needs a rule added with `allow`.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::{Value, json};

/// The identity of a request, as admission's `userInfo` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn new(username: &str, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self {
            username: username.into(),
            uid: username.into(),
            groups,
        }
    }

    /// `system:serviceaccount:<ns>:<name>` with the groups the API server gives it.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        let sa_ns = format!("system:serviceaccounts:{namespace}");
        Self::new(
            &format!("system:serviceaccount:{namespace}:{name}"),
            &["system:serviceaccounts", &sa_ns],
        )
    }

    /// A kubelet's identity.
    pub fn node(name: &str) -> Self {
        Self::new(&format!("system:node:{name}"), &["system:nodes"])
    }

    pub fn admin() -> Self {
        Self::new("kubernetes-admin", &["system:masters"])
    }

    pub fn to_json(&self) -> Value {
        json!({"username": self.username, "uid": self.uid, "groups": self.groups})
    }
}

/// One grant: a user or group may do `verb` on `group`/`resource` ("*" matches anything;
/// `resource` may name a subresource, as in "pods/eviction").
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    subject: String,
    verb: String,
    group: String,
    resource: String,
}

const SUPERUSER_GROUPS: &[&str] = &[
    "system:masters",
    "system:serviceaccounts:kube-system",
    "system:nodes",
];

/// Control-plane users that are allowed everything.
const SUPERUSERS: &[&str] = &["system:kube-scheduler", "system:kube-controller-manager"];

/// The API server's own audience (its `--api-audiences`, by default the service account issuer
/// `https://kubernetes.default.svc.cluster.local`): what a token is for when it names none, and
/// what a TokenReview checks when its `spec.audiences` is empty.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// A known token: whose it is, which audiences it was issued for, until when.
#[derive(Debug, Clone)]
struct Token {
    user: UserInfo,
    audiences: Vec<String>,
    expires: Option<std::time::SystemTime>,
}

#[derive(Default)]
pub struct Auth {
    tokens: RwLock<HashMap<String, Token>>,
    rules: RwLock<Vec<Rule>>,
}

/// Go's `%q` of a string slice, as the API server's messages print audiences: `["a" "b"]`.
fn quoted(list: &[String]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|a| serde_json::to_string(a).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(" "))
}

impl Auth {
    /// A token for the API server's own audience, that never expires (a static or legacy
    /// service account token).
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.add_token_for(token, user, &[], None);
    }

    /// A token issued for `audiences` (none: the API server's), as a TokenRequest
    /// (`kubectl create token --audience`) issues it.
    pub fn add_token_for(
        &self,
        token: &str,
        user: UserInfo,
        audiences: &[String],
        expires: Option<std::time::SystemTime>,
    ) {
        let audiences = if audiences.is_empty() {
            vec![API_AUDIENCE.to_owned()]
        } else {
            audiences.to_vec()
        };
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.to_string(),
                Token {
                    user,
                    audiences,
                    expires,
                },
            );
    }

    /// Who a request to the simulator itself is from: only tokens for the API server's
    /// audience are accepted, as the real API server does.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.review(token, &[]).ok().map(|(user, _)| user)
    }

    /// A TokenReview's answer: the user and the audiences the token is valid for among those
    /// asked (`requested` empty: the API server's), or the error the real API server reports
    /// (k8s.io/kubernetes pkg/serviceaccount/jwt.go, joined by the union authenticator).
    pub fn review(
        &self,
        token: &str,
        requested: &[String],
    ) -> Result<(UserInfo, Vec<String>), String> {
        let requested: Vec<String> = if requested.is_empty() {
            vec![API_AUDIENCE.to_owned()]
        } else {
            requested.to_vec()
        };
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let known = tokens
            .get(token)
            .ok_or_else(|| "invalid bearer token".to_owned())?;
        if known
            .expires
            .is_some_and(|at| at <= std::time::SystemTime::now())
        {
            return Err("[invalid bearer token, service account token has expired]".to_owned());
        }
        let valid: Vec<String> = known
            .audiences
            .iter()
            .filter(|a| requested.contains(a))
            .cloned()
            .collect();
        if valid.is_empty() {
            return Err(format!(
                "[invalid bearer token, token audiences {} is invalid for the target audiences {}]",
                quoted(&known.audiences),
                quoted(&requested)
            ));
        }
        Ok((known.user.clone(), valid))
    }

    pub fn allow(&self, subject: &str, verb: &str, group: &str, resource: &str) {
        self.rules
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Rule {
                subject: subject.into(),
                verb: verb.into(),
                group: group.into(),
                resource: resource.into(),
            });
    }

    /// Whether `username`/`groups` may do `verb` on `group`/`resource`[/`subresource`].
    pub fn is_allowed(
        &self,
        username: &str,
        groups: &[String],
        verb: &str,
        group: &str,
        resource: &str,
        subresource: Option<&str>,
    ) -> bool {
        if SUPERUSERS.contains(&username)
            || groups
                .iter()
                .any(|g| SUPERUSER_GROUPS.contains(&g.as_str()))
        {
            return true;
        }
        let full = match subresource {
            Some(s) if !s.is_empty() => format!("{resource}/{s}"),
            _ => resource.to_string(),
        };
        let any = |want: &str, got: &str| want == "*" || want == got;
        self.rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|r| {
                (r.subject == username || groups.contains(&r.subject))
                    && any(&r.verb, verb)
                    && any(&r.group, group)
                    && (r.resource == "*" || r.resource == full)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_and_controllers_are_allowed_everything_others_need_a_rule() {
        let auth = Auth::default();
        let admin = UserInfo::admin();
        let nc = UserInfo::service_account("kube-system", "node-controller");
        let bob = UserInfo::new("bob", &["devs"]);
        for u in [&admin, &nc] {
            assert!(auth.is_allowed(&u.username, &u.groups, "delete", "", "pods", None));
        }
        assert!(!auth.is_allowed(&bob.username, &bob.groups, "get", "", "pods", None));
        auth.allow("devs", "get", "", "pods");
        assert!(auth.is_allowed(&bob.username, &bob.groups, "get", "", "pods", None));
        assert!(!auth.is_allowed(
            &bob.username,
            &bob.groups,
            "get",
            "",
            "pods",
            Some("status")
        ));
        assert!(!auth.is_allowed(&bob.username, &bob.groups, "delete", "", "pods", None));
        auth.allow("bob", "create", "", "pods/eviction");
        assert!(auth.is_allowed(
            &bob.username,
            &bob.groups,
            "create",
            "",
            "pods",
            Some("eviction")
        ));
    }

    #[test]
    fn tokens_map_to_their_users() {
        let auth = Auth::default();
        auth.add_token("t1", UserInfo::new("alice", &["g"]));
        let u = auth.authenticate("t1").unwrap();
        assert_eq!(u.username, "alice");
        assert_eq!(u.groups, vec!["g", "system:authenticated"]);
        assert!(auth.authenticate("nope").is_none());
    }

    #[test]
    fn a_token_is_valid_only_for_its_audiences() {
        let auth = Auth::default();
        let user = UserInfo::service_account("ops", "operator");
        auth.add_token_for("t", user.clone(), &["control.example".into()], None);
        auth.add_token("api", user.clone());
        let ours = vec!["control.example".to_owned()];
        assert_eq!(auth.review("t", &ours), Ok((user.clone(), ours.clone())));
        // not for the API server itself, nor for a review naming no audience
        assert!(auth.authenticate("t").is_none());
        assert_eq!(
            auth.review("t", &[]).unwrap_err(),
            "[invalid bearer token, token audiences [\"control.example\"] is invalid for the \
             target audiences [\"https://kubernetes.default.svc.cluster.local\"]]"
        );
        // an API server token is not valid for another audience
        assert!(auth.review("api", &ours).is_err());
        assert_eq!(
            auth.review("api", &[]).map(|(_, a)| a),
            Ok(vec![API_AUDIENCE.to_owned()])
        );
        // several audiences asked: the answer lists those the token is valid for
        let both = vec!["other".to_owned(), "control.example".to_owned()];
        assert_eq!(auth.review("t", &both).map(|(_, a)| a), Ok(ours));
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
        auth.add_token_for("old", user, &[], Some(past));
        assert!(auth.review("old", &[]).unwrap_err().contains("expired"));
    }
}
