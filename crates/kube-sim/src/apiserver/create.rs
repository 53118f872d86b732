//! Create: defaulting, generateName, admission, validation and storage of a new object.

use super::helpers::*;
use super::*;

impl Sim {
    pub(super) fn check_namespace(&self, rt: &ResourceType, ns: &str) -> Result<(), ApiError> {
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

    pub(super) async fn create(
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
        let mut obj =
            admission::admit_validated(&self.admission_api(), &attrs, Some(obj), None, &validate)
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
    pub(super) async fn validated_for_storage(
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
}
