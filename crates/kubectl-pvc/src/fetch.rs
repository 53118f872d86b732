//! The thin I/O layer: a handful of API calls, filtered on the server where the API allows it,
//! gathering what `phases` decides from.

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass, VolumeAttachment};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::phases::{Lookup, ObjectSet, attach_needed};
use crate::render::ClaimRow;

/// HTTP status of an answer the caller may not see (RBAC); reported, not fatal.
const FORBIDDEN: u16 = 403;

async fn lookup<K>(api: Api<K>, name: &str, what: &str) -> Result<Lookup<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(obj)) => Ok(Lookup::Found(obj)),
        Ok(None) => Ok(Lookup::Missing),
        Err(kube::Error::Api(s)) if s.code == FORBIDDEN => Ok(Lookup::Unreadable(s.message)),
        Err(e) => Err(Error::api(format!("{what} {name}"))(e)),
    }
}

/// Events matching a field selector; an empty list when the caller may not read events.
async fn events(client: &Client, namespace: &str, fields: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    match api.list(&ListParams::default().fields(fields)).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(s)) if s.code == FORBIDDEN => Ok(Vec::new()),
        Err(e) => Err(Error::api(format!("events ({fields})"))(e)),
    }
}

/// Everything `inspect` needs about one claim, in at most eight requests.
pub async fn inspect(client: &Client, namespace: &str, name: &str) -> Result<ObjectSet> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims.get(name).await.map_err(Error::api(format!(
        "persistentvolumeclaim {namespace}/{name}"
    )))?;
    let spec = claim.spec.clone().unwrap_or_default();
    let volume_name = spec.volume_name.filter(|v| !v.is_empty());
    let class_name = spec.storage_class_name.filter(|c| !c.is_empty());

    let pods_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let claim_fields =
        format!("involvedObject.kind=PersistentVolumeClaim,involvedObject.name={name}");
    let (pods, claim_events, pod_events, volume, class) = tokio::try_join!(
        async {
            pods_api
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .map_err(Error::api(format!("pods in {namespace}")))
        },
        events(client, namespace, &claim_fields),
        // Only warnings about pods matter (FailedMount, FailedAttachVolume, FailedScheduling).
        events(client, namespace, "involvedObject.kind=Pod,type=Warning"),
        async {
            match &volume_name {
                Some(v) => lookup(
                    Api::<PersistentVolume>::all(client.clone()),
                    v,
                    "persistentvolume",
                )
                .await
                .map(Some),
                None => Ok(None),
            }
        },
        async {
            match &class_name {
                Some(c) => lookup(Api::<StorageClass>::all(client.clone()), c, "storageclass")
                    .await
                    .map(Some),
                None => Ok(None),
            }
        },
    )?;

    let csi_driver = match &volume {
        Some(Lookup::Found(pv)) => match pv.spec.as_ref().and_then(|s| s.csi.as_ref()) {
            Some(csi) => Some(
                lookup(
                    Api::<CSIDriver>::all(client.clone()),
                    &csi.driver,
                    "csidriver",
                )
                .await?,
            ),
            None => None,
        },
        _ => None,
    };
    let attachments = match &volume {
        Some(Lookup::Found(pv)) if attach_needed(pv, csi_driver.as_ref()).is_ok() => {
            let api: Api<VolumeAttachment> = Api::all(client.clone());
            Some(match api.list(&ListParams::default()).await {
                Ok(list) => Lookup::Found(list.items),
                Err(kube::Error::Api(s)) if s.code == FORBIDDEN => Lookup::Unreadable(s.message),
                Err(e) => return Err(Error::api("volumeattachments")(e)),
            })
        }
        _ => None,
    };

    let mut all_events = claim_events;
    all_events.extend(pod_events);
    Ok(ObjectSet {
        claim,
        volume,
        class,
        csi_driver,
        attachments,
        pods,
        events: all_events,
        now: Timestamp::now(),
    })
}

/// The claim objects of one namespace, or of all when `namespace` is `None` (one request).
pub async fn claim_objects(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<PersistentVolumeClaim>> {
    let api: Api<PersistentVolumeClaim> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(Error::api("persistentvolumeclaims"))
}

/// One claim (one request).
pub async fn claim(client: &Client, namespace: &str, name: &str) -> Result<PersistentVolumeClaim> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(Error::api(format!(
            "persistentvolumeclaim {namespace}/{name}"
        )))
}

/// Claims of one namespace, or of all when `namespace` is `None`.
pub async fn claims(client: &Client, namespace: Option<&str>) -> Result<Vec<ClaimRow>> {
    let items = claim_objects(client, namespace).await?;
    let now = Timestamp::now();
    Ok(items.iter().map(|c| ClaimRow::of(c, now)).collect())
}

/// The claims one pod mounts, in the order of its volumes (two requests).
pub async fn claims_of_pod(client: &Client, namespace: &str, pod: &str) -> Result<Vec<ClaimRow>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods
        .get(pod)
        .await
        .map_err(Error::api(format!("pod {namespace}/{pod}")))?;
    let wanted = crate::phases::claims_of(&pod);
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let rows = claims(client, Some(namespace)).await?;
    Ok(wanted
        .iter()
        .map(|name| {
            rows.iter()
                .find(|r| &r.name == name)
                .cloned()
                .unwrap_or_else(|| ClaimRow::missing(namespace, name))
        })
        .collect())
}
