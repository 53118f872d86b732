//! The PersistentVolume the controller creates for a claim: pre-bound (claimRef with the
//! claim's uid), annotated `provisioned-by` and with its directory; a hostPath one is pinned to
//! its node and labelled for that node's agent.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NFSVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolume, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::objects::{
    ANN_DIRECTORY, ANN_PROVISIONED_BY, CachedClaim, LABEL_HOSTNAME, LABEL_NODE, node_label,
    reference,
};
use crate::plan::Provision;

/// Where the volume's data lives.
pub enum Source {
    HostPath { path: PathBuf, node: String },
    Nfs { server: String, path: PathBuf },
}

pub fn build(
    claim: &CachedClaim,
    p: &Provision,
    class: Option<&StorageClass>,
    source: Source,
) -> PersistentVolume {
    let request = Quantity(
        claim
            .request
            .as_deref()
            .map_or_else(|| p.capacity.to_string(), str::to_owned),
    );
    let access_modes = match &claim.access_modes[..] {
        [] => vec!["ReadWriteOnce".into()],
        modes => modes.to_vec(),
    };
    let mut pv_spec = PersistentVolumeSpec {
        capacity: Some([("storage".to_owned(), request)].into_iter().collect()),
        access_modes: Some(access_modes),
        persistent_volume_reclaim_policy: Some(
            class
                .and_then(|c| c.reclaim_policy.clone())
                .unwrap_or_else(|| "Delete".into()),
        ),
        storage_class_name: Some(p.class.clone()),
        mount_options: class.and_then(|c| c.mount_options.clone()),
        volume_mode: Some("Filesystem".into()),
        claim_ref: Some(reference(claim)),
        ..Default::default()
    };
    let mut labels = None;
    match source {
        Source::HostPath { path, node } => {
            labels = Some(
                [(LABEL_NODE.to_owned(), node_label(&node))]
                    .into_iter()
                    .collect(),
            );
            pv_spec.host_path = Some(HostPathVolumeSource {
                path: path.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            });
            pv_spec.node_affinity = Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: LABEL_HOSTNAME.into(),
                            operator: "In".into(),
                            values: Some(vec![node]),
                        }]),
                        ..Default::default()
                    }],
                }),
            });
        }
        Source::Nfs { server, path } => {
            pv_spec.nfs = Some(NFSVolumeSource {
                server,
                path: path.to_string_lossy().into_owned(),
                read_only: None,
            });
        }
    }
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(p.volume.clone()),
            labels,
            annotations: Some(
                [
                    (ANN_PROVISIONED_BY.to_owned(), p.provisioner.clone()),
                    (ANN_DIRECTORY.to_owned(), p.directory.clone()),
                ]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        },
        spec: Some(pv_spec),
        status: None,
    }
}
