//! Subresources that are requests of their own: pods/eviction, pods/binding,
//! serviceaccounts/token and the access reviews.

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

    /// POST serviceaccounts/NAME/token (TokenRequest, `kubectl create token`): a token for the
    /// service account, valid for `spec.audiences` (none: the API server's) until
    /// `spec.expirationSeconds` (default one hour, at least ten minutes) from now.
    pub(super) async fn token_request(
        self: &Arc<Self>,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<ApiResponse, ApiError> {
        let ns = self.namespace_of(rt, req);
        let name = req.name.clone().unwrap_or_default();
        self.current(rt, &ns, &name)?;
        let mut request = parse_body(&req.body)?;
        let audiences = strings_at(&request, "/spec/audiences");
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
                let audiences = strings_at(&obj, "/spec/audiences");
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
