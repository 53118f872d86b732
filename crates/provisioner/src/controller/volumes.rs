//! Applying a volume's decision: delete a Released volume once the live API confirms no claim
//! holds it (NFS: its directory first), and the export's orphan sweep.

use std::path::Path;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, Patch, Preconditions};

use crate::controller::claims::patch_params;
use crate::controller::{Ctx, log_error};
use crate::error::{Error, Result, kube, status_code};
use crate::objects::{
    CachedClaim, CachedVolume, LABEL_NODE, Lean, claim_ref, named_volume, phase_of_volume,
    volume_class,
};
use crate::plan::{self, Backend, VolumeAction, World, decide_volume, volume_backend};
use crate::{metrics, storage};

/// An unknown directory is removed only once unchanged for this long: a directory another
/// controller has just created may belong to a claim not yet in our cache.
const ORPHAN_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn reconcile(ctx: &Ctx, pv: &CachedVolume, world: World) {
    let world = &world;
    if !ctx.serves(volume_backend(pv, world)) {
        return;
    }
    if let Err(e) = apply(ctx, pv, decide_volume(pv, world)).await {
        let name = pv.metadata.name.as_deref().unwrap_or("");
        log_error(&e, &format!("volume {name}"));
        if !e.is_conflict() {
            metrics::failed(volume_class(pv), "reclaim", e.label());
        }
    }
}

async fn apply(ctx: &Ctx, pv: &CachedVolume, action: VolumeAction) -> Result<()> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let (backend, directory, archive) = match action {
        VolumeAction::Nothing(_) => return Ok(()),
        VolumeAction::Label(node) => {
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": pv.metadata.resource_version,
                "labels": {LABEL_NODE: node},
            }});
            Api::<PersistentVolume>::all(ctx.client.clone())
                .patch(&name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map_err(kube(format!("label volume {name} for its node's agent")))?;
            tracing::info!(volume = %name, %node, "labelled volume for its node's agent");
            return Ok(());
        }
        VolumeAction::Delete {
            backend,
            directory,
            archive,
        } => (backend, directory, archive),
    };
    let Some(live) = still_released(ctx, pv).await? else {
        return Ok(());
    };
    if backend == Backend::Nfs
        && let Some(dir) = &directory
    {
        let nfs = ctx.backends.nfs.as_ref().ok_or_else(|| {
            Error::Config("NFS is not configured here: cannot delete NFS volumes".into())
        })?;
        if archive {
            storage::archive(&nfs.mount, dir)?;
        } else {
            storage::remove(&nfs.mount, dir)?;
        }
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: live.metadata.uid.as_deref().map(Into::into),
            resource_version: live.metadata.resource_version.as_deref().map(Into::into),
        }),
        ..Default::default()
    };
    match Api::<PersistentVolume>::all(ctx.client.clone())
        .delete(&name, &dp)
        .await
    {
        Err(e) if status_code(&e) != Some(404) => {
            return Err(kube(format!("delete volume {name}"))(e));
        }
        _ => {}
    }
    metrics::deleted(volume_class(pv));
    let fate = match (backend, archive) {
        (Backend::HostPath, _) => "deleted; its node's agent removes the directory",
        (Backend::Nfs, true) => "archived",
        (Backend::Nfs, false) => "removed",
    };
    tracing::info!(volume = %name, directory = directory.as_deref(), fate, "reclaimed volume");
    Ok(())
}

/// The live volume, if the API still shows it Released and no live claim holds it: volumes
/// are deleted on the API's word, never on cache evidence alone.
async fn still_released(ctx: &Ctx, pv: &CachedVolume) -> Result<Option<CachedVolume>> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let live = Api::<Lean<CachedVolume>>::all(ctx.client.clone())
        .get_opt(&name)
        .await
        .map_err(kube(format!("read volume {name}")))?
        .map(|l| l.object);
    let Some(live) = live.filter(|l| l.metadata.uid == pv.metadata.uid) else {
        return Ok(None);
    };
    if phase_of_volume(&live) != "Released" || live.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Some((ns, claim, uid)) = claim_ref(&live) else {
        return Ok(Some(live));
    };
    let holder = Api::<Lean<CachedClaim>>::namespaced(ctx.client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(kube(format!("read claim {ns}/{claim}")))?
        .map(|l| l.object);
    let held = holder.is_some_and(|c| {
        (uid.is_empty() || c.metadata.uid.as_deref() == Some(uid))
            && named_volume(&c) == Some(&*name)
    });
    if held {
        tracing::warn!(volume = %name, claim = %format!("{ns}/{claim}"), "volume is Released but its claim still holds it; keeping the data");
        return Ok(None);
    }
    Ok(Some(live))
}

/// Removes empty unknown directories under the export (see the module doc for the rule).
pub fn sweep(ctx: &Ctx, base: &Path, world: &World) {
    let dirs = match storage::list(base) {
        Ok(d) => d,
        Err(e) => return log_error(&e, &base.display().to_string()),
    };
    for dir in plan::orphans(&dirs, world) {
        match storage::remove_if_idle(base, &dir, ORPHAN_MIN_AGE) {
            Ok(storage::Idle::Removed) => {
                tracing::info!(directory = %dir, "removed unknown empty directory")
            }
            Ok(storage::Idle::Recent | storage::Idle::Empty) => {}
            Ok(storage::Idle::NotEmpty) => {
                let first = ctx
                    .warned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(dir.clone());
                if first {
                    tracing::warn!(
                        directory = %dir,
                        "directory belongs to no volume or claim but holds data; kept"
                    );
                }
            }
            Err(e) => log_error(&e, &dir),
        }
    }
}
