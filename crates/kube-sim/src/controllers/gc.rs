//! The garbage collector (`generic-garbage-collector`): deletes the dependents of a deleted
//! object (ownerReference cascade) and carries out orphan propagation.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::apiserver::{ApiRequest, Sim, Verb};
use crate::auth::UserInfo;
use crate::patch::PatchType;
use crate::resources::ResourceType;

fn owner_exists(sim: &Sim, dependent_ns: &str, owner: &Value) -> bool {
    let registry = sim.registry();
    let Some(rt) = registry.find_kind(s(owner, "/apiVersion"), s(owner, "/kind")) else {
        return false;
    };
    let ns = if rt.namespaced { dependent_ns } else { "" };
    sim.store
        .get(&rt.storage_key(), ns, s(owner, "/name"))
        .is_some_and(|o| s(&o, "/metadata/uid") == s(owner, "/uid"))
}

/// Deletes (or un-owns) the dependents of a deleted object.
pub fn spawn_cascade(sim: Arc<Sim>, owner_uid: String) {
    tokio::spawn(async move {
        let gc = UserInfo::service_account("kube-system", "generic-garbage-collector");
        for rt in unique_types(&sim) {
            let (items, _) = sim.store.list(&rt.storage_key(), None);
            for item in items {
                let Some(refs) = item
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                else {
                    continue;
                };
                if !refs.iter().any(|r| s(r, "/uid") == owner_uid) {
                    continue;
                }
                let ns = s(&item, "/metadata/namespace").to_string();
                let name = s(&item, "/metadata/name").to_string();
                let others_alive = refs
                    .iter()
                    .filter(|r| s(r, "/uid") != owner_uid)
                    .any(|r| owner_exists(&sim, &ns, r));
                let req =
                    ApiRequest::new(Verb::Delete, &rt.api_version(), &rt.resource, gc.clone())
                        .ns(&ns)
                        .name(&name);
                let result = if others_alive {
                    let kept: Vec<Value> = refs
                        .iter()
                        .filter(|r| s(r, "/uid") != owner_uid)
                        .cloned()
                        .collect();
                    let mut req = req;
                    req.verb = Verb::Patch(PatchType::Merge);
                    sim.call(req.body(&json!({"metadata": {"ownerReferences": kept}})))
                        .await
                } else {
                    let req = req.body(&json!({"propagationPolicy": "Background"}));
                    sim.call(req).await
                };
                match result {
                    Ok(_) => {
                        tracing::info!(resource = %rt.qualified(), namespace = %ns, name = %name, owner = %owner_uid, "garbage collected dependent")
                    }
                    Err(e) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(resource = %rt.qualified(), namespace = %ns, name = %name, error = %e, "failed to garbage collect dependent")
                    }
                }
            }
        }
    });
}

/// Orphan propagation: removes the owner from its dependents, then the `orphan` finalizer.
pub fn spawn_orphaning(sim: Arc<Sim>, owner_rt: ResourceType, owner: Value) {
    tokio::spawn(async move {
        let gc = UserInfo::service_account("kube-system", "generic-garbage-collector");
        let uid = s(&owner, "/metadata/uid").to_string();
        for rt in unique_types(&sim) {
            for item in sim.store.list(&rt.storage_key(), None).0 {
                let Some(refs) = item
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                else {
                    continue;
                };
                if !refs.iter().any(|r| s(r, "/uid") == uid) {
                    continue;
                }
                let kept: Vec<Value> = refs
                    .iter()
                    .filter(|r| s(r, "/uid") != uid)
                    .cloned()
                    .collect();
                let req = ApiRequest::new(
                    Verb::Patch(PatchType::Merge),
                    &rt.api_version(),
                    &rt.resource,
                    gc.clone(),
                )
                .ns(s(&item, "/metadata/namespace"))
                .name(s(&item, "/metadata/name"))
                .body(&json!({"metadata": {"ownerReferences": kept}}));
                if let Err(e) = sim.call(req).await {
                    tracing::warn!(name = %s(&item, "/metadata/name"), error = %e, "failed to orphan dependent");
                }
            }
        }
        let ns = s(&owner, "/metadata/namespace").to_string();
        let name = s(&owner, "/metadata/name").to_string();
        let Some(current) = sim.store.get(&owner_rt.storage_key(), &ns, &name) else {
            return;
        };
        let fins: Vec<Value> = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|f| *f != "orphan").cloned().collect())
            .unwrap_or_default();
        let req = ApiRequest::new(
            Verb::Patch(PatchType::Merge),
            &owner_rt.api_version(),
            &owner_rt.resource,
            gc,
        )
        .ns(&ns)
        .name(&name)
        .body(&json!({"metadata": {"finalizers": fins}}));
        if let Err(e) = sim.call(req).await {
            tracing::warn!(namespace = %ns, name = %name, error = %e, "failed to remove orphan finalizer");
        }
    });
}
