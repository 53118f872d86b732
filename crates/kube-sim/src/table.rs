//! Server-side printing (`meta.k8s.io/v1` Table) for kubectl: the columns kubectl shows for the
//! common kinds, `additionalPrinterColumns` for custom resources, NAME and AGE otherwise.

use serde_json::{Value, json};

use crate::apiserver::Sim;
use crate::defaults::condition;
use crate::resources::ResourceType;
use crate::selectors::field_string;
use crate::store::StorageKey;

fn s(obj: &Value, path: &str) -> String {
    field_string(obj, path)
}

/// "5s", "3m", "2h", "4d", like kubectl's AGE column.
pub fn age(created: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(created) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

type Column = (&'static str, &'static str, u8);

fn builtin_columns(rt: &ResourceType) -> Vec<Column> {
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "pods") => vec![
            ("Name", "string", 0),
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        ("", "nodes") => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
        ],
        ("", "namespaces") => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "persistentvolumeclaims") => vec![
            ("Name", "string", 0),
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        ("", "persistentvolumes") => vec![
            ("Name", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            ("Age", "string", 0),
            ("VolumeMode", "string", 1),
        ],
        ("", "events") | ("events.k8s.io", "events") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        ("storage.k8s.io", "storageclasses") => vec![
            ("Name", "string", 0),
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            ("Age", "string", 0),
        ],
        ("", "configmaps") => vec![
            ("Name", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        _ => vec![("Name", "string", 0), ("Age", "string", 0)],
    }
}

fn modes(obj: &Value, ptr: &str) -> String {
    obj.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `<unset>` for an absent optional field, as the real printers show it.
fn unset(v: String) -> String {
    if v.is_empty() { "<unset>".into() } else { v }
}

/// spec.storageClassName, or the beta annotation older objects carry.
fn class_of(obj: &Value) -> String {
    let class = s(obj, "spec.storageClassName");
    if !class.is_empty() {
        return class;
    }
    obj.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn first_non_empty(a: String, b: String) -> String {
    if a.is_empty() { b } else { a }
}

/// An event's cells as the API server prints them (always the wide set; kubectl hides the
/// columns of priority 1 unless `-o wide`). `obj` is a core/v1 Event.
fn event_cells(obj: &Value) -> Vec<Value> {
    let mut core = obj.clone();
    crate::events::convert(&mut core, false);
    let obj = &core;
    let first = first_non_empty(s(obj, "firstTimestamp"), s(obj, "eventTime"));
    let mut last = first_non_empty(s(obj, "lastTimestamp"), first.clone());
    let mut count = obj.get("count").and_then(Value::as_i64).unwrap_or(0);
    if let Some(series) = obj.get("series").filter(|v| v.is_object()) {
        last = series
            .get("lastObservedTime")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        count = series.get("count").and_then(Value::as_i64).unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = s(obj, "involvedObject.kind").to_lowercase();
    let target = match s(obj, "involvedObject.name") {
        n if n.is_empty() => kind,
        n => format!("{kind}/{n}"),
    };
    let component = first_non_empty(s(obj, "source.component"), s(obj, "reportingComponent"));
    let instance = first_non_empty(s(obj, "source.host"), s(obj, "reportingInstance"));
    let source = match (component.is_empty(), instance.is_empty()) {
        (true, _) => String::new(),
        (false, true) => component,
        (false, false) => format!("{component}, {instance}"),
    };
    let when = |t: &str| {
        if t.is_empty() {
            "<unknown>".to_string()
        } else {
            age(t)
        }
    };
    vec![
        json!(when(&last)),
        json!(s(obj, "type")),
        json!(s(obj, "reason")),
        json!(target),
        json!(s(obj, "involvedObject.fieldPath")),
        json!(source),
        json!(s(obj, "message").trim()),
        json!(when(&first)),
        json!(count),
        json!(s(obj, "metadata.name")),
    ]
}

fn builtin_cells(rt: &ResourceType, obj: &Value) -> Vec<Value> {
    let name = json!(s(obj, "metadata.name"));
    let created = age(&s(obj, "metadata.creationTimestamp"));
    match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "pods") => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|c| c.get("ready") == Some(&json!(true)))
                .count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum();
            let status = if obj.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating".to_string()
            } else {
                s(obj, "status.phase")
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts.to_string()),
                json!(created),
                json!(s(obj, "status.podIP")),
                json!(s(obj, "spec.nodeName")),
            ]
        }
        ("", "nodes") => {
            let mut status = match condition(obj, "Ready") {
                Some("True") => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let roles = if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            };
            vec![
                name,
                json!(status),
                json!(roles),
                json!(created),
                json!(s(obj, "status.nodeInfo.kubeletVersion")),
            ]
        }
        ("", "namespaces") => vec![name, json!(s(obj, "status.phase")), json!(created)],
        ("", "persistentvolumeclaims") => {
            // Capacity and access modes only once a volume is named, as the real printer.
            let bound = !s(obj, "spec.volumeName").is_empty();
            let (capacity, access) = if bound {
                (
                    obj.pointer("/status/capacity/storage")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    modes(obj, "/status/accessModes"),
                )
            } else {
                (String::new(), String::new())
            };
            let phase = if obj.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating".to_string()
            } else {
                s(obj, "status.phase")
            };
            vec![
                name,
                json!(phase),
                json!(s(obj, "spec.volumeName")),
                json!(capacity),
                json!(access),
                json!(class_of(obj)),
                json!(unset(s(obj, "spec.volumeAttributesClassName"))),
                json!(created),
                json!(unset(s(obj, "spec.volumeMode"))),
            ]
        }
        ("", "persistentvolumes") => {
            let claim = match (
                s(obj, "spec.claimRef.namespace"),
                s(obj, "spec.claimRef.name"),
            ) {
                (ns, n) if n.is_empty() && ns.is_empty() => String::new(),
                (ns, n) => format!("{ns}/{n}"),
            };
            let phase = if obj.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating".to_string()
            } else {
                s(obj, "status.phase")
            };
            vec![
                name,
                json!(
                    obj.pointer("/spec/capacity/storage")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
                json!(modes(obj, "/spec/accessModes")),
                json!(s(obj, "spec.persistentVolumeReclaimPolicy")),
                json!(phase),
                json!(claim),
                json!(class_of(obj)),
                json!(unset(s(obj, "spec.volumeAttributesClassName"))),
                json!(s(obj, "status.reason")),
                json!(created),
                json!(unset(s(obj, "spec.volumeMode"))),
            ]
        }
        ("", "events") | ("events.k8s.io", "events") => event_cells(obj),
        ("storage.k8s.io", "storageclasses") => {
            let default = obj
                .pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                .or_else(|| {
                    obj.pointer(
                        "/metadata/annotations/storageclass.beta.kubernetes.io~1is-default-class",
                    )
                })
                .and_then(Value::as_str)
                == Some("true");
            let mut shown = s(obj, "metadata.name");
            if default {
                shown.push_str(" (default)");
            }
            let or = |path: &str, fallback: &str| {
                let v = s(obj, path);
                if v.is_empty() {
                    fallback.to_string()
                } else {
                    v
                }
            };
            vec![
                json!(shown),
                json!(s(obj, "provisioner")),
                json!(or("reclaimPolicy", "Delete")),
                json!(or("volumeBindingMode", "Immediate")),
                json!(obj.get("allowVolumeExpansion") == Some(&json!(true))),
                json!(created),
            ]
        }
        ("", "configmaps") => vec![
            name,
            json!(
                obj.get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            ),
            json!(created),
        ],
        _ => vec![name, json!(created)],
    }
}

/// additionalPrinterColumns of the CRD version serving `rt`, if any.
fn crd_columns(sim: &Sim, rt: &ResourceType) -> Option<Vec<Value>> {
    let crd = sim.store.get(
        &StorageKey::new("apiextensions.k8s.io", "customresourcedefinitions"),
        "",
        &format!("{}.{}", rt.resource, rt.group),
    )?;
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(rt.version.as_str()))?
        .get("additionalPrinterColumns")?
        .as_array()
        .cloned()
}

fn row_object(obj: &Value, include_object: bool) -> Value {
    if include_object {
        obj.clone()
    } else {
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata")})
    }
}

/// A Table of `items`; `with_columns` false omits the column definitions (later watch events).
pub fn table(
    sim: &Sim,
    rt: &ResourceType,
    items: &[Value],
    include_object: bool,
    with_columns: bool,
) -> Value {
    let extra = crd_columns(sim, rt);
    let (columns, rows): (Vec<Value>, Vec<Value>) = match extra {
        Some(cols) => {
            let mut defs = vec![
                json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}),
            ];
            for c in &cols {
                defs.push(json!({"name": c.get("name"), "type": c.get("type").cloned().unwrap_or(json!("string")),
                                 "format": c.get("format").cloned().unwrap_or(json!("")),
                                 "description": c.get("description").cloned().unwrap_or(json!("")),
                                 "priority": c.get("priority").cloned().unwrap_or(json!(0))}));
            }
            let has_age = cols
                .iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some("Age"));
            if !has_age {
                defs.push(json!({"name": "Age", "type": "date", "format": "", "description": "", "priority": 0}));
            }
            let rows = items
                .iter()
                .map(|o| {
                    let mut cells = vec![json!(s(o, "metadata.name"))];
                    for c in &cols {
                        let path = c
                            .get("jsonPath")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .trim_start_matches('.');
                        let v = s(o, path);
                        if c.get("type").and_then(Value::as_str) == Some("date") && !v.is_empty() {
                            cells.push(json!(age(&v)));
                        } else {
                            cells.push(json!(v));
                        }
                    }
                    if !has_age {
                        cells.push(json!(age(&s(o, "metadata.creationTimestamp"))));
                    }
                    json!({"cells": cells, "object": row_object(o, include_object)})
                })
                .collect();
            (defs, rows)
        }
        None => {
            let defs = builtin_columns(rt).into_iter().map(|(name, ty, prio)| {
                let format = if name == "Name" { "name" } else { "" };
                json!({"name": name, "type": ty, "format": format, "description": "", "priority": prio})
            }).collect();
            let rows = items.iter().map(|o| json!({"cells": builtin_cells(rt, o), "object": row_object(o, include_object)})).collect();
            (defs, rows)
        }
    };
    let mut t =
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "rows": rows});
    if with_columns {
        t["columnDefinitions"] = json!(columns);
    } else {
        t["columnDefinitions"] = json!([]);
    }
    t
}
