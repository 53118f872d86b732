//! Simulated kubelets as a client of an API server (here kube-sim with its node lifecycle
//! controller and no kubelets of its own): they register Ready nodes with Leases, run the pods
//! bound to them, and a node cut off goes Ready=Unknown once its Lease is stale, then Ready again
//! when it comes back. The same kubelets drive the real control plane in the end-to-end suite.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use kube_sim::kubelets::{KubeletOptions, Kubelets, NodeSpec};
use kube_sim::{KubeSim, SimConfig};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn wait<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_kubelets_register_run_pods_fail_and_recover() {
    let sim = KubeSim::start(SimConfig::default().node_grace(Duration::from_millis(500)))
        .await
        .expect("kube-sim starts");
    let client = sim.client();
    let opts = KubeletOptions {
        heartbeat: Duration::from_millis(100),
        ..KubeletOptions::default()
    };
    let kubelets = Kubelets::start(client.clone(), opts);
    for spec in kube_sim::kubelets::workers("w-", 2, "z-", 2) {
        kubelets.add_node(&spec).await.expect("node registered");
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let w1 = nodes.get("w-1").await.expect("w-1 registered");
    assert_eq!(ready(&w1).as_deref(), Some("True"));
    assert_eq!(
        w1.metadata.labels.unwrap()["topology.kubernetes.io/zone"],
        "z-a"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = leases.get("w-1").await.expect("a Lease for w-1");
    assert_eq!(
        lease.metadata.owner_references.unwrap()[0].name,
        "w-1",
        "the Lease is owned by its Node"
    );

    // a pod bound to w-1 runs
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"nodeName": "w-1", "containers": [{"name": "app", "image": "nginx"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait("web Running and Ready", || async {
        let p = pods.get("web").await.ok()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running") && pod_ready(&p)).then_some(())
    })
    .await;

    // cut off: the Lease goes stale and the node controller marks w-1 Unknown, w-2 stays Ready
    kubelets.fail("w-1").expect("w-1 is run here");
    assert_eq!(kubelets.is_failed("w-1"), Some(true));
    wait("w-1 Ready=Unknown", || async {
        (ready(&nodes.get("w-1").await.ok()?).as_deref() == Some("Unknown")).then_some(())
    })
    .await;
    assert_eq!(
        ready(&nodes.get("w-2").await.unwrap()).as_deref(),
        Some("True")
    );

    // back: Ready again, and the pod the node controller marked unready is Ready again
    kubelets.recover("w-1").expect("w-1 is run here");
    wait("w-1 Ready again", || async {
        (ready(&nodes.get("w-1").await.ok()?).as_deref() == Some("True")).then_some(())
    })
    .await;
    wait("web Ready again", || async {
        pod_ready(&pods.get("web").await.ok()?).then_some(())
    })
    .await;

    // an unknown node is an error, not a panic; removing the nodes removes their Leases
    assert!(kubelets.fail("nope").is_err());
    kubelets.remove_all().await.expect("nodes removed");
    assert!(nodes.get_opt("w-1").await.unwrap().is_none());
    assert!(leases.get_opt("w-2").await.unwrap().is_none());
    kubelets.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_worker_spec_carries_its_zone_capacity_and_extra_labels() {
    let spec = NodeSpec::worker("n1", "zone-x").label("team", "storage");
    assert_eq!(spec.labels["topology.kubernetes.io/zone"], "zone-x");
    assert_eq!(spec.labels["kubernetes.io/hostname"], "n1");
    assert_eq!(spec.labels["team"], "storage");
    assert_eq!(spec.capacity["pods"], "110");
}
