//! Delete and deletecollection: preconditions, finalizers, propagation policies.

use super::helpers::*;
use super::*;

/// Delete options from the body (DeleteOptions) or the query.
#[derive(Debug, Clone, Default)]
pub(super) struct DeleteOpts {
    pub(super) propagation: Option<String>,
    pub(super) grace: Option<i64>,
    pub(super) precondition_rv: Option<u64>,
    pub(super) precondition_uid: Option<String>,
    pub(super) dry_run: bool,
}

impl DeleteOpts {
    pub(super) fn from(req: &ApiRequest) -> Self {
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

    pub(super) fn to_json(&self) -> Value {
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

impl Sim {
    pub(super) async fn delete(
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
                &self.admission_api(),
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
    pub(super) async fn delete_admitted(
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
            (self.hooks.namespace_terminating)(self.clone(), name.to_string());
        }
        if fins.iter().any(|f| f == "orphan") {
            (self.hooks.orphan)(self.clone(), rt.clone(), stored.clone());
        }
        Ok(ApiResponse::Object(202, self.served(rt, stored).await?))
    }

    pub(super) fn after_delete(self: &Arc<Self>, rt: &ResourceType, gone: &Value) {
        if rt.group == "apiextensions.k8s.io" {
            self.refresh_registry();
        }
        if let Some(uid) = meta_str(gone, "uid") {
            (self.hooks.deleted)(self.clone(), uid.to_string());
        }
    }

    pub(super) async fn delete_collection(
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
}
