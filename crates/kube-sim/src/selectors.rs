//! Label and field selectors, parsed from query strings and matched against JSON objects.

use std::collections::BTreeMap;

use serde_json::Value;

mod labels;

/// A selector the API server refuses (400), with its message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn unparsable(what: &str) -> ParseError {
    ParseError(format!("unable to parse requirement: {what}"))
}

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector (`a=b,c!=d,e in (f,g),!h,i`). Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl LabelSelector {
    /// Parses a `labelSelector` query as the API server does (`labels.Parse`).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        labels::parse(s).map(Self)
    }

    /// From a metav1.LabelSelector JSON (`matchLabels` + `matchExpressions`); None = match all.
    pub fn from_json(sel: Option<&Value>) -> Result<Self, ParseError> {
        let Some(sel) = sel.filter(|v| !v.is_null()) else {
            return Ok(Self::default());
        };
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Req::Eq(k.clone(), v.as_str().unwrap_or_default().into()));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let op = e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                reqs.push(match op {
                    "In" => Req::In(key, values),
                    "NotIn" => Req::NotIn(key, values),
                    "Exists" => Req::Exists(key),
                    "DoesNotExist" => Req::NotExists(key),
                    other => return Err(unparsable(&format!("unknown operator {other:?}"))),
                });
            }
        }
        Ok(Self(reqs))
    }

    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => labels.get(k) == Some(v),
            Req::NotEq(k, v) => labels.get(k) != Some(v),
            Req::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Req::Exists(k) => labels.contains_key(k),
            Req::NotExists(k) => !labels.contains_key(k),
            Req::Gt(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Req::Lt(k, n) => labels
                .get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_labels(&labels_of(obj))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A field selector (`spec.nodeName=node-1,status.phase!=Running`): any dotted path of the
/// object, compared as a string; a missing field compares as "".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let (path, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(unparsable(&part));
            };
            reqs.push((path.trim().to_string(), eq, value.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let got = field_string(obj, path);
            (got == *want) == *eq
        })
    }
}

/// A dotted field's value as a string ("" when missing; numbers and booleans as written).
pub fn field_string(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "labels": labels}, "spec": {"nodeName": "node-1"}})
    }

    #[test]
    fn label_selector_supports_equality_sets_and_existence() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "app in (web, db)",
            "tier notin (back)",
            "app",
            "!missing",
            "app=web,tier in (front)",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&o), "{s}");
        }
        let no = [
            "app=db",
            "app in (db)",
            "missing",
            "!app",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(&o), "{s}");
        }
    }

    #[test]
    fn label_selector_rejects_garbage() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn label_selector_refuses_what_labels_parse_refuses_with_its_message() {
        let refused = [
            (
                "=b",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            (
                "a in x",
                "unable to parse requirement: found 'x' expected: '('",
            ),
            (
                "a in (x",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "a in (x y)",
                "unable to parse requirement: found 'y', expected: ',' or ')'",
            ),
            ("a,", "found '', expected: identifier after ','"),
            ("a,,b", "found ',', expected: identifier after ','"),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            (
                "a=(",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "!",
                "unable to parse requirement: found '', expected: identifier",
            ),
            (
                "a>x",
                "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
        ];
        for (s, message) in refused {
            assert_eq!(
                LabelSelector::parse(s).map(|_| ()),
                Err(ParseError(message.to_string())),
                "{s}"
            );
        }
    }

    #[test]
    fn label_selector_empty_values_and_numeric_comparisons_mean_what_they_mean_in_kubernetes() {
        let empty = obj(json!({"tier": "", "n": "5"}));
        let web = obj(json!({"tier": "web", "n": "x"}));
        let sel = |s: &str| LabelSelector::parse(s).unwrap();
        assert!(sel("tier in ()").matches(&empty));
        assert!(!sel("tier in ()").matches(&web));
        assert!(sel("tier in (web,)").matches(&empty) && sel("tier in (web,)").matches(&web));
        assert!(sel("tier=").matches(&empty) && !sel("tier=").matches(&web));
        assert!(sel("n>3").matches(&empty) && !sel("n<3").matches(&empty));
        assert!(
            !sel("n>3").matches(&web),
            "a value that is no integer never compares"
        );
        assert!(sel("in in (in)").matches(&obj(json!({"in": "in"}))));
        assert!(sel("!missing , tier notin (x)").matches(&web));
    }

    #[test]
    fn label_selector_from_json_uses_match_labels_and_expressions() {
        let sel = json!({"matchLabels": {"app": "web"},
                         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front"]}]});
        let s = LabelSelector::from_json(Some(&sel)).unwrap();
        assert!(s.matches(&obj(json!({"app": "web", "tier": "front"}))));
        assert!(!s.matches(&obj(json!({"app": "web"}))));
        assert!(
            LabelSelector::from_json(None)
                .unwrap()
                .matches(&obj(json!({})))
        );
    }

    #[test]
    fn field_selector_compares_dotted_paths() {
        let o = obj(json!({}));
        assert!(
            FieldSelector::parse("spec.nodeName=node-1")
                .unwrap()
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("metadata.name=a,spec.nodeName!=node-2")
                .unwrap()
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("spec.nodeName=node-2")
                .unwrap()
                .matches(&o)
        );
        assert!(FieldSelector::parse("spec.missing=").unwrap().matches(&o));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
