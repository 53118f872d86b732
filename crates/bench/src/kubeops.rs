//! Bulk writes to the simulator through its API, as any client makes them.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Creates in flight at once: a burst, as `kubectl apply` of many objects makes.
pub const IN_FLIGHT: usize = 64;

/// Creates every object (as JSON) through `api`, `IN_FLIGHT` at a time.
pub async fn create_all<K>(api: &Api<K>, objects: Vec<Value>) -> anyhow::Result<()>
where
    K: Clone + DeserializeOwned + Serialize + Debug,
{
    futures::stream::iter(objects)
        .map(|o| async move {
            let obj: K = serde_json::from_value(o)?;
            api.create(&PostParams::default(), &obj)
                .await
                .context("failed to create an object")?;
            anyhow::Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Writes `n` events (annotation updates of the objects `names` of `api`'s kind, in turn) so that
/// resourceVersions older than now leave that kind's watch history in the simulator (10 000
/// events, one history per resource type, as a real API server's watch cache keeps): a watch of
/// that kind resuming from one gets 410 Expired and its client must relist. Give at least
/// [`IN_FLIGHT`] names: like a real API server, the simulator gives up on a patch of an object
/// that others keep changing after a few attempts (409 Conflict).
pub async fn push_history<K>(api: &Api<K>, names: &[String], n: usize) -> anyhow::Result<()>
where
    K: Clone + DeserializeOwned + Debug,
{
    anyhow::ensure!(!names.is_empty(), "no object to write the history with");
    futures::stream::iter(0..n)
        .map(|i| async move {
            let name = &names[i % names.len()];
            let patch =
                json!({"metadata": {"annotations": {"bench.ballast.dev/history": i.to_string()}}});
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("failed to update {name}"))?;
            anyhow::Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The PodManagers of namespace `ns`.
pub fn podmanagers(client: Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apps.mycompany.com", "v1", "PodManager"),
        "podmanagers",
    );
    Api::namespaced_with(client, ns, &ar)
}

/// Installs the PodManager CRD as `podmanager crd` prints it, serving v1 only (the benchmark
/// runs no conversion webhook).
pub async fn install_podmanager_crd(client: &Client, podmanager: &Path) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(podmanager)
        .arg("crd")
        .output()
        .await
        .context("failed to run `podmanager crd`")?;
    anyhow::ensure!(out.status.success(), "`podmanager crd` failed");
    let mut crd: Value = serde_yaml::from_slice(&out.stdout)?;
    crd["spec"]["conversion"] = json!({"strategy": "None"});
    let crd: CustomResourceDefinition = serde_json::from_value(crd)?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    match api.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    // Served once established (a real API server takes a moment to say so).
    let established = |c: &CustomResourceDefinition| {
        c.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    };
    let started = std::time::Instant::now();
    while !established(&api.get(&name).await?) {
        anyhow::ensure!(
            started.elapsed() < SETUP_TIMEOUT,
            "the CRD {name} was not established in {SETUP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How long a new CRD may take to be established, or a namespace to get its ServiceAccount.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until namespace `ns` has its `default` ServiceAccount: a real API server refuses pods
/// in a namespace until the controller manager has made it.
pub async fn wait_default_service_account(client: &Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let started = std::time::Instant::now();
    while api.get_opt("default").await?.is_none() {
        anyhow::ensure!(
            started.elapsed() < SETUP_TIMEOUT,
            "namespace {ns} has no default ServiceAccount after {SETUP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
