//! Bounded by input: the API server refuses a PodManager asking for more pods than the schema's
//! maximum (v1 as v2: 500), so no reconcile is ever asked for an unbounded number of pods.
//! Runs on a real cluster too.

use std::time::Duration;

use ballast_e2e::{SimConfig, TestEnv, wait_for};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, CustomResourceExt};
use podmanager::crd::{PodManager, PodManagerSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podmanager_past_the_replica_maximum_is_refused_by_the_api_server() {
    let env = TestEnv::start(SimConfig::default()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    match crds
        .create(&PostParams::default(), &PodManager::crd())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("failed to create the CRD: {e}"),
    }
    let pms: Api<PodManager> = Api::namespaced(env.client.clone(), &env.namespace);
    wait_for("the PodManager API", Duration::from_secs(20), || async {
        pms.list(&ListParams::default()).await.ok()
    })
    .await;
    let pm = |name: &str, replicas: i32| {
        PodManager::new(
            name,
            PodManagerSpec {
                replicas,
                image: "nginx".to_owned(),
            },
        )
    };
    match pms.create(&PostParams::default(), &pm("huge", 501)).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
            assert!(
                s.message
                    .contains("spec.replicas in body should be less than or equal to 500"),
                "{}",
                s.message
            );
        }
        other => panic!("501 replicas must be refused: {other:?}"),
    }
    pms.create(&PostParams::default(), &pm("largest", 500))
        .await
        .expect("500 replicas are accepted");
    pms.delete("largest", &DeleteParams::default())
        .await
        .expect("deleted");
    env.shutdown().await;
}
