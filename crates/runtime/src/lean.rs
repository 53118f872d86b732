//! Building blocks for a service's own cached shapes of core/v1 objects ("lean" types): decoded
//! straight from the API's JSON with only the fields its decisions read, and Kubernetes
//! resources of their own so that `Api`, kube's watcher and reflector work with them as with
//! k8s-openapi's types.
//!
//! - [`core_v1_resource!`](crate::core_v1_resource) makes a struct with a `metadata: ObjectMeta`
//!   field a core/v1 `kube::Resource`.
//! - [`kept`] decodes a string map (labels, annotations) keeping only the given keys; the values
//!   of the others are skipped unread.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Implements `kube::Resource` for a core/v1 type with a `metadata: ObjectMeta` field:
/// `core_v1_resource!(CachedPod, "Pod", "pods", NamespaceResourceScope)`. The calling crate
/// needs `kube` and `k8s-openapi`.
#[macro_export]
macro_rules! core_v1_resource {
    ($t:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl ::kube::Resource for $t {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($kind)
            }
            fn group(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed("")
            }
            fn version(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> ::std::borrow::Cow<'_, str> {
                ::std::borrow::Cow::Borrowed($plural)
            }
            fn meta(&self) -> &::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut ::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// Decodes an optional string map keeping only `keys` (`None` when none of them is there, or
/// the map is absent or null). For `#[serde(deserialize_with = ...)]` through a one-line
/// wrapper naming the keys.
pub fn kept<'de, D: Deserializer<'de>>(
    d: D,
    keys: &'static [&'static str],
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    d.deserialize_option(Kept(keys))
}

#[derive(Clone, Copy)]
struct Kept(&'static [&'static str]);

impl<'de> Visitor<'de> for Kept {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of strings")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut kept = BTreeMap::new();
        while let Some(key) = map.next_key_seed(Key(self.0))? {
            match key {
                Some(key) => {
                    kept.insert(key.to_owned(), map.next_value::<String>()?);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((!kept.is_empty()).then_some(kept))
    }
}

/// A map key, matched against the keys kept without being copied.
struct Key(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().copied().find(|k| *k == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Meta {
        #[serde(default, deserialize_with = "two")]
        labels: Option<BTreeMap<String, String>>,
    }

    fn two<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
        kept(d, &["a", "b"])
    }

    fn labels(json: &str) -> Option<BTreeMap<String, String>> {
        serde_json::from_str::<Meta>(json).expect("decodes").labels
    }

    #[test]
    fn keeps_only_the_named_keys() {
        let got = labels(r#"{"labels": {"a": "1", "c": "3", "b": "2", "d": "4"}}"#);
        let want: BTreeMap<String, String> = [("a", "1"), ("b", "2")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert_eq!(got, Some(want));
    }

    #[test]
    fn none_when_absent_null_or_without_a_kept_key() {
        assert_eq!(labels("{}"), None);
        assert_eq!(labels(r#"{"labels": null}"#), None);
        assert_eq!(labels(r#"{"labels": {"c": "3"}}"#), None);
    }

    #[test]
    fn a_kept_key_with_a_non_string_value_is_an_error() {
        assert!(serde_json::from_str::<Meta>(r#"{"labels": {"a": 1}}"#).is_err());
    }
}
