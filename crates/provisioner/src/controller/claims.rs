//! Applying a claim's decision: provision (NFS directory, then the PV pre-bound), reschedule,
//! warn, or clear a warning. The only claim writes are annotations: `selected-node` removed and
//! the binding problem.

use std::time::Instant;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::controller::{Ctx, log_error};
use crate::error::{Error, Result, chain, kube, status_code};
use crate::objects::{
    ANN_BINDING_PROBLEM, ANN_SELECTED_NODE, CachedClaim, CachedVolume, Lean, binding_problem,
    claim_class, claim_key, key, named_volume, phase_of_claim, reference, refers_to,
};
use crate::plan::{Backend, ClaimAction, Provision, World, claim_backend, decide_claim};
use crate::pv::{self, Source};
use crate::{FIELD_MANAGER, metrics, storage};

pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

pub async fn reconcile(ctx: &Ctx, claim: &CachedClaim, mut world: World) {
    if !ctx.serves(claim_backend(claim, &world)) {
        return;
    }
    if let Err(e) = named_volume_from_api(ctx, claim, &mut world).await {
        log_error(&e, &claim_key(claim));
        return;
    }
    let world = &world;
    let action = decide_claim(claim, world);
    let provisioning = matches!(
        action,
        ClaimAction::Provision(_) | ClaimAction::Reschedule { .. }
    );
    if let Err(e) = apply(ctx, claim, world, action).await {
        failed(ctx, claim, provisioning, &e).await;
    }
}

/// The volume an unbound claim names, read from the API when the cache lacks it: the cache
/// holds our own volumes only, and a static volume (maybe of another class) must be judged, not
/// taken for a missing one and created.
async fn named_volume_from_api(ctx: &Ctx, claim: &CachedClaim, world: &mut World) -> Result<()> {
    let Some(name) = named_volume(claim) else {
        return Ok(());
    };
    let unsettled = phase_of_claim(claim) != "Bound" && claim.metadata.deletion_timestamp.is_none();
    let cached = world
        .volumes
        .iter()
        .any(|v| v.metadata.name.as_deref() == Some(name));
    if !unsettled || cached {
        return Ok(());
    }
    let live = Api::<Lean<CachedVolume>>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .map_err(kube(format!("read PersistentVolume {name}")))?;
    world
        .volumes
        .extend(live.map(|l| std::sync::Arc::new(l.object)));
    Ok(())
}

async fn failed(ctx: &Ctx, claim: &CachedClaim, provisioning: bool, e: &Error) {
    log_error(e, &claim_key(claim));
    if e.is_conflict() {
        return;
    }
    let (operation, reason) = if provisioning {
        ("provision", "ProvisioningFailed")
    } else {
        ("bind", "BindingFailed")
    };
    if ctx.events.warning(&reference(claim), reason, chain(e)) {
        metrics::failed(claim_class(claim), operation, e.label());
    }
}

async fn apply(ctx: &Ctx, claim: &CachedClaim, world: &World, action: ClaimAction) -> Result<()> {
    match action {
        ClaimAction::Nothing(_) => Ok(()),
        ClaimAction::ClearProblem => {
            let patch =
                serde_json::json!({"metadata": {"annotations": {ANN_BINDING_PROBLEM: null}}});
            patch_claim(ctx, claim, &patch, "clear binding problem of").await
        }
        ClaimAction::Reschedule { node, message } => reschedule(ctx, claim, &node, message).await,
        ClaimAction::Refuse { reason, message } => {
            if ctx
                .events
                .warning(&reference(claim), reason, message.clone())
            {
                metrics::failed(claim_class(claim), "bind", "refused");
            }
            if binding_problem(claim) != Some(message.as_str()) {
                let patch = serde_json::json!({"metadata": {"annotations": {ANN_BINDING_PROBLEM: message}}});
                patch_claim(ctx, claim, &patch, "annotate").await?;
            }
            Ok(())
        }
        ClaimAction::Fail { message } => {
            if ctx
                .events
                .warning(&reference(claim), "ProvisioningFailed", message)
            {
                metrics::failed(claim_class(claim), "provision", "placement");
            }
            Ok(())
        }
        ClaimAction::Provision(p) => provision(ctx, claim, world, p).await,
    }
}

async fn patch_claim(
    ctx: &Ctx,
    claim: &CachedClaim,
    patch: &serde_json::Value,
    what: &str,
) -> Result<()> {
    let (ns, name) = key(claim);
    Api::<Lean<CachedClaim>>::namespaced(ctx.client.clone(), ns)
        .patch(name, &patch_params(), &Patch::Merge(patch))
        .await
        .map_err(kube(format!("{what} claim {ns}/{name}")))?;
    Ok(())
}

/// The selected node cannot take the volume: say why, and remove `selected-node` so the
/// scheduler picks again (as the external-provisioner's ProvisioningReschedule does). The
/// removal carries the resourceVersion read, so a node the scheduler selected meanwhile stays.
/// The fallback only: the capacity objects keep the scheduler off such nodes, unless its
/// choice came before the node's agent fell silent or the CSIDriver is not installed.
async fn reschedule(ctx: &Ctx, claim: &CachedClaim, node: &str, message: String) -> Result<()> {
    if ctx
        .events
        .warning(&reference(claim), "ProvisioningFailed", message)
    {
        metrics::failed(claim_class(claim), "provision", "placement");
    }
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": claim.metadata.resource_version,
        "annotations": {ANN_SELECTED_NODE: null},
    }});
    patch_claim(ctx, claim, &patch, "remove selected node of").await?;
    tracing::info!(claim = %claim_key(claim), %node, "selected node removed; the scheduler picks again");
    Ok(())
}

/// Creates the volume pre-bound to its claim: for NFS after creating its directory in the
/// export; for hostPath with the node label its agent watches (the agent creates the directory).
async fn provision(ctx: &Ctx, claim: &CachedClaim, world: &World, p: Provision) -> Result<()> {
    let started = Instant::now();
    let key = claim_key(claim);
    let source = match (p.backend, &ctx.backends.hostpath, &ctx.backends.nfs) {
        (Backend::HostPath, Some(base), _) => Source::HostPath {
            path: base.join(&p.directory),
            node: p.node.clone().unwrap_or_default(),
        },
        (Backend::Nfs, _, Some(nfs)) => {
            storage::create(&nfs.mount, &p.directory)?;
            Source::Nfs {
                server: nfs.server.clone(),
                path: nfs.export_path.join(&p.directory),
            }
        }
        _ => {
            return Err(Error::Config(
                "this controller does not serve the claim's class".into(),
            ));
        }
    };
    ctx.events.normal(
        &reference(claim),
        "Provisioning",
        format!("External provisioner is provisioning volume for claim \"{key}\""),
    );
    let class = world
        .classes
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(p.class.as_str()));
    let desired = pv::build(claim, &p, class.map(|c| &**c), source);
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let post = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&post, &desired).await {
        Ok(_) => {
            metrics::provisioned(&p.class, started.elapsed());
            tracing::info!(claim = %key, volume = %p.volume, directory = %p.directory, node = p.node.as_deref(), "created volume pre-bound to its claim");
            ctx.events.normal(
                &reference(claim),
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {}", p.volume),
            );
        }
        Err(e) if status_code(&e) == Some(409) => {
            // Created by another controller, or by us before a restart: success if it names
            // this claim, and that controller has said so already.
            let existing = Api::<Lean<CachedVolume>>::all(ctx.client.clone())
                .get(&p.volume)
                .await
                .map_err(kube(format!("read PersistentVolume {}", p.volume)))?
                .object;
            if !refers_to(&existing, claim) {
                return Err(Error::Config(format!(
                    "PersistentVolume \"{}\" already exists and is not reserved for claim \"{key}\"",
                    p.volume
                )));
            }
            tracing::debug!(claim = %key, volume = %p.volume, "volume already provisioned");
        }
        Err(e) => return Err(kube(format!("create PersistentVolume {}", p.volume))(e)),
    }
    Ok(())
}
