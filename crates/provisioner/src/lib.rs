//! Ballast provisioner: hostPath and NFS dynamic provisioning.
pub mod paths;
pub mod plan;
pub mod quantity;
