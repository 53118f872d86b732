//! Decoding of the few protobuf request bodies kubectl sends through its typed clients
//! (`kubectl create namespace|configmap|secret|serviceaccount`, `kubectl auth can-i`). Bodies of
//! other kinds are refused with 415 and a message naming the kind.

use base64::Engine;
use serde_json::{Map, Value, json};

/// The envelope every Kubernetes protobuf body starts with.
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(out);
        }
    }
    None
}

/// The top-level fields of one message, in order.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((field, Wire::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push((field, Wire::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos = pos.checked_add(8).filter(|e| *e <= buf.len())?,
            5 => pos = pos.checked_add(4).filter(|e| *e <= buf.len())?,
            _ => return None,
        }
    }
    Some(out)
}

#[derive(Clone, Copy)]
enum F {
    Str(&'static str),
    Bool(&'static str),
    Msg(&'static str, &'static [(u64, F)]),
    StrList(&'static str),
    StrMap(&'static str),
    BytesMap(&'static str),
}

const OBJECT_META: &[(u64, F)] = &[
    (1, F::Str("name")),
    (2, F::Str("generateName")),
    (3, F::Str("namespace")),
    (6, F::Str("resourceVersion")),
    (11, F::StrMap("labels")),
    (12, F::StrMap("annotations")),
    (14, F::StrList("finalizers")),
];
const NAMESPACE: &[(u64, F)] = &[
    (1, F::Msg("metadata", OBJECT_META)),
    (2, F::Msg("spec", &[(1, F::StrList("finalizers"))])),
];
const CONFIG_MAP: &[(u64, F)] = &[
    (1, F::Msg("metadata", OBJECT_META)),
    (2, F::StrMap("data")),
    (3, F::BytesMap("binaryData")),
    (4, F::Bool("immutable")),
];
const SECRET: &[(u64, F)] = &[
    (1, F::Msg("metadata", OBJECT_META)),
    (2, F::BytesMap("data")),
    (3, F::Str("type")),
    (4, F::StrMap("stringData")),
    (5, F::Bool("immutable")),
];
const SERVICE_ACCOUNT: &[(u64, F)] = &[(1, F::Msg("metadata", OBJECT_META))];
const RESOURCE_ATTRIBUTES: &[(u64, F)] = &[
    (1, F::Str("namespace")),
    (2, F::Str("verb")),
    (3, F::Str("group")),
    (4, F::Str("version")),
    (5, F::Str("resource")),
    (6, F::Str("subresource")),
    (7, F::Str("name")),
];
const ACCESS_REVIEW: &[(u64, F)] = &[
    (1, F::Msg("metadata", OBJECT_META)),
    (
        2,
        F::Msg(
            "spec",
            &[
                (1, F::Msg("resourceAttributes", RESOURCE_ATTRIBUTES)),
                (3, F::Str("user")),
                (4, F::StrList("groups")),
            ],
        ),
    ),
];

fn text(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn map_entry(b: &[u8]) -> Option<(String, &[u8])> {
    let mut key = None;
    let mut value: &[u8] = &[];
    for (f, w) in fields(b)? {
        match (f, w) {
            (1, Wire::Bytes(k)) => key = text(k),
            (2, Wire::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Some((key?, value))
}

fn decode_message(buf: &[u8], schema: &[(u64, F)]) -> Option<Value> {
    let mut out = Map::new();
    for (num, wire) in fields(buf)? {
        let Some((_, f)) = schema.iter().find(|(n, _)| *n == num) else {
            continue;
        };
        match (*f, wire) {
            (F::Str(name), Wire::Bytes(b)) => {
                out.insert(name.into(), json!(text(b)?));
            }
            (F::Bool(name), Wire::Varint(v)) => {
                out.insert(name.into(), json!(v != 0));
            }
            (F::Msg(name, inner), Wire::Bytes(b)) => {
                out.insert(name.into(), decode_message(b, inner)?);
            }
            (F::StrList(name), Wire::Bytes(b)) => {
                let list = out.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(text(b)?));
                }
            }
            (F::StrMap(name), Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let m = out.entry(name).or_insert_with(|| json!({}));
                m[k] = json!(text(v)?);
            }
            (F::BytesMap(name), Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let m = out.entry(name).or_insert_with(|| json!({}));
                m[k] = json!(base64::engine::general_purpose::STANDARD.encode(v));
            }
            _ => return None,
        }
    }
    Some(Value::Object(out))
}

/// The JSON form of a protobuf request body, or why it cannot be read.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("the protobuf body has no k8s envelope")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (f, w) in fields(rest).ok_or("malformed protobuf envelope")? {
        match (f, w) {
            (1, Wire::Bytes(tm)) => {
                for (tf, tw) in fields(tm).ok_or("malformed protobuf type meta")? {
                    match (tf, tw) {
                        (1, Wire::Bytes(v)) => api_version = text(v).unwrap_or_default(),
                        (2, Wire::Bytes(k)) => kind = text(k).unwrap_or_default(),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let schema = match kind.as_str() {
        "Namespace" => NAMESPACE,
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "SelfSubjectAccessReview" | "SubjectAccessReview" => ACCESS_REVIEW,
        other => {
            return Err(format!(
                "kube-sim reads protobuf bodies of Namespace, ConfigMap, Secret, ServiceAccount and access reviews only, not {other:?}; send JSON"
            ));
        }
    };
    let mut obj =
        decode_message(raw, schema).ok_or_else(|| format!("malformed protobuf {kind}"))?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((num << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_namespace_as_kubectl_create_namespace_sends_it() {
        let label = [field(1, b"team"), field(2, b"storage")].concat();
        let meta = [field(1, b"demo"), field(11, &label)].concat();
        let raw = field(1, &meta);
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "demo", "labels": {"team": "storage"}}})
        );
    }

    #[test]
    fn refuses_unknown_kinds_and_garbage() {
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta)].concat();
        assert!(decode(&body).unwrap_err().contains("Deployment"));
        assert!(decode(b"{}").is_err());
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }
}
