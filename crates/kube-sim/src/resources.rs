//! The kinds the simulator serves: a fixed table of built-ins plus the versions of every
//! CustomResourceDefinition created at run time.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::crd::CrdInfo;
use crate::errors::ApiError;
use crate::store::StorageKey;

/// What the API layer needs to know about one served resource (group/version/plural).
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Subresources served: "status", "scale", "eviction", "binding".
    pub subresources: Vec<String>,
    /// Create-only review kinds (TokenReview, SubjectAccessReview): answered, never stored.
    pub virtual_review: bool,
    /// Whether `metadata.generation` is maintained (bumped on spec changes).
    pub generation: bool,
    /// For scale subresources of custom resources: JSON paths (without the leading dot).
    pub scale_paths: Option<ScalePaths>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

impl ResourceType {
    pub fn storage_key(&self) -> StorageKey {
        // events.k8s.io/v1 and core v1 Events are one store, as in Kubernetes.
        if self.group == "events.k8s.io" && self.resource == "events" {
            return StorageKey::new("", "events");
        }
        StorageKey::new(&self.group, &self.resource)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.virtual_review {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// `pods` with group: "pods" for the core group, "leases.coordination.k8s.io" otherwise
    /// (the form used in error messages).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    subs: &'static [&'static str],
    generation: bool,
    review: bool,
}

const fn b(
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    subs: &'static [&'static str],
) -> Builtin {
    Builtin {
        group,
        version,
        resource,
        kind,
        namespaced,
        short,
        subs,
        generation: false,
        review: false,
    }
}

const fn gen_(mut x: Builtin) -> Builtin {
    x.generation = true;
    x
}

const fn review(mut x: Builtin) -> Builtin {
    x.review = true;
    x
}

const BUILTINS: &[Builtin] = &[
    b(
        "",
        "v1",
        "namespaces",
        "Namespace",
        false,
        &["ns"],
        &["status"],
    ),
    b("", "v1", "nodes", "Node", false, &["no"], &["status"]),
    gen_(b(
        "",
        "v1",
        "pods",
        "Pod",
        true,
        &["po"],
        &["status", "eviction", "binding"],
    )),
    b(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        &["status"],
    ),
    b(
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
        &["status"],
    ),
    b("", "v1", "events", "Event", true, &["ev"], &[]),
    b("", "v1", "configmaps", "ConfigMap", true, &["cm"], &[]),
    b("", "v1", "secrets", "Secret", true, &[], &[]),
    b("", "v1", "services", "Service", true, &["svc"], &["status"]),
    b(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        &["token"],
    ),
    b("", "v1", "endpoints", "Endpoints", true, &["ep"], &[]),
    b(
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
        &["sc"],
        &[],
    ),
    b(
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
        false,
        &[],
        &["status"],
    ),
    b(
        "storage.k8s.io",
        "v1",
        "csinodes",
        "CSINode",
        false,
        &[],
        &[],
    ),
    // Read by the scheduler's storage capacity check (see controllers::scheduler).
    b(
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "CSIDriver",
        false,
        &[],
        &[],
    ),
    b(
        "storage.k8s.io",
        "v1",
        "csistoragecapacities",
        "CSIStorageCapacity",
        true,
        &[],
        &[],
    ),
    b(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        &[],
        &[],
    ),
    b("events.k8s.io", "v1", "events", "Event", true, &["ev"], &[]),
    gen_(b(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        &["status", "scale"],
    )),
    gen_(b(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        &["status", "scale"],
    )),
    gen_(b(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        &["sts"],
        &["status", "scale"],
    )),
    gen_(b(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        &["ds"],
        &["status"],
    )),
    gen_(b(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        &["status"],
    )),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        &[],
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        &[],
    ),
    gen_(b(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        &[],
    )),
    gen_(b(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
        &[],
    )),
    gen_(b(
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        &[],
    )),
    gen_(b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
        &["crd", "crds"],
        &["status"],
    )),
    review(b(
        "authentication.k8s.io",
        "v1",
        "tokenreviews",
        "TokenReview",
        false,
        &[],
        &[],
    )),
    review(b(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        false,
        &[],
        &[],
    )),
    review(b(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        false,
        &[],
        &[],
    )),
];

/// The built-in kinds.
pub fn builtins() -> Vec<ResourceType> {
    BUILTINS
        .iter()
        .map(|x| ResourceType {
            group: x.group.into(),
            version: x.version.into(),
            resource: x.resource.into(),
            singular: x.kind.to_lowercase(),
            kind: x.kind.into(),
            namespaced: x.namespaced,
            short_names: x.short.iter().map(|s| s.to_string()).collect(),
            subresources: x.subs.iter().map(|s| s.to_string()).collect(),
            virtual_review: x.review,
            generation: x.generation,
            scale_paths: None,
        })
        .collect()
}

/// The served versions of a CustomResourceDefinition (`None` when it is malformed).
pub fn from_crd(crd: &Value) -> Option<Vec<ResourceType>> {
    let spec = crd.get("spec")?;
    let group = spec.get("group")?.as_str()?;
    let names = spec.get("names")?;
    let plural = names.get("plural")?.as_str()?;
    let kind = names.get("kind")?.as_str()?;
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let short_names: Vec<String> = names
        .get("shortNames")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    let mut out = Vec::new();
    for v in spec.get("versions")?.as_array()? {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let Some(version) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        let mut subresources = Vec::new();
        let mut scale_paths = None;
        if let Some(subs) = v.get("subresources") {
            if subs.get("status").is_some() {
                subresources.push("status".to_string());
            }
            if let Some(scale) = subs.get("scale") {
                subresources.push("scale".to_string());
                let path = |k: &str| {
                    scale
                        .get(k)
                        .and_then(Value::as_str)
                        .map(|s| s.trim_start_matches('.').to_string())
                };
                scale_paths = Some(ScalePaths {
                    spec_replicas: path("specReplicasPath").unwrap_or("spec.replicas".into()),
                    status_replicas: path("statusReplicasPath").unwrap_or("status.replicas".into()),
                    label_selector: path("labelSelectorPath"),
                });
            }
        }
        out.push(ResourceType {
            group: group.into(),
            version: version.into(),
            resource: plural.into(),
            singular: singular.clone(),
            kind: kind.into(),
            namespaced,
            short_names: short_names.clone(),
            subresources,
            virtual_review: false,
            generation: true,
            scale_paths,
        });
    }
    // Discovery lists a group's versions by Kubernetes' version priority, the first preferred.
    out.sort_by(|a, b| crate::crd::compare_versions(&a.version, &b.version));
    Some(out)
}

/// Built-ins plus custom resources; looked up on every request.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    types: Vec<ResourceType>,
    /// Schemas, storage version and conversion of each CRD, by (group, plural).
    crds: Vec<(String, String, Arc<CrdInfo>)>,
}

impl Registry {
    pub fn new(crds: &[Value]) -> Self {
        let mut types = builtins();
        let mut infos = Vec::new();
        for crd in crds {
            if let Some(mut t) = from_crd(crd) {
                types.append(&mut t);
            }
            let plural = crd.pointer("/spec/names/plural").and_then(Value::as_str);
            if let (Some(plural), Some(info)) = (plural, CrdInfo::from_crd(crd)) {
                infos.push((info.group.clone(), plural.to_string(), Arc::new(info)));
            }
        }
        Self { types, crds: infos }
    }

    /// What the CRD serving `group`/`resource` says, if it is a custom resource.
    pub fn crd(&self, group: &str, resource: &str) -> Option<Arc<CrdInfo>> {
        self.crds
            .iter()
            .find(|(g, r, _)| g == group && r == resource)
            .map(|(_, _, info)| info.clone())
    }

    pub fn find(&self, group: &str, version: &str, resource: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.resource == resource)
    }

    /// Any version of a resource in a group (webhook rules and garbage collection match on it).
    pub fn find_any_version(&self, group: &str, resource: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.resource == resource)
    }

    /// The first served version of a kind, by apiVersion and kind (for ownerReferences).
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
    }

    pub fn all(&self) -> &[ResourceType] {
        &self.types
    }

    /// Groups in discovery order, each with its versions (first preferred).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in &self.types {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone());
                    }
                }
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        out
    }
}

pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Sets apiVersion and kind as the requested version presents them.
pub fn present(rt: &ResourceType, mut obj: Value) -> Value {
    if rt.resource == "events" {
        crate::events::convert(&mut obj, rt.group == "events.k8s.io");
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(rt.api_version()));
        m.insert("kind".into(), json!(rt.kind));
    }
    obj
}

/// Errors about one object of a served resource, as `apierrors` words them.
impl ApiError {
    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        let mut d = json!({"name": name, "kind": rt.resource});
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        self.details = Some(d);
        self
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
        )
        .with_details(rt, name)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified()),
        )
        .with_details(rt, name)
    }

    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                rt.qualified()
            ),
        )
        .with_details(rt, name)
    }

    pub fn invalid(rt: &ResourceType, name: &str, message: impl Into<String>) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {}", rt.kind, message.into()),
        )
        .with_details(rt, name)
    }
}
