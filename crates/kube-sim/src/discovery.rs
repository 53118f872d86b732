//! Discovery documents (`/api`, `/apis`, group versions), `/version` and a minimal OpenAPI v3
//! index. Aggregated discovery is not served: clients fall back to these legacy documents.

use serde_json::{Value, json};

use crate::resources::{Registry, ResourceType};

/// The Kubernetes version the simulator claims.
pub const MINOR: &str = "36";

pub fn version() -> Value {
    json!({
        "major": "1", "minor": MINOR, "emulationMajor": "1", "emulationMinor": MINOR,
        "gitVersion": format!("v1.{MINOR}.0-kube-sim"), "gitCommit": "kube-sim",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust", "compiler": "rustc", "platform": "linux/amd64",
    })
}

fn resource_entries(t: &ResourceType) -> Vec<Value> {
    let mut out = vec![json!({
        "name": t.resource, "singularName": t.singular, "namespaced": t.namespaced,
        "kind": t.kind, "verbs": t.verbs(), "shortNames": t.short_names,
        "storageVersionHash": "",
    })];
    if t.resource == "pods" && t.group.is_empty() {
        out[0]["categories"] = json!(["all"]);
    }
    for sub in &t.subresources {
        let mut e = json!({"name": format!("{}/{sub}", t.resource), "singularName": "",
                           "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]});
        match sub.as_str() {
            "eviction" => {
                e["kind"] = json!("Eviction");
                e["group"] = json!("policy");
                e["version"] = json!("v1");
                e["verbs"] = json!(["create"]);
            }
            "binding" => {
                e["kind"] = json!("Binding");
                e["verbs"] = json!(["create"]);
            }
            "token" => {
                e["kind"] = json!("TokenRequest");
                e["group"] = json!("authentication.k8s.io");
                e["version"] = json!("v1");
                e["verbs"] = json!(["create"]);
            }
            "scale" => {
                e["kind"] = json!("Scale");
                e["group"] = json!("autoscaling");
                e["version"] = json!("v1");
            }
            _ => {}
        }
        out.push(e);
    }
    out
}

fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = registry
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": types.iter().flat_map(|t| resource_entries(t)).collect::<Vec<_>>(),
    }))
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first()})
}

/// The OpenAPI v3 index: one entry per group version.
fn openapi_index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, versions) in registry.groups() {
        for v in versions {
            let p = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kube-sim")}),
            );
        }
    }
    json!({"paths": paths})
}

/// A group version's OpenAPI v3 document: operations only (with the group-version-kind and
/// the `fieldValidation` parameter kubectl looks for), schemas left open.
fn openapi_gv(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    for t in registry
        .all()
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let gvk = json!({"group": group, "version": version, "kind": t.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |action: &str| {
            json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
                                       "parameters": params, "responses": {"200": {"description": "OK"}}})
        };
        let base = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", t.resource)
        } else {
            format!("{prefix}/{}", t.resource)
        };
        paths.insert(base.clone(), json!({"get": op("list"), "post": op("post")}));
        paths.insert(format!("{base}/{{name}}"), json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        let def = format!(
            "{}.{}.{}",
            if group.is_empty() {
                "io.k8s.api.core"
            } else {
                group
            },
            version,
            t.kind
        );
        schemas.insert(
            def,
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                   "x-kubernetes-group-version-kind": [gvk]}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": format!("v1.{MINOR}.0")},
                "paths": paths, "components": {"schemas": schemas}}),
    )
}

/// A discovery or OpenAPI document for `path`, if it is one.
pub fn serve(registry: &Registry, path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api"] => Some(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        ["api", v] => resource_list(registry, "", v),
        ["apis"] => {
            let groups: Vec<Value> = registry
                .groups()
                .iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| group_doc(g, vs))
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", g] => registry
            .groups()
            .iter()
            .find(|(name, _)| name == g)
            .map(|(name, vs)| {
                let mut d = group_doc(name, vs);
                d["kind"] = json!("APIGroup");
                d["apiVersion"] = json!("v1");
                d
            }),
        ["apis", g, v] => resource_list(registry, g, v),
        ["openapi", "v3"] => Some(openapi_index(registry)),
        ["openapi", "v3", "api", v] => openapi_gv(registry, "", v),
        ["openapi", "v3", "apis", g, v] => openapi_gv(registry, g, v),
        _ => None,
    }
}
