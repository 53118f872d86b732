//! What the scheduler is told about hostPath capacity: one CSIStorageCapacity per (node that
//! takes hostPath volumes now) x (StorageClass of the hostPath provisioner), in the
//! provisioner's namespace, its `nodeTopology` matching that node's `kubernetes.io/hostname`
//! and its `capacity` the free bytes the node's agent reports.
//!
//! Why: kube-scheduler's VolumeBinding plugin, for a WaitForFirstConsumer claim still to be
//! provisioned, looks up the CSIDriver named like the class's `provisioner`; when it exists
//! with `storageCapacity: true`, a node qualifies only if a CSIStorageCapacity of that class
//! (any namespace) covers the request and selects the node. Nothing else about the driver is
//! read, so a CSIDriver named like our provisioner (shipped with the hostPath install) makes the
//! scheduler skip nodes without a live agent instead of picking them and waiting for us to
//! remove `selected-node`. A node takes volumes when [`placement`](super::placement) would
//! place one there: Ready (per the control service when it is set up) with a fresh report.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use crate::capacity::CHANGE_PERCENT;
use crate::objects::{CachedNode, LABEL_HOSTNAME, fnv1a};
use crate::plan::Nodes;
use crate::quantity::to_bytes;

/// Label on our capacity objects: the driver (provisioner) they are about, as the CSI
/// external-provisioner labels its own, so the controller watches exactly its own.
pub const LABEL_DRIVER: &str = "csi.storage.k8s.io/drivername";
/// Label on our capacity objects: who maintains them.
pub const LABEL_MANAGED_BY: &str = "csi.storage.k8s.io/managed-by";
/// [`LABEL_MANAGED_BY`]'s value.
pub const MANAGED_BY: &str = "ballast-provisioner";
/// Longest object name Kubernetes accepts (a DNS subdomain).
const MAX_NAME: usize = 253;

/// The label selector of `driver`'s capacity objects.
pub fn selector(driver: &str) -> String {
    format!("{LABEL_DRIVER}={driver},{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// The name of the capacity object of `class` on `node`: readable, and distinct for distinct
/// pairs (a hash of both, as `a-b` + `c` and `a` + `b-c` read alike).
pub fn name(class: &str, node: &str) -> String {
    let hash = fnv1a(class.bytes().chain([0]).chain(node.bytes()));
    let readable = format!("{class}-{node}-{:08x}", hash as u32);
    if readable.len() <= MAX_NAME {
        readable
    } else {
        format!("csisc-{hash:016x}")
    }
}

/// The capacity objects there should be, by name: for every StorageClass whose provisioner is
/// `driver`, one per node that is Ready, has a fresh agent report in `facts` and a
/// `kubernetes.io/hostname` label.
pub fn desired_capacities(
    namespace: &str,
    driver: &str,
    classes: &[Arc<StorageClass>],
    nodes: &[Arc<CachedNode>],
    facts: &Nodes,
) -> BTreeMap<String, CSIStorageCapacity> {
    // A node without the label gets none: neither a capacity nor our volume's node affinity
    // (on that label) could select it.
    let hostnames: BTreeMap<&str, &str> = nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            Some((name, n.hostname.as_deref()?))
        })
        .collect();
    let mut out = BTreeMap::new();
    for class in classes.iter().filter(|c| c.provisioner == driver) {
        let Some(class) = class.metadata.name.as_deref() else {
            continue;
        };
        for (node, f) in facts {
            let (true, Some(free), Some(hostname)) =
                (f.ready, f.free_bytes, hostnames.get(node.as_str()))
            else {
                continue;
            };
            let name = name(class, node);
            let object = CSIStorageCapacity {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(BTreeMap::from([
                        (LABEL_DRIVER.to_owned(), driver.to_owned()),
                        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                    ])),
                    ..Default::default()
                },
                storage_class_name: class.to_owned(),
                node_topology: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        LABEL_HOSTNAME.to_owned(),
                        (*hostname).to_owned(),
                    )])),
                    ..Default::default()
                }),
                capacity: Some(Quantity(free.to_string())),
                maximum_volume_size: None,
            };
            out.insert(name, object);
        }
    }
    out
}

/// One API write that brings the published capacity objects to the desired ones.
#[derive(Debug, Clone, PartialEq)]
pub enum CapacityWrite {
    Create(CSIStorageCapacity),
    /// The desired object, carrying the published one's resourceVersion.
    Replace(CSIStorageCapacity),
    /// A published object no longer desired: its node went NotReady or silent, or its class
    /// is gone. With the uid and resourceVersion seen, as preconditions.
    Delete {
        name: String,
        uid: Option<String>,
        resource_version: Option<String>,
    },
}

/// The writes from `existing` (our published objects) to `desired`. A capacity is rewritten
/// only when it moved by more than [`CHANGE_PERCENT`] (as the agents' reports are), or when its
/// class or topology differ; placement reads the exact report anyway.
pub fn capacity_writes(
    mut desired: BTreeMap<String, CSIStorageCapacity>,
    existing: &[Arc<CSIStorageCapacity>],
) -> Vec<CapacityWrite> {
    let mut writes = Vec::new();
    for have in existing {
        let name = have.metadata.name.clone().unwrap_or_default();
        match desired.remove(&name) {
            None => {
                if have.metadata.deletion_timestamp.is_none() {
                    writes.push(CapacityWrite::Delete {
                        name,
                        uid: have.metadata.uid.clone(),
                        resource_version: have.metadata.resource_version.clone(),
                    });
                }
            }
            Some(mut want) => {
                if differs(have, &want) {
                    want.metadata.resource_version = have.metadata.resource_version.clone();
                    writes.push(CapacityWrite::Replace(want));
                }
            }
        }
    }
    writes.extend(desired.into_values().map(CapacityWrite::Create));
    writes
}

fn differs(have: &CSIStorageCapacity, want: &CSIStorageCapacity) -> bool {
    if have.storage_class_name != want.storage_class_name
        || have.node_topology != want.node_topology
        || have.maximum_volume_size.is_some()
        || have.metadata.labels != want.metadata.labels
    {
        return true;
    }
    let bytes = |c: &CSIStorageCapacity| c.capacity.as_ref().and_then(|q| to_bytes(&q.0));
    match (bytes(have), bytes(want)) {
        (Some(before), Some(now)) => {
            // moved / before > CHANGE_PERCENT / 100, in integers; from 0, any growth counts.
            u128::from(before.abs_diff(now)) * 100 > u128::from(before) * u128::from(CHANGE_PERCENT)
        }
        (before, now) => before != now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::NodeFacts;
    use serde_json::json;

    const DRIVER: &str = "hostpath.example.com";

    fn class(name: &str, provisioner: &str) -> Arc<StorageClass> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": provisioner}))
                .unwrap(),
        )
    }

    fn node(name: &str, hostname: Option<&str>) -> Arc<CachedNode> {
        let labels = hostname.map(|h| json!({LABEL_HOSTNAME: h}));
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        )
    }

    fn facts(entries: &[(&str, bool, Option<u64>)]) -> Nodes {
        entries
            .iter()
            .map(|(n, ready, free_bytes)| {
                (
                    (*n).to_owned(),
                    NodeFacts {
                        ready: *ready,
                        free_bytes: *free_bytes,
                    },
                )
            })
            .collect()
    }

    /// (class, hostname, capacity) of each desired object.
    fn summary(d: &BTreeMap<String, CSIStorageCapacity>) -> Vec<(String, String, String)> {
        d.values()
            .map(|c| {
                let host = c
                    .node_topology
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap()[LABEL_HOSTNAME]
                    .clone();
                (
                    c.storage_class_name.clone(),
                    host,
                    c.capacity.as_ref().unwrap().0.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn one_capacity_per_ready_reporting_node_and_class_of_the_driver() {
        let classes = [
            class("fast", DRIVER),
            class("slow", DRIVER),
            class("legacy", "ballast.dev/hostpath"),
            class("nfs", "ballast.dev/nfs"),
        ];
        let nodes = [
            node("a", Some("a")),
            node("b", Some("b.internal")),
            node("c", Some("c")),
            node("d", Some("d")),
            node("e", None),
        ];
        let facts = facts(&[
            ("a", true, Some(1000)),
            ("b", true, Some(2000)),
            ("c", false, Some(3000)),
            ("d", true, None),
            ("e", true, Some(5000)),
            ("ghost", true, Some(4000)),
        ]);
        let d = desired_capacities("ns", DRIVER, &classes, &nodes, &facts);
        let mut got = summary(&d);
        got.sort();
        let want: Vec<(String, String, String)> = [
            ("fast", "a", "1000"),
            ("fast", "b.internal", "2000"),
            ("slow", "a", "1000"),
            ("slow", "b.internal", "2000"),
        ]
        .iter()
        .map(|(c, h, q)| ((*c).into(), (*h).into(), (*q).into()))
        .collect();
        assert_eq!(
            got, want,
            "NotReady (c), agentless (d), unlabelled (e) and unknown nodes get none; nor do \
             classes of other provisioners; the topology is the node's hostname label"
        );
        let one = &d[&name("fast", "a")];
        assert_eq!(one.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(
            one.metadata.labels.as_ref().unwrap()[LABEL_DRIVER],
            DRIVER,
            "labelled for the controller's watch"
        );
        assert!(one.maximum_volume_size.is_none());
    }

    #[test]
    fn names_are_valid_distinct_and_fit() {
        assert_ne!(name("a-b", "c"), name("a", "b-c"));
        assert!(name("fast", "node-1").starts_with("fast-node-1-"));
        let long = name(&"c".repeat(200), &"n".repeat(200));
        assert!(
            long.starts_with("csisc-") && long.len() <= MAX_NAME,
            "{long}"
        );
    }

    #[test]
    fn writes_create_missing_delete_stale_and_rewrite_only_real_changes() {
        let classes = [class("fast", DRIVER)];
        let nodes = [
            node("a", Some("a")),
            node("b", Some("b")),
            node("c", Some("c")),
        ];
        let published = |f: &Nodes| -> Vec<Arc<CSIStorageCapacity>> {
            desired_capacities("ns", DRIVER, &classes, &nodes, f)
                .into_values()
                .map(|mut c| {
                    c.metadata.resource_version = Some("7".into());
                    c.metadata.uid = Some(format!("uid-{}", c.metadata.name.clone().unwrap()));
                    Arc::new(c)
                })
                .collect()
        };
        let before = published(&facts(&[("a", true, Some(1000)), ("b", true, Some(1000))]));
        // a: within 5%; b: its report expired; c: a new agent.
        let now = facts(&[
            ("a", true, Some(1040)),
            ("b", true, None),
            ("c", true, Some(500)),
        ]);
        let writes = capacity_writes(
            desired_capacities("ns", DRIVER, &classes, &nodes, &now),
            &before,
        );
        assert_eq!(
            writes,
            vec![
                CapacityWrite::Delete {
                    name: name("fast", "b"),
                    uid: Some(format!("uid-{}", name("fast", "b"))),
                    resource_version: Some("7".into()),
                },
                CapacityWrite::Create(
                    desired_capacities("ns", DRIVER, &classes, &nodes, &now)
                        .remove(&name("fast", "c"))
                        .unwrap()
                ),
            ]
        );
        let moved = facts(&[("a", true, Some(1100)), ("b", true, Some(1000))]);
        let writes = capacity_writes(
            desired_capacities("ns", DRIVER, &classes, &nodes, &moved),
            &before,
        );
        let [CapacityWrite::Replace(c)] = writes.as_slice() else {
            panic!("one replace: {writes:?}")
        };
        assert_eq!(c.metadata.name.as_deref(), Some(name("fast", "a").as_str()));
        assert_eq!(c.capacity, Some(Quantity("1100".into())));
        assert_eq!(c.metadata.resource_version.as_deref(), Some("7"));
        // The API server's canonical form of a quantity reads the same.
        let mut canonical = (*before[0]).clone();
        canonical.capacity = Some(Quantity("1k".into()));
        assert!(
            capacity_writes(
                desired_capacities(
                    "ns",
                    DRIVER,
                    &classes,
                    &nodes,
                    &facts(&[("a", true, Some(1000))])
                ),
                &[Arc::new(canonical)]
            )
            .is_empty()
        );
    }
}
