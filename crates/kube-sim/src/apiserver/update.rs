//! Update and patch (status and scale subresources included), with the conflict checks and
//! retries of the API server.

use super::helpers::*;
use super::*;

impl Sim {
    /// Prepares `new` as the replacement of `old` for a main-resource or status update.
    pub(super) fn prepare_update(
        rt: &ResourceType,
        sub: Option<&str>,
        old: &Value,
        new: Value,
    ) -> Value {
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
    pub(super) async fn commit_update(
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
            &self.admission_api(),
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

    pub(super) async fn update(
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

    pub(super) async fn patch(
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
}
