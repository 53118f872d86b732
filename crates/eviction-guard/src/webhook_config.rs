//! The ValidatingWebhookConfiguration the guard needs, scoped to what it refuses (DESIGN §12):
//! one webhook failing closed for DELETE, evictions and deletion-marking UPDATEs once a ready
//! guard serves it (it ships failing open, see [`SHIPPED_DELETIONS_POLICY`]), one failing open
//! for status updates; our own and `kube-system`'s namespaces excluded; `matchConditions`
//! keep kubelet traffic and status updates that mark nothing unready away from the guard.
//! Packaging and the end-to-end test render it from here so they cannot drift from the rules.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::ObjectMeta;

/// Webhook name for deletions and evictions (fails closed while a ready guard serves it).
pub const DELETIONS_WEBHOOK: &str = "deletions.eviction-guard.ballast.dev";
/// The deletions webhook's `failurePolicy` as installed: `Ignore`, so that until a guard is ready
/// (image not pulled yet, crash loop, no caBundle) no pod deletion in the cluster is refused
/// because the guard cannot be called. A ready guard switches it to `Fail`
/// (`ballast_runtime::registration`); the break-glass command sets it back.
pub const SHIPPED_DELETIONS_POLICY: &str = "Ignore";
/// Webhooks a ready guard switches to `failurePolicy: Fail`.
pub const FAIL_CLOSED_WHEN_READY: &[&str] = &[DELETIONS_WEBHOOK];
/// Webhook name for pod status updates (fails open).
pub const STATUS_WEBHOOK: &str = "status.eviction-guard.ballast.dev";
/// Namespaces carrying this label with value `"true"` are never sent to the guard: the shipped
/// Namespace carries it, so the exclusion follows an overlay that renames the namespace (a
/// `kubernetes.io/metadata.name` list would not), and operators can opt other namespaces out.
pub const DISABLE_LABEL: &str = "ballast.dev/disable-webhooks";
/// The API server waits this long for the guard; the eviction pod lookup is bounded below it.
pub const TIMEOUT_SECONDS: i32 = 5;

const NOT_KUBELET: &str = "!request.userInfo.username.startsWith('system:node:')";
const ADDS_DELETION: &str = "request.operation != 'UPDATE' \
    || (has(object.metadata.deletionTimestamp) && !has(oldObject.metadata.deletionTimestamp)) \
    || (has(object.metadata.deletionGracePeriodSeconds) \
        && (!has(oldObject.metadata.deletionGracePeriodSeconds) \
            || object.metadata.deletionGracePeriodSeconds != oldObject.metadata.deletionGracePeriodSeconds))";
const MARKS_UNREADY: &str = "(has(object.status.phase) && object.status.phase == 'Failed') \
    || (has(object.status.conditions) && object.status.conditions.exists(c, \
        (c.type == 'Ready' && c.status != 'True') || (c.type == 'DisruptionTarget' && c.status == 'True')))";

fn rule(operations: &[&str], resources: &[&str]) -> RuleWithOperations {
    RuleWithOperations {
        api_groups: Some(vec![String::new()]),
        api_versions: Some(vec!["v1".to_owned()]),
        operations: Some(operations.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        scope: Some("Namespaced".to_owned()),
    }
}

fn condition(name: &str, expression: &str) -> MatchCondition {
    MatchCondition {
        name: name.to_owned(),
        expression: expression.to_owned(),
    }
}

/// The configuration named `name`, calling the guard at `client_config` (a Service with path
/// `/validate` in a cluster, a URL in tests), skipping `excluded_namespaces`.
pub fn validating_webhook_configuration(
    name: &str,
    client_config: WebhookClientConfig,
    excluded_namespaces: &[&str],
) -> ValidatingWebhookConfiguration {
    let namespace_selector = LabelSelector {
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".to_owned(),
                operator: "NotIn".to_owned(),
                values: Some(
                    excluded_namespaces
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect(),
                ),
            },
            LabelSelectorRequirement {
                key: DISABLE_LABEL.to_owned(),
                operator: "NotIn".to_owned(),
                values: Some(vec!["true".to_owned()]),
            },
        ]),
        match_labels: None,
    };
    let webhook = |name: &str, failure: &str, rules, conditions| ValidatingWebhook {
        name: name.to_owned(),
        admission_review_versions: vec!["v1".to_owned()],
        client_config: client_config.clone(),
        failure_policy: Some(failure.to_owned()),
        match_policy: Some("Equivalent".to_owned()),
        match_conditions: Some(conditions),
        namespace_selector: Some(namespace_selector.clone()),
        object_selector: None,
        rules: Some(rules),
        side_effects: "None".to_owned(),
        timeout_seconds: Some(TIMEOUT_SECONDS),
    };
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "eviction-guard".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            webhook(
                DELETIONS_WEBHOOK,
                SHIPPED_DELETIONS_POLICY,
                vec![
                    rule(&["DELETE", "UPDATE"], &["pods"]),
                    rule(&["CREATE"], &["pods/eviction"]),
                ],
                vec![
                    condition("not-kubelet", NOT_KUBELET),
                    condition("update-adds-deletion", ADDS_DELETION),
                ],
            ),
            webhook(
                STATUS_WEBHOOK,
                "Ignore",
                vec![rule(&["UPDATE"], &["pods/status"])],
                vec![
                    condition("not-kubelet", NOT_KUBELET),
                    condition("marks-unready-or-failed", MARKS_UNREADY),
                ],
            ),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ships_failing_open_and_names_deletions_to_fail_closed_outside_system_namespaces() {
        let cfg = validating_webhook_configuration(
            "eviction-guard",
            WebhookClientConfig {
                url: Some("https://127.0.0.1:8443/validate".to_owned()),
                ..WebhookClientConfig::default()
            },
            &["kube-system", "ballast-system"],
        );
        let hooks = cfg.webhooks.unwrap();
        assert_eq!(hooks.len(), 2);
        let (del, status) = (&hooks[0], &hooks[1]);
        assert_eq!(del.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(status.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(FAIL_CLOSED_WHEN_READY, [del.name.as_str()]);
        let resources = |h: &ValidatingWebhook| -> Vec<String> {
            h.rules
                .iter()
                .flatten()
                .flat_map(|r| {
                    let ops = r.operations.clone().unwrap_or_default().join("+");
                    r.resources
                        .iter()
                        .flatten()
                        .map(move |res| format!("{ops} {res}"))
                })
                .collect()
        };
        assert_eq!(
            resources(del),
            ["DELETE+UPDATE pods", "CREATE pods/eviction"]
        );
        assert_eq!(resources(status), ["UPDATE pods/status"]);
        for h in [del, status] {
            let sel = h.namespace_selector.as_ref().unwrap();
            let req = &sel.match_expressions.as_ref().unwrap()[0];
            assert_eq!(req.operator, "NotIn");
            assert_eq!(
                req.values.as_deref().unwrap(),
                ["kube-system", "ballast-system"]
            );
            let conds = h.match_conditions.as_ref().unwrap();
            assert_eq!(conds[0].expression, NOT_KUBELET);
            assert_eq!(h.side_effects, "None");
        }
    }
}
