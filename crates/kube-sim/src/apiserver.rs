//! The request pipeline: resolve the kind, authorize, prepare the object, run admission, store.
//! HTTP requests and the simulated controllers both go through [`Sim::execute`], so controllers
//! are subject to admission exactly like the real ones.
//!
//! Layers, each using only those below it: `store`, `resources`, `validation`, `defaults` and
//! `crd` at the bottom; `admission` on a narrow view of the store ([`admission::Api`]); the verbs
//! here, one file each (`read`, `create`, `update`, `delete`, `subresources`) over shared
//! `helpers`; `controllers` and `server` on top, as clients of [`Sim`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admission::{self, AdmissionAttrs, Webhooks};
use crate::auth::{Auth, UserInfo};
use crate::crd::CrdInfo;
use crate::errors::ApiError;
use crate::patch::{self, PatchType};
use crate::resources::{Registry, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Store, StoreError, WatchStart, object_rv};

mod conversion;
mod create;
mod delete;
mod helpers;
mod read;
mod subresources;
mod update;

use helpers::*;

pub use crate::defaults::now;
pub use crate::resources::present;
pub use crate::settings::Settings;

/// Attempts at a patch when the object changes under it (the API server retries internally).
const PATCH_ATTEMPTS: usize = 5;
/// Characters the API server uses for generateName suffixes.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of generated name suffixes.
const NAME_SUFFIX_LEN: usize = 5;

/// Times a DELETE re-reads and retries after a concurrent write to the object (the API
/// server's storage retries such conflicts the same way, until its own deadline).
const DELETE_CONFLICT_RETRIES: u32 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch(PatchType),
    Delete,
    DeleteCollection,
}

impl Verb {
    /// The RBAC verb.
    pub fn rbac(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch(_) => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// Query parameters.
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let mut m = HashMap::new();
        for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(decode(k), decode(v));
        }
        Self(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.0.get(k).map(String::as_str), Some("true" | "1"))
    }

    pub fn set(mut self, k: &str, v: &str) -> Self {
        self.0.insert(k.into(), v.into());
        self
    }
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""),
                16,
            ) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One API call.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub verb: Verb,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub query: Query,
    pub body: Vec<u8>,
    pub user: UserInfo,
}

impl ApiRequest {
    /// A request from a simulated controller or a test helper.
    pub fn new(verb: Verb, api_version: &str, resource: &str, user: UserInfo) -> Self {
        let (g, v) = crate::resources::split_api_version(api_version);
        Self {
            verb,
            group: g.into(),
            version: v.into(),
            resource: resource.into(),
            subresource: None,
            namespace: None,
            name: None,
            query: Query::default(),
            body: Vec::new(),
            user,
        }
    }

    pub fn ns(mut self, ns: &str) -> Self {
        if !ns.is_empty() {
            self.namespace = Some(ns.into());
        }
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn subresource(mut self, sub: &str) -> Self {
        self.subresource = Some(sub.into());
        self
    }

    pub fn body(mut self, v: &Value) -> Self {
        self.body = serde_json::to_vec(v).unwrap_or_default();
        self
    }
}

/// What a call produced.
pub enum ApiResponse {
    Object(u16, Value),
    /// An object with `Warning` headers (e.g. `unknown field "spec.bogus"`), as the API server
    /// answers a write whose unknown fields it pruned.
    Warned(u16, Value, Vec<String>),
    Watch(Box<WatchPlan>),
}

impl std::fmt::Debug for ApiResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiResponse::Object(c, v) => write!(f, "Object({c}, {v})"),
            ApiResponse::Warned(c, v, w) => write!(f, "Warned({c}, {v}, {w:?})"),
            ApiResponse::Watch(_) => write!(f, "Watch"),
        }
    }
}

/// Everything a watch stream needs, decided synchronously.
pub struct WatchPlan {
    pub rt: ResourceType,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Synthetic ADDED events sent first (watch without a resourceVersion).
    pub initial: Vec<Value>,
    pub start: WatchStart,
    pub bookmarks: bool,
    /// Send a BOOKMARK marking the end of the initial events (`sendInitialEvents=true`).
    pub initial_events_end: bool,
    pub timeout: Duration,
    /// Events at or before this resourceVersion are not sent.
    pub from_rv: u64,
    /// The requested resourceVersion was compacted: the stream is a single ERROR event.
    pub gone: Option<ApiError>,
}

/// What a deletion hands to the controllers that finish it (garbage collector, namespace
/// controller), given to [`Sim::new`] so the API layer does not depend on them.
#[derive(Clone, Copy)]
pub struct DeletionHooks {
    /// An object is gone (by uid): delete or un-own its dependents.
    pub deleted: fn(Arc<Sim>, String),
    /// An object waits on the `orphan` finalizer.
    pub orphan: fn(Arc<Sim>, ResourceType, Value),
    /// A namespace is terminating (by name).
    pub namespace_terminating: fn(Arc<Sim>, String),
}

/// The simulator's shared state.
pub struct Sim {
    pub store: Store,
    registry: RwLock<Registry>,
    pub auth: Auth,
    pub settings: Settings,
    pub webhooks: Webhooks,
    pub failed_nodes: Mutex<HashSet<String>>,
    pub shutdown: CancellationToken,
    hooks: DeletionHooks,
    /// Custom resources as last converted for each served version, by (uid, apiVersion): the
    /// per-version watch caches of the API server (see [`Sim::served_from_cache`]).
    converted: Mutex<HashMap<(String, String), (String, Value)>>,
}

impl Sim {
    pub fn new(
        settings: Settings,
        shutdown: CancellationToken,
        watch_history: usize,
        hooks: DeletionHooks,
    ) -> Self {
        Self {
            store: Store::with_history(watch_history),
            registry: RwLock::new(Registry::new(&[])),
            auth: Auth::default(),
            settings,
            webhooks: Webhooks::default(),
            failed_nodes: Mutex::new(HashSet::new()),
            shutdown,
            hooks,
            converted: Mutex::new(HashMap::new()),
        }
    }

    /// What admission reads from the API server.
    fn admission_api(&self) -> admission::Api<'_> {
        admission::Api {
            store: &self.store,
            webhooks: &self.webhooks,
        }
    }

    pub fn registry(&self) -> Registry {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The CRD of a custom resource (schemas, storage version, conversion); `None` for built-ins.
    pub fn crd_info(&self, rt: &ResourceType) -> Option<Arc<CrdInfo>> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .crd(&rt.group, &rt.resource)
    }

    fn refresh_registry(&self) {
        let crd_key =
            crate::store::StorageKey::new("apiextensions.k8s.io", "customresourcedefinitions");
        let (crds, _) = self.store.list(&crd_key, None);
        let live: Vec<Value> = crds
            .into_iter()
            .filter(|c| meta_str(c, "deletionTimestamp").is_none())
            .collect();
        *self.registry.write().unwrap_or_else(|e| e.into_inner()) = Registry::new(&live);
    }

    pub fn resolve(
        &self,
        group: &str,
        version: &str,
        resource: &str,
    ) -> Result<ResourceType, ApiError> {
        self.registry()
            .find(group, version, resource)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            })
    }

    /// Runs one API call as `req.user`.
    pub async fn execute(self: &Arc<Self>, req: ApiRequest) -> Result<ApiResponse, ApiError> {
        let rt = self.resolve(&req.group, &req.version, &req.resource)?;
        if rt.namespaced && req.namespace.is_none() && !matches!(req.verb, Verb::List | Verb::Watch)
        {
            return Err(ApiError::not_found(
                &rt,
                req.name.as_deref().unwrap_or_default(),
            ));
        }
        if !self.auth.is_allowed(
            &req.user.username,
            &req.user.groups,
            req.verb.rbac(),
            &rt.group,
            &rt.resource,
            req.subresource.as_deref(),
        ) {
            let scope = match &req.namespace {
                Some(ns) => format!(" in the namespace \"{ns}\""),
                None => " at the cluster scope".into(),
            };
            let res = match &req.subresource {
                Some(s) => format!("{}/{s}", rt.resource),
                None => rt.resource.clone(),
            };
            let group = if rt.group.is_empty() {
                "\"\"".to_string()
            } else {
                format!("\"{}\"", rt.group)
            };
            return Err(ApiError::forbidden(format!(
                "{} is forbidden: User \"{}\" cannot {} resource \"{res}\" in API group {group}{scope}",
                rt.qualified(),
                req.user.username,
                req.verb.rbac()
            )));
        }
        if let Some(sub) = &req.subresource
            && !rt.has_subresource(sub)
        {
            return Err(ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
        let warnings = self.unknown_field_warnings(&rt, &req);
        let response = match req.verb {
            Verb::Get => self
                .get(&rt, &req)
                .await
                .map(|v| ApiResponse::Object(200, v)),
            Verb::List => self
                .list(&rt, &req)
                .await
                .map(|v| ApiResponse::Object(200, v)),
            Verb::Watch => self
                .watch(rt, &req)
                .map(|p| ApiResponse::Watch(Box::new(p))),
            Verb::Create => self.create(&rt, &req).await,
            Verb::Update => self.update(&rt, &req).await,
            Verb::Patch(kind) => self.patch(&rt, &req, kind).await,
            Verb::Delete => self.delete(&rt, &req).await,
            Verb::DeleteCollection => self.delete_collection(&rt, &req).await,
        };
        match response {
            Ok(ApiResponse::Object(code, v)) if !warnings.is_empty() => {
                Ok(ApiResponse::Warned(code, v, warnings))
            }
            other => other,
        }
    }

    /// `unknown field "..."` for each field of a custom resource write that its schema prunes
    /// (`fieldValidation` Warn, the default; Strict refuses them, Ignore says nothing).
    fn unknown_field_warnings(&self, rt: &ResourceType, req: &ApiRequest) -> Vec<String> {
        let body_is_object = matches!(
            req.verb,
            Verb::Create | Verb::Update | Verb::Patch(PatchType::Merge | PatchType::Apply)
        );
        if !body_is_object
            || req.subresource.as_deref() == Some("scale")
            || req.query.get("fieldValidation") == Some("Ignore")
        {
            return Vec::new();
        }
        let Some(info) = self.crd_info(rt) else {
            return Vec::new();
        };
        let Ok(body) = patch::parse_apply(&req.body) else {
            return Vec::new();
        };
        info.unknown_fields(&rt.version, &body)
            .into_iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect()
    }

    /// [`Sim::execute`] for calls that return an object.
    pub async fn call(self: &Arc<Self>, req: ApiRequest) -> Result<Value, ApiError> {
        match self.execute(req).await? {
            ApiResponse::Object(_, v) | ApiResponse::Warned(_, v, _) => Ok(v),
            ApiResponse::Watch(_) => Err(ApiError::bad_request("unexpected watch")),
        }
    }

    fn namespace_of(&self, rt: &ResourceType, req: &ApiRequest) -> String {
        if rt.namespaced {
            req.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        }
    }

    fn current(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.store
            .get(&rt.storage_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(rt, name))
    }
}

#[cfg(test)]
mod tests;
