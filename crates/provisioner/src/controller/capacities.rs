//! Publishing the agents' reports as CSIStorageCapacity objects (see `plan::capacity` for which
//! and why): the writes `plan::capacity_writes` asks for, in the controller's namespace. A
//! lost race (a conflict, an object already there or already gone) is left to the next sync,
//! which the watch of our own objects triggers.

use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};

use crate::FIELD_MANAGER;
use crate::controller::{Ctx, Shared, log_error};
use crate::error::{Result, kube, status_code};
use crate::plan::{self, Backend, CapacityWrite};

/// Brings our capacity objects in line with the fresh reports of Ready nodes.
pub async fn sync(ctx: &Ctx, shared: &Shared) {
    let Some(published) = &ctx.capacities else {
        return;
    };
    if !published.listed.load(std::sync::atomic::Ordering::Acquire) {
        return;
    }
    let desired = plan::desired_capacities(
        &ctx.namespace,
        ctx.provisioners.name(Backend::HostPath),
        &shared.classes,
        &ctx.nodes.state(),
        &shared.nodes,
    );
    for write in plan::capacity_writes(desired, &published.store.state()) {
        if let Err(e) = apply(ctx, &write).await {
            log_error(&e, &format!("capacity {}", name_of(&write)));
        }
    }
}

fn name_of(w: &CapacityWrite) -> &str {
    match w {
        CapacityWrite::Create(c) | CapacityWrite::Replace(c) => {
            c.metadata.name.as_deref().unwrap_or("")
        }
        CapacityWrite::Delete { name, .. } => name,
    }
}

/// What a capacity object says, for the log: its class, node and bytes.
fn describe(c: &CSIStorageCapacity) -> String {
    let node = c
        .node_topology
        .as_ref()
        .and_then(|t| t.match_labels.as_ref())
        .and_then(|l| l.values().next())
        .map_or("", String::as_str);
    let bytes = c.capacity.as_ref().map_or("", |q| q.0.as_str());
    format!("class {} on {node}: {bytes} bytes", c.storage_class_name)
}

async fn apply(ctx: &Ctx, write: &CapacityWrite) -> Result<()> {
    let api: Api<CSIStorageCapacity> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let name = name_of(write).to_owned();
    match write {
        CapacityWrite::Create(c) => match api.create(&pp, c).await {
            Ok(_) => {
                tracing::info!(capacity = %name, what = %describe(c), "published node capacity for the scheduler")
            }
            // Created by another controller, or our cache is behind: the watch brings it.
            Err(e) if status_code(&e) == Some(409) => {}
            Err(e) => return Err(kube(format!("create CSIStorageCapacity {name}"))(e)),
        },
        CapacityWrite::Replace(c) => {
            api.replace(&name, &pp, c)
                .await
                .map_err(kube(format!("update CSIStorageCapacity {name}")))?;
            tracing::debug!(capacity = %name, what = %describe(c), "updated node capacity");
        }
        CapacityWrite::Delete {
            uid,
            resource_version,
            ..
        } => {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: uid.clone(),
                    resource_version: resource_version.clone(),
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {
                    tracing::info!(capacity = %name, "withdrew node capacity: its node is NotReady, its agent silent or its class gone")
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(kube(format!("delete CSIStorageCapacity {name}"))(e)),
            }
        }
    }
    Ok(())
}
