//! The nodes simulated kubelets register: what a Node object of theirs looks like.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::controllers::kubelet::node_object;

/// A node for the kubelets to register: name, labels (zone, hostname and the rest) and taints.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Taints as `{"key", "value", "effect"}` objects.
    pub taints: Vec<Value>,
    /// Capacity and allocatable, e.g. `{"cpu": "4", "memory": "8Gi", "pods": "110"}`.
    pub capacity: BTreeMap<String, String>,
}

impl NodeSpec {
    /// A worker node in `zone` (label `topology.kubernetes.io/zone`), 4 CPUs, 8Gi, 110 pods.
    pub fn worker(name: &str, zone: &str) -> Self {
        let labels = [
            ("kubernetes.io/hostname", name),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("topology.kubernetes.io/zone", zone),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let capacity = [
            ("cpu", "4"),
            ("memory", "8Gi"),
            ("pods", "110"),
            ("ephemeral-storage", "100Gi"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            name: name.to_owned(),
            labels,
            taints: Vec::new(),
            capacity,
        }
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The Node object to create, Ready, with `index` choosing its InternalIP.
    pub(super) fn object(&self, index: usize) -> Value {
        let mut node = node_object(&self.name, index, false);
        node["metadata"]["labels"] = json!(self.labels);
        if self.taints.is_empty() {
            node["spec"] = json!({});
        } else {
            node["spec"] = json!({"taints": self.taints});
        }
        let ip = format!(
            "10.{}.{}.{}",
            64 + index / 62500,
            (index / 250) % 250,
            index % 250 + 2
        );
        node["status"]["addresses"] = json!([{"type": "InternalIP", "address": ip},
                                             {"type": "Hostname", "address": self.name}]);
        node["status"]["capacity"] = json!(self.capacity);
        node["status"]["allocatable"] = json!(self.capacity);
        node
    }
}

/// Nodes of a scenario or a demo: `prefix1`..`prefixN`, in `zones` zones named
/// `{zone_prefix}a`, `{zone_prefix}b`, ... in turn.
pub fn workers(prefix: &str, count: usize, zone_prefix: &str, zones: usize) -> Vec<NodeSpec> {
    let zones = zones.max(1);
    (1..=count)
        .map(|i| {
            let zone = format!("{zone_prefix}{}", zone_letter((i - 1) % zones));
            NodeSpec::worker(&format!("{prefix}{i}"), &zone)
        })
        .collect()
}

pub(super) fn zone_letter(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    let mut out = String::new();
    let mut n = i;
    loop {
        out.insert(0, char::from(letters[n % 26]));
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    out
}
