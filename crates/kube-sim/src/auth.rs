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

#[derive(Default)]
pub struct Auth {
    tokens: RwLock<HashMap<String, UserInfo>>,
    rules: RwLock<Vec<Rule>>,
}

impl Auth {
    pub fn add_token(&self, token: &str, user: UserInfo) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), user);
    }

    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
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
}
