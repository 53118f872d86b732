//! The request pipeline: resolve the kind, authorize, prepare the object, run admission, store.
//! HTTP requests and the simulated controllers both go through [`Sim::execute`], so controllers
//! are subject to admission exactly like the real ones.

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

/// Attempts at a patch when the object changes under it (the API server retries internally).
const PATCH_ATTEMPTS: usize = 5;
/// Characters the API server uses for generateName suffixes.
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Length of generated name suffixes.
const NAME_SUFFIX_LEN: usize = 5;

/// Times a DELETE re-reads and retries after a concurrent write to the object (the API
/// server's storage retries such conflicts the same way, until its own deadline).
const DELETE_CONFLICT_RETRIES: u32 = 16;

/// Tunables of simulated behaviour the API layer needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// tolerationSeconds of the default not-ready/unreachable tolerations added to pods.
    pub default_toleration_seconds: u64,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Whether the PV controller runs (new claims and volumes get protection finalizers).
    pub pv_binder: bool,
}

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

/// The simulator's shared state.
pub struct Sim {
    pub store: Store,
    registry: RwLock<Registry>,
    pub auth: Auth,
    pub settings: Settings,
    pub webhooks: Webhooks,
    pub failed_nodes: Mutex<HashSet<String>>,
    pub shutdown: CancellationToken,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just set to an object"),
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The object without metadata and status: what `metadata.generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    o
}

fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let suffix: String = (0..NAME_SUFFIX_LEN)
        .map(|_| NAME_ALPHABET[rng.random_range(0..NAME_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let v: Value = serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("failed to decode the request body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body is not an object"));
    }
    Ok(v)
}

/// metadata, spec and status are objects in every kind served: refuse anything else (422) so
/// no later step has to cope with them. A custom resource's spec and status are its schema's
/// business (a type error with the schema's message).
fn check_shape(rt: &ResourceType, obj: &Value, custom: bool) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::invalid(
            rt,
            "",
            "the object must be a JSON object",
        ));
    }
    let fields: &[&str] = if custom {
        &["metadata"]
    } else {
        &["metadata", "spec", "status"]
    };
    for field in fields {
        if let Some(v) = obj.get(*field)
            && !(v.is_object() || v.is_null())
        {
            let name = meta_str(obj, "name").unwrap_or_default();
            return Err(ApiError::invalid(
                rt,
                name,
                format!("{field}: Invalid value: must be an object"),
            ));
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(v) = obj.get("metadata").and_then(|m| m.get(field))
            && !(v.is_object() || v.is_null())
        {
            let name = meta_str(obj, "name").unwrap_or_default();
            return Err(ApiError::invalid(
                rt,
                name,
                format!("metadata.{field}: Invalid value: must be a map of strings"),
            ));
        }
    }
    if rt.group == "admissionregistration.k8s.io" && rt.resource.ends_with("webhookconfigurations")
    {
        crate::admission::validate_configuration(obj)
            .map_err(|e| ApiError::invalid(rt, meta_str(obj, "name").unwrap_or_default(), e))?;
    }
    Ok(())
}

/// What a status update keeps of `new`, as the kind's status strategy (`PrepareForUpdate`):
/// built-in kinds reset `spec` only and keep the metadata written through `/status` (pods also
/// keep their ownerReferences and QoS class, VolumeAttachments their labels, annotations,
/// finalizers and ownerReferences); custom resources take nothing but `status`.
fn status_update(rt: &ResourceType, old: &Value, mut new: Value) -> Value {
    let builtin = crate::resources::builtins()
        .iter()
        .any(|b| b.group == rt.group && b.resource == rt.resource);
    if !builtin || !new.is_object() || !new.get("metadata").is_some_and(Value::is_object) {
        let mut o = old.clone();
        match new.get("status") {
            Some(s) => o["status"] = s.clone(),
            None => {
                if let Some(m) = o.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return o;
    }
    match old.get("spec") {
        Some(spec) => new["spec"] = spec.clone(),
        None => {
            if let Some(m) = new.as_object_mut() {
                m.remove("spec");
            }
        }
    }
    // The QoS class is immutable; old kubelets dropped it, so the server backfills it.
    if rt.group.is_empty()
        && rt.resource == "pods"
        && new.pointer("/status/qosClass").is_none()
        && let Some(qos) = old.pointer("/status/qosClass").cloned()
        && new.get("status").is_some_and(Value::is_object)
    {
        new["status"]["qosClass"] = qos;
    }
    let reset: &[&str] = match (rt.group.as_str(), rt.resource.as_str()) {
        ("", "pods") => &["ownerReferences"],
        ("storage.k8s.io", "volumeattachments") => {
            &["labels", "annotations", "finalizers", "ownerReferences"]
        }
        _ => &[],
    };
    let old_meta = old.get("metadata").cloned().unwrap_or_default();
    let m = meta_mut(&mut new);
    for field in reset {
        match old_meta.get(*field) {
            Some(v) => {
                m.insert((*field).into(), v.clone());
            }
            None => {
                m.remove(*field);
            }
        }
    }
    new
}

/// Go's `omitempty`: the API server never stores (nor shows webhooks) empty metadata maps and
/// lists, so a JSON patch adding under `/metadata/labels` of an object created with
/// `labels: {}` fails there as it does here.
fn omit_empty_meta(obj: &mut Value) {
    let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    for field in [
        "labels",
        "annotations",
        "finalizers",
        "ownerReferences",
        "managedFields",
        "generateName",
    ] {
        let empty = match m.get(field) {
            Some(Value::Null) => true,
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if empty {
            m.remove(field);
        }
    }
}

/// Normalizes and validates the metadata of an object about to be stored (422 Invalid).
fn validate_meta(rt: &ResourceType, obj: &mut Value, creating: bool) -> Result<(), ApiError> {
    omit_empty_meta(obj);
    let errs = crate::validation::validate_meta(rt, obj, creating);
    if errs.is_empty() {
        return Ok(());
    }
    let name = meta_str(obj, "name").unwrap_or_default().to_string();
    tracing::debug!(resource = %rt.qualified(), name = %name, errors = errs.len(), "refused: invalid metadata");
    Err(ApiError::invalid_fields(rt, &name, &errs))
}

/// `fieldValidation=Strict` refuses what the schema would prune (400, as the API server).
fn strict_fields(rt: &ResourceType, req: &ApiRequest, pruned: &[String]) -> Result<(), ApiError> {
    if pruned.is_empty() || req.query.get("fieldValidation") != Some("Strict") {
        return Ok(());
    }
    let unknown: Vec<String> = pruned
        .iter()
        .map(|p| format!("unknown field \"{p}\""))
        .collect();
    Err(ApiError::bad_request(format!(
        "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
        unknown.join(", "),
        kind = rt.kind,
        v = rt.version
    )))
}

fn store_err(e: StoreError, rt: &ResourceType, name: &str) -> ApiError {
    match e {
        StoreError::AlreadyExists => ApiError::already_exists(rt, name),
        StoreError::NotFound => ApiError::not_found(rt, name),
        StoreError::Conflict { .. } => ApiError::conflict(rt, name),
        StoreError::Gone { requested, oldest } => {
            ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
        }
    }
}

/// A client patch that cannot be decoded is a 400; one that does not apply a 422 with the
/// generic message and empty details (`NewGenericServerResponse`), as the API server answers.
fn patch_error(e: patch::PatchError) -> ApiError {
    match e {
        patch::PatchError::Parse(m) => ApiError::bad_request(m),
        patch::PatchError::Apply(m) => {
            tracing::debug!(error = %m, "client patch does not apply");
            let mut err = ApiError::new(
                422,
                "Invalid",
                "the server rejected our request due to an error in our request",
            );
            err.details = Some(json!({}));
            err
        }
    }
}

/// Delete options from the body (DeleteOptions) or the query.
#[derive(Debug, Clone, Default)]
struct DeleteOpts {
    propagation: Option<String>,
    grace: Option<i64>,
    precondition_rv: Option<u64>,
    precondition_uid: Option<String>,
    dry_run: bool,
}

impl DeleteOpts {
    fn from(req: &ApiRequest) -> Self {
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let q = &req.query;
        Self {
            propagation: body
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| q.get("propagationPolicy").map(str::to_string)),
            grace: body
                .get("gracePeriodSeconds")
                .and_then(Value::as_i64)
                .or_else(|| q.get("gracePeriodSeconds").and_then(|s| s.parse().ok())),
            precondition_rv: body
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok()),
            precondition_uid: body
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            dry_run: q.get("dryRun") == Some("All")
                || body
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|v| v == "All")),
        }
    }

    fn to_json(&self) -> Value {
        let mut o = json!({"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1"});
        if let Some(p) = &self.propagation {
            o["propagationPolicy"] = json!(p);
        }
        if let Some(g) = self.grace {
            o["gracePeriodSeconds"] = json!(g);
        }
        if self.dry_run {
            o["dryRun"] = json!(["All"]);
        }
        o
    }
}

fn write_options(kind: &str, req: &ApiRequest) -> Value {
    let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if let Some(fm) = req.query.get("fieldManager") {
        o["fieldManager"] = json!(fm);
    }
    if let Some(fv) = req.query.get("fieldValidation") {
        o["fieldValidation"] = json!(fv);
    }
    if req.query.get("dryRun") == Some("All") {
        o["dryRun"] = json!(["All"]);
    }
    if req.query.flag("force") {
        o["force"] = json!(true);
    }
    o
}

impl Sim {
    pub fn new(settings: Settings, shutdown: CancellationToken, watch_history: usize) -> Self {
        Self {
            store: Store::with_history(watch_history),
            registry: RwLock::new(Registry::new(&[])),
            auth: Auth::default(),
            settings,
            webhooks: Webhooks::default(),
            failed_nodes: Mutex::new(HashSet::new()),
            shutdown,
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

    async fn get(&self, rt: &ResourceType, req: &ApiRequest) -> Result<Value, ApiError> {
        let name = req.name.as_deref().unwrap_or_default();
        let obj = self.current(rt, &self.namespace_of(rt, req), name)?;
        let obj = self.served(rt, obj).await?;
        if req.subresource.as_deref() == Some("scale") {
            return Ok(to_scale(rt, &obj));
        }
        Ok(obj)
    }

    fn selected(&self, rt: &ResourceType, req: &ApiRequest) -> Result<(Vec<Value>, u64), ApiError> {
        let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let ns = req.namespace.as_deref().filter(|_| rt.namespaced);
        let (items, rv) = self.store.list(&rt.storage_key(), ns);
        Ok((
            items
                .into_iter()
                .filter(|o| {
                    let o = present(rt, o.clone());
                    labels.matches(&o) && fields.matches(&o)
                })
                .collect(),
            rv,
        ))
    }

    async fn list(&self, rt: &ResourceType, req: &ApiRequest) -> Result<Value, ApiError> {
        let (mut items, rv) = self.selected(rt, req)?;
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(token) = req.query.get("continue") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            let (ns, name) = decoded.split_once('/').unwrap_or(("", &decoded));
            let after = (ns.to_string(), name.to_string());
            items.retain(|o| {
                let key = (
                    meta_str(o, "namespace").unwrap_or_default().to_string(),
                    meta_str(o, "name").unwrap_or_default().to_string(),
                );
                key > after
            });
        }
        if let Some(limit) = req.query.get("limit").and_then(|l| l.parse::<usize>().ok())
            && limit > 0
            && items.len() > limit
        {
            let remaining = items.len() - limit;
            items.truncate(limit);
            if let Some(last) = items.last() {
                let key = format!(
                    "{}/{}",
                    meta_str(last, "namespace").unwrap_or_default(),
                    meta_str(last, "name").unwrap_or_default()
                );
                meta["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(key));
                meta["remainingItemCount"] = json!(remaining);
            }
        }
        let items = self.served_all(rt, items).await?;
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": meta,
            "items": items,
        }))
    }

    fn watch(&self, rt: ResourceType, req: &ApiRequest) -> Result<WatchPlan, ApiError> {
        let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let namespace = req.namespace.clone().filter(|_| rt.namespaced);
        let rv = req.query.get("resourceVersion");
        let send_initial = req.query.flag("sendInitialEvents");
        let from = match rv {
            None | Some("0") => None,
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
            ),
        };
        let mut gone_error = None;
        let (initial, start, from_rv) = if from.is_none() || send_initial {
            let (items, start) = self
                .store
                .snapshot_and_watch(&rt.storage_key(), namespace.as_deref());
            // Kept as stored: the stream converts them to the requested version.
            let items = items
                .into_iter()
                .filter(|o| {
                    let p = present(&rt, o.clone());
                    labels.matches(&p) && fields.matches(&p)
                })
                .collect();
            let rv = start.rv;
            (items, start, rv)
        } else {
            // Like the API server, a watch from a compacted version starts (200) and its first
            // event is an ERROR with 410 Expired.
            let start = match self.store.watch(from) {
                Ok(start) => start,
                Err(e) => {
                    gone_error = Some(store_err(e, &rt, ""));
                    self.store.watch(None).map_err(|e| store_err(e, &rt, ""))?
                }
            };
            (Vec::new(), start, from.unwrap_or_default())
        };
        let timeout = req
            .query
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        Ok(WatchPlan {
            rt,
            namespace,
            labels,
            fields,
            initial,
            start,
            bookmarks: req.query.flag("allowWatchBookmarks"),
            initial_events_end: send_initial,
            timeout,
            from_rv,
            gone: gone_error,
        })
    }

    fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<(), ApiError> {
        if !rt.namespaced {
            return Ok(());
        }
        let ns_obj = self
            .store
            .get(&crate::store::StorageKey::new("", "namespaces"), "", ns)
            .ok_or_else(|| ApiError::namespace_not_found(ns))?;
        if meta_str(&ns_obj, "deletionTimestamp").is_some() {
            return Err(ApiError::forbidden(format!(
                "{} \"\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.qualified()
            )));
        }
        Ok(())
    }

    async fn create(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ApiError> {
        match req.subresource.as_deref() {
            Some("eviction") => return self.evict(rt, req).await,
            Some("binding") => return self.bind(rt, req).await,
            Some("token") if rt.kind == "ServiceAccount" => {
                return self.token_request(rt, req).await;
            }
            Some(other) => {
                return Err(ApiError::method_not_allowed(format!(
                    "the server does not allow this method on the requested resource ({other})"
                )));
            }
            None => {}
        }
        let mut obj = parse_body(&req.body)?;
        check_shape(rt, &obj, self.crd_info(rt).is_some())?;
        if rt.virtual_review {
            return self.review(rt, req, obj);
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                obj.get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                rt.api_version()
            )));
        }
        let ns = self.namespace_of(rt, req);
        if rt.namespaced {
            if let Some(body_ns) = meta_str(&obj, "namespace")
                && !body_ns.is_empty()
                && body_ns != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            self.check_namespace(rt, &ns)?;
        }
        let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) if !g.is_empty() => generate_name(g),
            _ => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(ns));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            if rt.generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        obj = present(rt, obj);
        omit_empty_meta(&mut obj);
        let crd = self.crd_info(rt);
        if let Some(info) = &crd {
            let pruned = info.decode(&rt.version, &mut obj);
            strict_fields(rt, req, &pruned)?;
        }
        crate::defaults::prepare_create(rt, &mut obj, &self.settings, &self.store);
        let dry_run = req.query.get("dryRun") == Some("All");
        let attrs = AdmissionAttrs {
            rt,
            subresource: None,
            operation: "CREATE",
            namespace: &ns,
            name: &name,
            user: &req.user,
            dry_run,
            options: write_options("CreateOptions", req),
            kind_override: None,
        };
        let validate = |o: &mut Value| validate_meta(rt, o, true);
        let mut obj = admission::admit_validated(self, &attrs, Some(obj), None, &validate)
            .await?
            .unwrap_or(Value::Null);
        crate::defaults::after_admission_create(rt, &mut obj);
        let obj = match &crd {
            Some(info) => self.validated_for_storage(rt, info, obj, None).await?,
            None => obj,
        };
        if dry_run {
            return Ok(ApiResponse::Object(201, self.served(rt, obj).await?));
        }
        let stored = self
            .store
            .create(&rt.storage_key(), obj)
            .map_err(|e| store_err(e, rt, &name))?;
        if rt.group == "apiextensions.k8s.io" {
            self.refresh_registry();
        }
        tracing::debug!(resource = %rt.qualified(), namespace = %ns, name = %name, user = %req.user.username, "created");
        Ok(ApiResponse::Object(201, self.served(rt, stored).await?))
    }

    /// A custom resource written through `rt` after admission: pruned and defaulted again (a
    /// webhook may have patched it), validated in `rt`'s version, converted to storage.
    async fn validated_for_storage(
        &self,
        rt: &ResourceType,
        info: &CrdInfo,
        mut obj: Value,
        sub: Option<&str>,
    ) -> Result<Value, ApiError> {
        info.decode(&rt.version, &mut obj);
        info.validate(&rt.version, &obj, sub)?;
        self.for_storage(info, obj).await
    }

    /// Prepares `new` as the replacement of `old` for a main-resource or status update.
    fn prepare_update(rt: &ResourceType, sub: Option<&str>, old: &Value, new: Value) -> Value {
        let mut out = match sub {
            Some("status") => status_update(rt, old, new),
            _ => {
                let mut o = new;
                if rt.has_subresource("status") {
                    match old.get("status") {
                        Some(s) => o["status"] = s.clone(),
                        None => {
                            if let Some(m) = o.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                o
            }
        };
        let old_meta = old.get("metadata").cloned().unwrap_or_default();
        let m = meta_mut(&mut out);
        for keep in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ] {
            match old_meta.get(keep) {
                Some(v) => {
                    m.insert(keep.into(), v.clone());
                }
                None => {
                    m.remove(keep);
                }
            }
        }
        let old_gen = old_meta.get("generation").and_then(Value::as_i64);
        match old_gen {
            Some(g) => {
                m.insert("generation".into(), json!(g));
            }
            None => {
                m.remove("generation");
            }
        }
        if rt.generation && spec_part(old) != spec_part(&out) {
            let g = old_gen.unwrap_or(0) + 1;
            meta_mut(&mut out).insert("generation".into(), json!(g));
        }
        present(rt, out)
    }

    /// Admission and storage of an update; `expected` is the resourceVersion precondition.
    async fn commit_update(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
        old: &Value,
        new: Value,
        expected: Option<u64>,
    ) -> Result<Value, ApiError> {
        let ns = self.namespace_of(rt, req);
        let name = req.name.clone().unwrap_or_default();
        let dry_run = req.query.get("dryRun") == Some("All");
        let sub = req.subresource.as_deref();
        let crd = self.crd_info(rt);
        let mut new = new;
        if let Some(info) = &crd {
            let pruned = info.decode(&rt.version, &mut new);
            strict_fields(rt, req, &pruned)?;
        }
        let attrs = AdmissionAttrs {
            rt,
            subresource: sub,
            operation: "UPDATE",
            namespace: &ns,
            name: &name,
            user: &req.user,
            dry_run,
            options: write_options("UpdateOptions", req),
            kind_override: None,
        };
        // A mutating webhook may only change what this request may change: the strategy's reset
        // runs again on the mutated object, before validation.
        let validate = |o: &mut Value| {
            *o = Self::prepare_update(rt, sub, old, o.take());
            validate_meta(rt, o, false)
        };
        let admitted = admission::admit_validated(
            self,
            &attrs,
            Some(new),
            Some(&present(rt, old.clone())),
            &validate,
        )
        .await?
        .unwrap_or(Value::Null);
        let new = Self::prepare_update(rt, sub, old, admitted);
        let new = match &crd {
            Some(info) => self.validated_for_storage(rt, info, new, sub).await?,
            None => new,
        };
        if dry_run {
            return self.served(rt, new).await;
        }
        let deleting = meta_str(&new, "deletionTimestamp").is_some();
        let stored = self
            .store
            .update(&rt.storage_key(), new, expected)
            .map_err(|e| store_err(e, rt, &name))?;
        if deleting && finalizers(&stored).is_empty() {
            let gone = self
                .store
                .delete(&rt.storage_key(), &ns, &name, None)
                .map_err(|e| store_err(e, rt, &name))?;
            self.after_delete(rt, &gone);
            return self.served(rt, gone).await;
        }
        if rt.group == "apiextensions.k8s.io" {
            self.refresh_registry();
        }
        self.served(rt, stored).await
    }

    async fn update(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ApiError> {
        let ns = self.namespace_of(rt, req);
        let name = req.name.clone().unwrap_or_default();
        let body = parse_body(&req.body)?;
        check_shape(rt, &body, self.crd_info(rt).is_some())?;
        if req.subresource.as_deref() == Some("scale") {
            let old = self.current(rt, &ns, &name)?;
            let old = self.served(rt, old).await?;
            let replicas = body.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
            let new = from_scale(rt, &old, replicas);
            let out = self
                .commit_update(rt, req, &old, new, object_rv(&old))
                .await?;
            return Ok(ApiResponse::Object(200, to_scale(rt, &out)));
        }
        if let Some(n) = meta_str(&body, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.current(rt, &ns, &name)?;
        let old = self.served(rt, old).await?;
        let expected = match object_rv(&body) {
            Some(rv) => Some(rv),
            None => object_rv(&old),
        };
        if let Some(rv) = object_rv(&body)
            && Some(rv) != object_rv(&old)
        {
            return Err(ApiError::conflict(rt, &name));
        }
        let new = Self::prepare_update(rt, req.subresource.as_deref(), &old, body);
        let out = self.commit_update(rt, req, &old, new, expected).await?;
        Ok(ApiResponse::Object(200, out))
    }

    async fn patch(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
        kind: PatchType,
    ) -> Result<ApiResponse, ApiError> {
        let ns = self.namespace_of(rt, req);
        let name = req.name.clone().unwrap_or_default();
        for _ in 0..PATCH_ATTEMPTS {
            let old = match self.store.get(&rt.storage_key(), &ns, &name) {
                Some(o) => o,
                None if kind == PatchType::Apply && req.subresource.is_none() => {
                    let body = patch::parse_apply(&req.body)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    let mut create = req.clone();
                    create.verb = Verb::Create;
                    create.body = serde_json::to_vec(&body).unwrap_or_default();
                    return self.create(rt, &create).await;
                }
                None => return Err(ApiError::not_found(rt, &name)),
            };
            let old = self.served(rt, old).await?;
            let presented = present(rt, old.clone());
            let target = if req.subresource.as_deref() == Some("scale") {
                to_scale(rt, &old)
            } else {
                presented
            };
            let patched = patch::apply_patch(&target, kind, &req.body).map_err(patch_error)?;
            check_shape(rt, &patched, self.crd_info(rt).is_some())?;
            let new = if req.subresource.as_deref() == Some("scale") {
                let replicas = patched
                    .pointer("/spec/replicas")
                    .cloned()
                    .unwrap_or(json!(0));
                from_scale(rt, &old, replicas)
            } else {
                patched
            };
            // A resourceVersion in the patch is a precondition; otherwise the one we patched.
            let expected = match object_rv(&new) {
                Some(rv) if Some(rv) != object_rv(&old) => {
                    return Err(ApiError::conflict(rt, &name));
                }
                _ => object_rv(&old),
            };
            let new = Self::prepare_update(rt, req.subresource.as_deref(), &old, new);
            match self.commit_update(rt, req, &old, new, expected).await {
                Err(e) if e.reason == "Conflict" => continue,
                Err(e) => return Err(e),
                Ok(out) if req.subresource.as_deref() == Some("scale") => {
                    return Ok(ApiResponse::Object(200, to_scale(rt, &out)));
                }
                Ok(out) => return Ok(ApiResponse::Object(200, out)),
            }
        }
        Err(ApiError::conflict(rt, &name))
    }

    async fn delete(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ApiError> {
        let ns = self.namespace_of(rt, req);
        let name = req.name.clone().unwrap_or_default();
        let opts = DeleteOpts::from(req);
        // As the API server's storage does, a write that lands between our read and our delete
        // is no reason to fail: read again, check the caller's preconditions and admission
        // against the newer object, try again. Only the caller's own preconditions give 409.
        let mut conflicts = 0;
        loop {
            let old = self.current(rt, &ns, &name)?;
            if let Some(uid) = &opts.precondition_uid
                && meta_str(&old, "uid") != Some(uid.as_str())
            {
                return Err(ApiError::conflict(rt, &name));
            }
            if let Some(rv) = opts.precondition_rv
                && Some(rv) != object_rv(&old)
            {
                return Err(ApiError::conflict(rt, &name));
            }
            let attrs = AdmissionAttrs {
                rt,
                subresource: None,
                operation: "DELETE",
                namespace: &ns,
                name: &name,
                user: &req.user,
                dry_run: opts.dry_run,
                options: opts.to_json(),
                kind_override: None,
            };
            admission::admit(
                self,
                &attrs,
                None,
                Some(&self.served(rt, old.clone()).await?),
            )
            .await?;
            if opts.dry_run {
                return Ok(ApiResponse::Object(200, self.served(rt, old).await?));
            }
            match self.delete_admitted(rt, &ns, &name, old, &opts).await {
                Err(e) if e.code == 409 && conflicts < DELETE_CONFLICT_RETRIES => conflicts += 1,
                done => return done,
            }
        }
    }

    /// The storage part of a delete, once admission allowed it.
    async fn delete_admitted(
        self: &Arc<Self>,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Value,
        opts: &DeleteOpts,
    ) -> Result<ApiResponse, ApiError> {
        let mut fins = finalizers(&old);
        if opts.propagation.as_deref() == Some("Orphan") && !fins.iter().any(|f| f == "orphan") {
            fins.push("orphan".into());
        }
        let is_namespace = rt.group.is_empty() && rt.resource == "namespaces";
        if fins.is_empty() && !is_namespace {
            let gone = self
                .store
                .delete(&rt.storage_key(), ns, name, object_rv(&old))
                .map_err(|e| store_err(e, rt, name))?;
            tracing::debug!(resource = %rt.qualified(), namespace = %ns, name = %name, "deleted");
            self.after_delete(rt, &gone);
            return Ok(ApiResponse::Object(200, self.served(rt, gone).await?));
        }
        if meta_str(&old, "deletionTimestamp").is_some() {
            return Ok(ApiResponse::Object(202, self.served(rt, old).await?));
        }
        let mut marked = old.clone();
        {
            let m = meta_mut(&mut marked);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert(
                "deletionGracePeriodSeconds".into(),
                json!(opts.grace.unwrap_or(0)),
            );
            if opts.propagation.as_deref() == Some("Orphan") {
                m.insert("finalizers".into(), json!(fins));
            }
        }
        if is_namespace {
            marked["status"] = json!({"phase": "Terminating"});
        }
        let stored = self
            .store
            .update(&rt.storage_key(), marked, object_rv(&old))
            .map_err(|e| store_err(e, rt, name))?;
        tracing::debug!(resource = %rt.qualified(), namespace = %ns, name = %name, "deletion pending on finalizers");
        if is_namespace {
            crate::controllers::spawn_namespace_cleanup(self.clone(), name.to_string());
        }
        if fins.iter().any(|f| f == "orphan") {
            crate::controllers::spawn_orphaning(self.clone(), rt.clone(), stored.clone());
        }
        Ok(ApiResponse::Object(202, self.served(rt, stored).await?))
    }

    fn after_delete(self: &Arc<Self>, rt: &ResourceType, gone: &Value) {
        if rt.group == "apiextensions.k8s.io" {
            self.refresh_registry();
        }
        if let Some(uid) = meta_str(gone, "uid") {
            crate::controllers::spawn_cascade(self.clone(), uid.to_string());
        }
    }

    async fn delete_collection(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ApiError> {
        let (items, _) = self.selected(rt, req)?;
        let mut deleted = Vec::new();
        for item in items {
            let name = meta_str(&item, "name").unwrap_or_default().to_string();
            let mut one = req.clone();
            one.verb = Verb::Delete;
            one.name = Some(name);
            match self.delete(rt, &one).await {
                Ok(ApiResponse::Object(_, v) | ApiResponse::Warned(_, v, _)) => deleted.push(v),
                Ok(ApiResponse::Watch(_)) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ApiResponse::Object(
            200,
            json!({"apiVersion": rt.api_version(), "kind": format!("{}List", rt.kind),
                   "metadata": {"resourceVersion": self.store.current_rv().to_string()}, "items": deleted}),
        ))
    }

    /// POST pods/NAME/eviction: admission on `pods/eviction` CREATE with the Eviction as the
    /// object, then the pod is deleted (its own DELETE admission is not called, as in Kubernetes).
    /// PodDisruptionBudgets are not evaluated.
    async fn evict(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ApiError> {
        let ns = self.namespace_of(rt, req);
        let name = req.name.clone().unwrap_or_default();
        let mut eviction = parse_body(&req.body)?;
        let pod = self.current(rt, &ns, &name)?;
        if let Some(n) = meta_str(&eviction, "name")
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "name in URL does not match name in Eviction object: {name} vs {n}"
            )));
        }
        {
            let m = meta_mut(&mut eviction);
            m.insert("name".into(), json!(name));
            m.insert("namespace".into(), json!(ns));
        }
        if let Some(o) = eviction.as_object_mut() {
            o.entry("apiVersion").or_insert(json!("policy/v1"));
            o.entry("kind").or_insert(json!("Eviction"));
        }
        let api_version = eviction
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("policy/v1")
            .to_string();
        let (g, v) = crate::resources::split_api_version(&api_version);
        let dry_run = req.query.get("dryRun") == Some("All")
            || eviction
                .pointer("/deleteOptions/dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All"));
        let attrs = AdmissionAttrs {
            rt,
            subresource: Some("eviction"),
            operation: "CREATE",
            namespace: &ns,
            name: &name,
            user: &req.user,
            dry_run,
            options: write_options("CreateOptions", req),
            kind_override: Some((g.to_string(), v.to_string(), "Eviction".to_string())),
        };
        admission::admit(self, &attrs, Some(eviction), None).await?;
        if !dry_run {
            let opts = DeleteOpts::default();
            match self.delete_admitted(rt, &ns, &name, pod, &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            tracing::info!(namespace = %ns, name = %name, user = %req.user.username, "pod evicted");
        }
        Ok(ApiResponse::Object(
            201,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    /// POST serviceaccounts/NAME/token (TokenRequest, `kubectl create token`): a token for the
    /// service account, valid for `spec.audiences` (none: the API server's) until
    /// `spec.expirationSeconds` (default one hour, at least ten minutes) from now.
    async fn token_request(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ApiError> {
        let ns = self.namespace_of(rt, req);
        let name = req.name.clone().unwrap_or_default();
        self.current(rt, &ns, &name)?;
        let mut request = parse_body(&req.body)?;
        let audiences: Vec<String> = request
            .pointer("/spec/audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let seconds = request
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        if seconds < 600 {
            // as apierrors.NewInvalid for the TokenRequest kind
            let body = format!(
                "Invalid value: {seconds}: may not specify a duration less than 10 minutes"
            );
            let mut err = ApiError::new(
                422,
                "Invalid",
                format!(
                    "TokenRequest.authentication.k8s.io \"{name}\" is invalid: \
                     spec.expirationSeconds: {body}"
                ),
            );
            err.details = Some(json!({"name": name, "group": "authentication.k8s.io",
                "kind": "TokenRequest", "causes": [{"reason": "FieldValueInvalid",
                "message": body, "field": "spec.expirationSeconds"}]}));
            return Err(err);
        }
        let token = format!("kube-sim-sa-{}", uuid::Uuid::new_v4().simple());
        let duration = std::time::Duration::from_secs(seconds.unsigned_abs());
        self.auth.add_token_for(
            &token,
            crate::auth::UserInfo::service_account(&ns, &name),
            &audiences,
            Some(std::time::SystemTime::now() + duration),
        );
        let expires = chrono::Utc::now() + chrono::Duration::seconds(seconds);
        request["apiVersion"] = json!("authentication.k8s.io/v1");
        request["kind"] = json!("TokenRequest");
        request["metadata"] = json!({"name": name, "namespace": ns,
            "creationTimestamp": null});
        request["spec"]["expirationSeconds"] = json!(seconds);
        if audiences.is_empty() {
            request["spec"]["audiences"] = json!([crate::auth::API_AUDIENCE]);
        }
        request["status"] = json!({
            "token": token,
            "expirationTimestamp": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        tracing::info!(namespace = %ns, name = %name, ?audiences, "token issued");
        Ok(ApiResponse::Object(201, request))
    }

    /// POST pods/NAME/binding: sets spec.nodeName (what a scheduler does).
    async fn bind(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ApiError> {
        let ns = self.namespace_of(rt, req);
        let name = req.name.clone().unwrap_or_default();
        let binding = parse_body(&req.body)?;
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request("binding has no target.name"))?
            .to_string();
        let attrs = AdmissionAttrs {
            rt,
            subresource: Some("binding"),
            operation: "CREATE",
            namespace: &ns,
            name: &name,
            user: &req.user,
            dry_run: false,
            options: write_options("CreateOptions", req),
            kind_override: Some((String::new(), "v1".into(), "Binding".into())),
        };
        admission::admit(self, &attrs, Some(binding), None).await?;
        let old = self.current(rt, &ns, &name)?;
        if old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(rt, &name));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        crate::defaults::set_condition(&mut new, "PodScheduled", "True", None, None);
        self.store
            .update(&rt.storage_key(), new, object_rv(&old))
            .map_err(|e| store_err(e, rt, &name))?;
        Ok(ApiResponse::Object(
            201,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    /// TokenReview, SubjectAccessReview and SelfSubjectAccessReview: answered from [`Auth`].
    fn review(
        &self,
        rt: &ResourceType,
        req: &ApiRequest,
        mut obj: Value,
    ) -> Result<ApiResponse, ApiError> {
        match rt.kind.as_str() {
            "TokenReview" => {
                let token = obj
                    .pointer("/spec/token")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let audiences: Vec<String> = obj
                    .pointer("/spec/audiences")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                obj["status"] = match self.auth.review(token, &audiences) {
                    Ok((u, valid)) => {
                        json!({"authenticated": true, "user": u.to_json(), "audiences": valid})
                    }
                    Err(error) => json!({"authenticated": false, "error": error}),
                };
            }
            "SubjectAccessReview" | "SelfSubjectAccessReview" => {
                let (user, groups) = if rt.kind == "SelfSubjectAccessReview" {
                    (req.user.username.clone(), req.user.groups.clone())
                } else {
                    let spec = obj.get("spec").cloned().unwrap_or_default();
                    let groups = spec
                        .get("groups")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        spec.get("user")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        groups,
                    )
                };
                let attrs = obj
                    .pointer("/spec/resourceAttributes")
                    .cloned()
                    .unwrap_or_default();
                let s = |k: &str| {
                    attrs
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let sub = s("subresource");
                let allowed = self.auth.is_allowed(
                    &user,
                    &groups,
                    &s("verb"),
                    &s("group"),
                    &s("resource"),
                    Some(sub.as_str()).filter(|x| !x.is_empty()),
                );
                obj["status"] = if allowed {
                    json!({"allowed": true, "reason": "allowed by kube-sim rules"})
                } else {
                    json!({"allowed": false, "reason": "no kube-sim rule allows it"})
                };
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unsupported review kind {other}"
                )));
            }
        }
        Ok(ApiResponse::Object(201, present(rt, obj)))
    }
}

/// autoscaling/v1 Scale of an object with a scale subresource.
fn to_scale(rt: &ResourceType, obj: &Value) -> Value {
    let (spec_path, status_path, selector_path) = match &rt.scale_paths {
        Some(p) => (
            p.spec_replicas.clone(),
            p.status_replicas.clone(),
            p.label_selector.clone(),
        ),
        None => ("spec.replicas".into(), "status.replicas".into(), None),
    };
    let at = |path: &str| {
        path.split('.')
            .try_fold(obj, |cur, seg| cur.get(seg))
            .cloned()
    };
    let mut status = json!({"replicas": at(&status_path).unwrap_or(json!(0))});
    if let Some(sel) = selector_path.and_then(|p| at(&p)) {
        status["selector"] = sel;
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj.pointer("/metadata/name"),
            "namespace": obj.pointer("/metadata/namespace"),
            "uid": obj.pointer("/metadata/uid"),
            "resourceVersion": obj.pointer("/metadata/resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": at(&spec_path).unwrap_or(json!(0))},
        "status": status,
    })
}

/// The object with its replica count set from a Scale.
fn from_scale(rt: &ResourceType, obj: &Value, replicas: Value) -> Value {
    let spec_path = rt
        .scale_paths
        .as_ref()
        .map(|p| p.spec_replicas.clone())
        .unwrap_or_else(|| "spec.replicas".into());
    let mut out = obj.clone();
    let segs: Vec<&str> = spec_path.split('.').collect();
    let mut cur = &mut out;
    for (i, seg) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        if i + 1 == segs.len() {
            cur[*seg] = replicas.clone();
            break;
        }
        if cur.get(*seg).is_none() {
            cur[*seg] = json!({});
        }
        cur = &mut cur[*seg];
    }
    present(rt, out)
}

#[cfg(test)]
mod tests;
