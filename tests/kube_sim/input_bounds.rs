//! Bounded by input: the API server refuses a PodManager asking for more pods than the schema's
//! maximum (v1 as v2: 500), so no reconcile is ever asked for an unbounded number of pods.
//! Runs on kube-sim and on a real cluster. The PodManager CRD's name is fixed, so on a real
//! cluster the scenario holds it under the cluster lock `podmanager-crd` (as the podmanager
//! scenarios do): it creates the CRD when the cluster has none and deletes it at the end, and
//! uses a CRD the suite did not make as it is.

use ballast_e2e::harness::crd::CrdHold;
use ballast_e2e::{SimConfig, TestEnv, wait_for};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, CustomResourceExt};
use podmanager::crd::{PodManager, PodManagerSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podmanager_past_the_replica_maximum_is_refused_by_the_api_server() {
    let env = TestEnv::start(SimConfig::default()).await;
    let crd = CrdHold::take(&env, PodManager::crd(), "podmanager-crd", false)
        .await
        .expect("a v1-only scenario uses any PodManager CRD");
    let pms: Api<PodManager> = Api::namespaced(env.client.clone(), &env.namespace);
    wait_for("the PodManager API", super::TIMEOUT, || async {
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
    wait_for("largest gone", super::TIMEOUT, || async {
        pms.get_opt("largest").await.ok()?.is_none().then_some(())
    })
    .await;
    crd.release(&env.client).await;
    env.shutdown().await;
}
