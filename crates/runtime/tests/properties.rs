//! Properties of the AdmissionReview decoder: whatever bytes arrive, `decode` answers with a
//! usable request or an error, never a panic, and an accepted request can always be answered.
//!
//! `PROPTEST_CASES` raises the budget (`scripts/fuzz` runs 10^6 per target); without it each
//! target runs a small one so the normal test run stays fast.

use ballast_runtime::admission::{Answer, DecodeError, decode, encode};
use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde_json::{Value, json};

const POD_DELETE: &str = include_str!("data/pod-delete-user.json");
const PVC_CREATE: &str = include_str!("data/pvc-create.json");

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

/// Any JSON value, a few levels deep, with the strings the decoder looks at mixed in.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        prop_oneof![
            Just("AdmissionReview"),
            Just("admission.k8s.io/v1"),
            Just("admission.k8s.io/v1beta1"),
            Just("DELETE"),
            Just("CREATE"),
            Just(""),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Object keys: mostly the ones an AdmissionReview has, so that generated values reach deep
/// into the decoder instead of stopping at an unknown field.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "kind", "apiVersion", "request", "uid", "operation", "object", "oldObject",
            "name", "namespace", "userInfo", "resource", "subResource", "dryRun", "options",
            "group", "version", "metadata", "requestKind", "username", "groups",
        ])
        .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// A JSON pointer into a real request, to replace what is there with something else.
fn pointer() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/kind",
        "/apiVersion",
        "/request",
        "/request/uid",
        "/request/kind",
        "/request/kind/kind",
        "/request/resource",
        "/request/name",
        "/request/namespace",
        "/request/operation",
        "/request/userInfo",
        "/request/userInfo/groups",
        "/request/object",
        "/request/oldObject",
        "/request/oldObject/metadata",
        "/request/oldObject/metadata/name",
        "/request/oldObject/metadata/creationTimestamp",
        "/request/oldObject/metadata/labels",
        "/request/object/metadata",
        "/request/object/metadata/annotations",
        "/request/dryRun",
        "/request/options",
        "/request/subResource",
    ])
}

/// Whatever `decode` answers, it is a request the rest of the pipeline can use or a typed error,
/// whether the objects are skipped or decoded whole.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    check_as::<IgnoredAny>(body)?;
    check_as::<Value>(body)
}

fn check_as<'a, O: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<(), TestCaseError> {
    match decode::<O>(body) {
        Ok(req) => {
            prop_assert!(!req.uid.is_empty(), "accepted a request with an empty uid");
            // An accepted request can always be answered, and the answer names its uid.
            let answer = Answer::deny(403, "Forbidden", "no \"quotes\" \u{1} lost");
            let encoded = encode(&req, &answer)
                .map_err(|e| TestCaseError::fail(format!("failed to encode an answer: {e}")))?;
            let answer: Value = serde_json::from_slice(&encoded)
                .map_err(|e| TestCaseError::fail(format!("answer is not JSON: {e}")))?;
            prop_assert_eq!(&answer["response"]["uid"], &json!(req.uid));
            prop_assert_eq!(
                &answer["response"]["status"]["message"],
                &json!("no \"quotes\" \u{1} lost")
            );
            prop_assert_eq!(&answer["kind"], &json!("AdmissionReview"));
        }
        Err(err) => {
            // Every error renders and has a metric label from a closed set.
            prop_assert!(!err.to_string().is_empty());
            prop_assert!(matches!(
                err.metric_label(),
                "json" | "wrong_kind" | "missing_request" | "missing_uid" | "too_large"
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_refused_or_decoded_never_a_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        check(&body)?;
    }

    #[test]
    fn arbitrary_json_is_refused_or_decoded_never_a_panic(value in any_json()) {
        check(&serde_json::to_vec(&value).unwrap())?;
    }

    #[test]
    fn a_real_review_with_any_field_replaced_is_refused_or_decoded(
        delete in any::<bool>(),
        edits in prop::collection::vec((pointer(), any_json()), 1..4),
    ) {
        let mut review: Value =
            serde_json::from_str(if delete { POD_DELETE } else { PVC_CREATE }).unwrap();
        for (at, value) in edits {
            if let Some(slot) = review.pointer_mut(at) {
                *slot = value;
            }
        }
        check(&serde_json::to_vec(&review).unwrap())?;
    }

    #[test]
    fn a_real_review_cut_short_or_with_a_byte_flipped_is_refused_or_decoded(
        delete in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let original = if delete { POD_DELETE } else { PVC_CREATE }.trim_end().as_bytes();
        let mut body = original.to_vec();
        let at = flip.index(body.len());
        body[at] = byte;
        check(&body)?;
        // A strict prefix of the envelope is unbalanced JSON: refused as such.
        let prefix = &original[..cut.index(original.len())];
        let refused = matches!(decode::<IgnoredAny>(prefix), Err(DecodeError::Json(_)));
        prop_assert!(refused, "a strict prefix of a review was not refused as invalid JSON");
    }

    #[test]
    fn reviews_of_the_wrong_kind_or_version_are_refused(
        kind in "[A-Za-z]{0,20}",
        api_version in "[a-z./0-9]{0,30}",
    ) {
        let mut review: Value = serde_json::from_str(POD_DELETE).unwrap();
        review["kind"] = json!(kind);
        review["apiVersion"] = json!(api_version);
        let accepted = kind == "AdmissionReview"
            && matches!(api_version.as_str(), "admission.k8s.io/v1" | "admission.k8s.io/v1beta1");
        let body = serde_json::to_vec(&review).unwrap();
        let result = decode::<IgnoredAny>(&body);
        if accepted {
            prop_assert!(result.is_ok());
        } else {
            let wrong_kind = matches!(result, Err(DecodeError::WrongKind { .. }));
            prop_assert!(wrong_kind, "{kind:?} {api_version:?} not refused as the wrong kind");
        }
    }
}

/// Nesting far beyond what a review holds is refused by the JSON parser's depth limit rather
/// than exhausting the stack.
#[test]
fn deeply_nested_json_is_refused_without_exhausting_the_stack() {
    let depth = 100_000;
    let mut body = String::from(
        r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u","object":"#,
    );
    body.push_str(&"[".repeat(depth));
    body.push_str(&"]".repeat(depth));
    body.push_str("}}");
    assert!(matches!(
        decode::<IgnoredAny>(body.as_bytes()),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        decode::<Value>(body.as_bytes()),
        Err(DecodeError::Json(_))
    ));
}
