//! Subresources that are requests of their own: pods/eviction, pods/binding and the access
//! reviews.

use super::delete::DeleteOpts;
use super::helpers::*;
use super::*;

impl Sim {
    /// POST pods/NAME/eviction: admission on `pods/eviction` CREATE with the Eviction as the
    /// object, then the pod is deleted (its own DELETE admission is not called, as in Kubernetes).
    /// PodDisruptionBudgets are not evaluated.
    pub(super) async fn evict(
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
        admission::admit(&self.admission_api(), &attrs, Some(eviction), None).await?;
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

    /// POST pods/NAME/binding: sets spec.nodeName (what a scheduler does).
    pub(super) async fn bind(
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
        admission::admit(&self.admission_api(), &attrs, Some(binding), None).await?;
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
    pub(super) fn review(
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
                obj["status"] = match self.auth.authenticate(token) {
                    Some(u) => json!({"authenticated": true, "user": u.to_json()}),
                    None => json!({"authenticated": false, "error": "invalid bearer token"}),
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
