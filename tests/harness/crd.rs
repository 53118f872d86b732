//! A CRD with a fixed name (its group is the product's, like the PodManager's
//! `apps.mycompany.com`), held by one scenario at a time on a cluster others share: under a
//! [`crate::harness::lock`], created when the cluster has none (labelled as the suite's) and
//! deleted at the end, waiting until it is gone so the next holder starts clean. A CRD the suite
//! did not make (a user's) is used as it is, or — for a scenario that would change it — left
//! alone, the scenario skipping.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, ResourceExt};

use crate::harness::lock::ClusterLock;
use crate::{SCENARIO_LABEL, TestEnv, wait_for};

/// Label on a CRD the suite made: one without it is a user's, never changed or deleted.
pub const SUITE_LABEL: &str = "ballast.dev/e2e";
/// Longest wait for the CRD to be served or gone.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A CRD held by this scenario alone (see the module). [`CrdHold::release`] deletes it when the
/// scenario made it and gives the lock up; a scenario that panics first still deletes it.
pub struct CrdHold {
    lock: Option<ClusterLock>,
    crd: CustomResourceDefinition,
    /// The scenario made the CRD and deletes it at the end.
    made: bool,
    /// For the cleanup of a scenario that panicked: a real cluster's kubeconfig.
    real_kubeconfig: Option<PathBuf>,
    released: bool,
}

fn suite_made(crd: &CustomResourceDefinition) -> bool {
    crd.labels().get(SUITE_LABEL).is_some_and(|v| v == "true")
}

/// The storage version of `crd`'s resource.
fn resource(crd: &CustomResourceDefinition) -> ApiResource {
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or_else(|| crd.spec.versions.first())
        .map(|v| v.name.clone())
        .unwrap_or_default();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&crd.spec.group, &version, &crd.spec.names.kind),
        &crd.spec.names.plural,
    )
}

impl CrdHold {
    /// Takes lock `lock` and makes the cluster serve `crd`: creates it (labelled as the
    /// suite's) when the cluster has none, or replaces one a scenario that died left behind. A
    /// user's CRD is used as it is when `own` is false; with `own` (the scenario changes the CRD)
    /// it is left alone: `None`, the lock given up. Returns once the resource is served in the
    /// scenario's namespace.
    pub async fn take(
        env: &TestEnv,
        mut crd: CustomResourceDefinition,
        lock: &str,
        own: bool,
    ) -> Option<CrdHold> {
        let name = crd.name_any();
        let mut hold = CrdHold {
            lock: env.lock(lock).await,
            crd: crd.clone(),
            made: false,
            real_kubeconfig: (!env.on_sim()).then(|| env.kubeconfig.clone()),
            released: false,
        };
        let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
        match crds.get_opt(&name).await {
            Ok(Some(existing)) if !suite_made(&existing) => {
                if own {
                    hold.release(&env.client).await;
                    return None;
                }
            }
            Ok(existing) => {
                if existing.is_some() {
                    // Left by a scenario that died holding it: start clean.
                    remove(&env.client, &hold.crd, true).await;
                }
                let labels = crd.metadata.labels.get_or_insert_with(Default::default);
                labels.insert(SUITE_LABEL.into(), "true".into());
                labels.insert(SCENARIO_LABEL.into(), env.namespace.clone());
                crds.create(&PostParams::default(), &crd)
                    .await
                    .unwrap_or_else(|e| panic!("failed to create CRD {name}: {e}"));
                hold.made = true;
            }
            Err(e) => panic!("failed to read CRD {name}: {e}"),
        }
        let served: Api<DynamicObject> =
            Api::namespaced_with(env.client.clone(), &env.namespace, &resource(&hold.crd));
        wait_for(&format!("{name} to be served"), TIMEOUT, || async {
            served.list(&ListParams::default()).await.ok()
        })
        .await;
        Some(hold)
    }

    /// Whether the scenario made the CRD (false: a user's, used as it is).
    pub fn made(&self) -> bool {
        self.made
    }

    /// Deletes the CRD if the scenario made it (its custom resources must be gone already if an
    /// operator's finalizer holds them), then gives the lock up.
    pub async fn release(mut self, client: &kube::Client) {
        self.released = true;
        if self.made {
            remove(client, &self.crd, false).await;
        }
        if let Some(lock) = self.lock.take() {
            lock.release().await;
        }
    }
}

impl Drop for CrdHold {
    /// A scenario that panicked still leaves no CRD on a real cluster (on kube-sim the whole
    /// simulator goes); its lock is released by its own `Drop`.
    fn drop(&mut self) {
        let (false, true, Some(kubeconfig)) =
            (self.released, self.made, self.real_kubeconfig.clone())
        else {
            return;
        };
        let crd = self.crd.clone();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                eprintln!("failed to delete CRD {}: no runtime", crd.name_any());
                return;
            };
            rt.block_on(async {
                let client = crate::client_from(&kubeconfig, None).await;
                remove(&client, &crd, true).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// Deletes `crd` and waits until it is gone. With `force`, the finalizers of its custom
/// resources left in the suite's namespaces (their operator is gone) are removed, so the API
/// server can delete them with their CRD.
async fn remove(client: &kube::Client, crd: &CustomResourceDefinition, force: bool) {
    let name = crd.name_any();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return,
        Err(e) => panic!("failed to delete CRD {name}: {e}"),
    }
    let ar = resource(crd);
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    wait_for(&format!("CRD {name} to be gone"), TIMEOUT, || async {
        if force && let Ok(list) = all.list(&ListParams::default()).await {
            for o in list.items.iter().filter(|o| !o.finalizers().is_empty()) {
                let ns = o.namespace().unwrap_or_default();
                if !ns.starts_with("e2e-") {
                    continue;
                }
                let patch = serde_json::json!({"metadata": {"finalizers": null}});
                let _ = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar)
                    .patch(
                        &o.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
        }
        match crds.get_opt(&name).await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
}
