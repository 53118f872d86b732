//! The namespace controller (`namespace-controller`): empties a deleted namespace, then removes
//! it.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::apiserver::{ApiRequest, Sim, Verb};
use crate::auth::UserInfo;
use crate::store::StorageKey;

/// How long the namespace controller waits between passes over a terminating namespace.
const NAMESPACE_RETRY: Duration = Duration::from_millis(200);

/// Deletes everything in a terminating namespace, then the namespace itself.
pub fn spawn_namespace_cleanup(sim: Arc<Sim>, namespace: String) {
    tokio::spawn(async move {
        let user = UserInfo::service_account("kube-system", "namespace-controller");
        loop {
            let mut remaining = 0;
            for rt in unique_types(&sim).into_iter().filter(|t| t.namespaced) {
                let (items, _) = sim.store.list(&rt.storage_key(), Some(&namespace));
                remaining += items.len();
                for item in items {
                    if item.pointer("/metadata/deletionTimestamp").is_some() {
                        continue;
                    }
                    let req = ApiRequest::new(
                        Verb::Delete,
                        &rt.api_version(),
                        &rt.resource,
                        user.clone(),
                    )
                    .ns(&namespace)
                    .name(s(&item, "/metadata/name"));
                    if let Err(e) = sim.call(req).await
                        && e.code != 404
                    {
                        tracing::warn!(namespace = %namespace, name = %s(&item, "/metadata/name"), resource = %rt.qualified(), error = %e, "failed to delete object of terminating namespace");
                    }
                }
            }
            if remaining == 0 {
                let key = StorageKey::new("", "namespaces");
                match sim.store.delete(&key, "", &namespace, None) {
                    Ok(_) => tracing::info!(namespace = %namespace, "namespace deleted"),
                    Err(e) => {
                        tracing::debug!(namespace = %namespace, error = %e, "namespace already gone")
                    }
                }
                return;
            }
            if !sleep_or_stop(&sim, NAMESPACE_RETRY).await {
                return;
            }
        }
    });
}
