//! Properties of kube-sim's label and field selector parsers: any query text parses or is
//! refused without a panic, and selectors written the way `kubectl -l` users write them match
//! exactly the objects Kubernetes' selector semantics say they match.
//!
//! `PROPTEST_CASES` raises the budget (`scripts/fuzz` runs 10^6 per target); without it each
//! target runs a small one so the normal test run stays fast.

use std::collections::BTreeMap;

use kube_sim::selectors::{FieldSelector, LabelSelector};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Cases per target when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    // A failing case is saved beside this file and tried first on every later run.
    config.failure_persistence = Some(Box::new(
        proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
    ));
    config
}

/// Text shaped like selectors (operators, parentheses, commas, spaces) as well as anything.
fn selector_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("=".to_owned()),
        Just("==".to_owned()),
        Just("!=".to_owned()),
        Just("!".to_owned()),
        Just(",".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(" in ".to_owned()),
        Just(" notin ".to_owned()),
        Just(" ".to_owned()),
        "[a-z0-9./-]{1,6}",
        any::<String>(),
    ];
    prop_oneof![
        3 => prop::collection::vec(token, 0..10).prop_map(|t| t.concat()),
        1 => any::<String>(),
    ]
}

/// A valid label key: an optional DNS prefix and a name.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z]{1,2}",
        1 => "[a-z0-9]([a-z0-9._-]{0,6}[a-z0-9])?",
        1 => "[a-z]{1,4}\\.example\\.com/[a-z]{1,3}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z]{1,2}", 1 => "[A-Za-z0-9]([A-Za-z0-9._-]{0,4}[A-Za-z0-9])?"]
}

#[derive(Debug, Clone)]
enum Req {
    Eq(String, String),
    DoubleEq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn req() -> impl Strategy<Value = Req> {
    let values = || prop::collection::vec(value(), 1..4);
    prop_oneof![
        (key(), value()).prop_map(|(k, v)| Req::Eq(k, v)),
        (key(), value()).prop_map(|(k, v)| Req::DoubleEq(k, v)),
        (key(), value()).prop_map(|(k, v)| Req::NotEq(k, v)),
        (key(), values()).prop_map(|(k, v)| Req::In(k, v)),
        (key(), values()).prop_map(|(k, v)| Req::NotIn(k, v)),
        key().prop_map(Req::Exists),
        key().prop_map(Req::NotExists),
    ]
}

/// As a user types it, with optional spaces where `kubectl` allows them.
fn render(r: &Req, spaced: bool) -> String {
    let sp = if spaced { " " } else { "" };
    match r {
        Req::Eq(k, v) => format!("{k}{sp}={sp}{v}"),
        Req::DoubleEq(k, v) => format!("{k}{sp}=={sp}{v}"),
        Req::NotEq(k, v) => format!("{k}{sp}!={sp}{v}"),
        Req::In(k, vs) => format!("{k} in ({})", vs.join(&format!(",{sp}"))),
        Req::NotIn(k, vs) => format!("{k} notin ({})", vs.join(&format!(",{sp}"))),
        Req::Exists(k) => k.clone(),
        Req::NotExists(k) => format!("!{k}"),
    }
}

/// Kubernetes' semantics of one requirement (apimachinery labels.Requirement.Matches).
fn holds(r: &Req, labels: &BTreeMap<String, String>) -> bool {
    match r {
        Req::Eq(k, v) | Req::DoubleEq(k, v) => labels.get(k) == Some(v),
        Req::NotEq(k, v) => labels.get(k) != Some(v),
        Req::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
        Req::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
        Req::Exists(k) => labels.contains_key(k),
        Req::NotExists(k) => !labels.contains_key(k),
    }
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), value(), 0..6)
}

fn object(labels: &BTreeMap<String, String>) -> Value {
    json!({"metadata": {"name": "a", "namespace": "default", "labels": labels},
           "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}})
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_label_selector_text_parses_or_is_refused_never_a_panic(
        text in selector_text(),
        labels in labels(),
    ) {
        if let Ok(selector) = LabelSelector::parse(&text) {
            let _ = selector.matches(&object(&labels));
        }
    }

    #[test]
    fn any_field_selector_text_parses_or_is_refused_never_a_panic(text in selector_text()) {
        if let Ok(selector) = FieldSelector::parse(&text) {
            let _ = selector.matches(&object(&BTreeMap::new()));
            let _ = selector.matches(&json!(["not", "an", "object"]));
        }
    }

    #[test]
    fn label_selectors_match_as_kubernetes_defines_them(
        reqs in prop::collection::vec(req(), 0..4),
        spaced in any::<bool>(),
        labels in labels(),
    ) {
        let text = reqs.iter().map(|r| render(r, spaced)).collect::<Vec<_>>().join(",");
        let selector = LabelSelector::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?} refused: {e}")))?;
        let expected = reqs.iter().all(|r| holds(r, &labels));
        prop_assert_eq!(selector.matches(&object(&labels)), expected, "{:?} on {:?}", text, labels);
        prop_assert_eq!(selector.is_empty(), reqs.is_empty());
    }

    #[test]
    fn structured_selectors_match_like_their_query_form(
        match_labels in prop::collection::btree_map(key(), value(), 0..3),
        exprs in prop::collection::vec(req(), 0..3),
        labels in labels(),
    ) {
        // metav1.LabelSelector has no != operator; the others map one to one.
        let exprs: Vec<Req> = exprs
            .into_iter()
            .filter(|r| matches!(r, Req::In(..) | Req::NotIn(..) | Req::Exists(_) | Req::NotExists(_)))
            .collect();
        let json_exprs: Vec<Value> = exprs
            .iter()
            .map(|r| match r {
                Req::In(k, vs) => json!({"key": k, "operator": "In", "values": vs}),
                Req::NotIn(k, vs) => json!({"key": k, "operator": "NotIn", "values": vs}),
                Req::Exists(k) => json!({"key": k, "operator": "Exists"}),
                Req::NotExists(k) => json!({"key": k, "operator": "DoesNotExist"}),
                _ => unreachable!("filtered above"),
            })
            .collect();
        let structured = json!({"matchLabels": match_labels, "matchExpressions": json_exprs});
        let from_json = LabelSelector::from_json(Some(&structured))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut all: Vec<Req> =
            match_labels.iter().map(|(k, v)| Req::Eq(k.clone(), v.clone())).collect();
        all.extend(exprs);
        let text = all.iter().map(|r| render(r, false)).collect::<Vec<_>>().join(",");
        let from_text = LabelSelector::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?} refused: {e}")))?;
        let o = object(&labels);
        prop_assert_eq!(from_json.matches(&o), from_text.matches(&o));
    }

    #[test]
    fn field_selectors_compare_the_named_fields(
        name in "[a-z]{1,3}",
        node in "[a-z0-9-]{0,4}",
        negate in any::<bool>(),
    ) {
        let o = json!({"metadata": {"name": "a"}, "spec": {"nodeName": node}});
        let op = if negate { "!=" } else { "=" };
        let selector = FieldSelector::parse(&format!("spec.nodeName{op}{name},metadata.name=a"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(selector.matches(&o), (node == name) != negate);
    }
}
