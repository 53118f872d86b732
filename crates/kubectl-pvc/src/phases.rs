//! The decision: from one fixed set of objects (the claim, its volume, class, CSI driver,
//! VolumeAttachments, the pods of its namespace and their events) say how far the claim got
//! through Provision, Bind, Attach and Mount, with the evidence for each verdict.
//!
//! Nothing here talks to the API; `fetch` gathers an [`ObjectSet`] and `render` prints the
//! [`Inspection`].

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass, VolumeAttachment};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

mod attach;
mod bind;
mod evidence;
mod mount;
mod provision;
mod timing;

pub(crate) use attach::attach_needed;
use attach::*;
use bind::*;
pub use evidence::claims_of;
use evidence::*;
use mount::*;
use provision::*;
use timing::*;

/// Annotation the pvc-timing webhook keeps on every claim (name kept from its seed).
pub const TIMING_ANNOTATION: &str = "pvc-timing";
/// Set by the scheduler on a WaitForFirstConsumer claim once a consumer pod has a node.
const SELECTED_NODE_ANNOTATION: &str = "volume.kubernetes.io/selected-node";
/// Set by dynamic provisioners on the volumes they create.
const PROVISIONED_BY_ANNOTATION: &str = "pv.kubernetes.io/provisioned-by";
/// The provisioner name of classes that never provision dynamically (local volumes).
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// Message Kubernetes itself uses for a WaitForFirstConsumer claim without a consumer.
const WAIT_FOR_FIRST_CONSUMER: &str = "waiting for first consumer to be created before binding";
/// Claim events that tell where provisioning stands, newest wins.
const PROVISIONING_REASONS: &[&str] = &[
    "ProvisioningFailed",
    "ProvisioningSucceeded",
    "Provisioning",
    "ExternalProvisioning",
    "WaitForFirstConsumer",
    "WaitForPodScheduled",
];
/// The provisioner's own events about an attempt: the newest says whether provisioning failed.
/// The PV controller's waiting notes (`ExternalProvisioning`, repeated every 15s while a claim
/// waits) are not outcomes and never hide a failure.
const ATTEMPT_REASONS: &[&str] = &[
    "ProvisioningFailed",
    "ProvisioningSucceeded",
    "Provisioning",
];
/// Warning reasons on a claim that mean binding is stuck until someone acts: Kubernetes' own,
/// and those of Ballast's provisioner for a claim naming a volume it cannot have.
const BINDING_FAILURE_REASONS: &[&str] = &[
    "FailedBinding",
    "VolumeMismatch",
    "ClassMismatch",
    "StorageClassMismatch",
    "AccessModeMismatch",
    "VolumeBoundToOtherClaim",
    "VolumeTooSmall",
];

/// What a lookup of an object the claim points at found.
#[derive(Clone, Debug)]
pub enum Lookup<T> {
    Found(T),
    Missing,
    /// The caller may not read it (RBAC) or the read failed; the text says why.
    Unreadable(String),
}

/// Everything the derivation looks at. `None` fields were not looked up because nothing
/// pointed at them (no volume name, no class, not a CSI volume, nothing to attach).
#[derive(Clone, Debug)]
pub struct ObjectSet {
    pub claim: PersistentVolumeClaim,
    pub volume: Option<Lookup<PersistentVolume>>,
    pub class: Option<Lookup<StorageClass>>,
    pub csi_driver: Option<Lookup<CSIDriver>>,
    pub attachments: Option<Lookup<Vec<VolumeAttachment>>>,
    /// Pods of the claim's namespace, in API order; those not using the claim are ignored.
    pub pods: Vec<Pod>,
    /// Events about the claim and about pods; matched by kind, name and uid.
    pub events: Vec<Event>,
    pub now: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Phase {
    Provision,
    Bind,
    Attach,
    Mount,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Provision => "Provision",
            Phase::Bind => "Bind",
            Phase::Attach => "Attach",
            Phase::Mount => "Mount",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "success")]
    Success,
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "fail")]
    Fail,
    #[serde(rename = "partly fail")]
    PartlyFail,
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Pending => "pending",
            Status::Fail => "fail",
            Status::PartlyFail => "partly fail",
            Status::NotApplicable => "n/a",
        }
    }
}

/// How long a phase took (`finished`) or has been going on so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Took {
    pub seconds: i64,
    pub finished: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub phase: Phase,
    pub status: Status,
    /// What is wrong or awaited; empty on success, as in the seed's table.
    pub detail: String,
    /// What the verdict rests on; shown with `-o wide` and in json/yaml.
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took: Option<Took>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "camelCase")]
pub enum MountState {
    Mounted,
    /// Scheduled, containers not started, no mount failure reported.
    Waiting,
    Failed(String),
    Unscheduled(Option<String>),
}

impl MountState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MountState::Mounted => "mounted",
            MountState::Waiting => "waiting",
            MountState::Failed(_) => "failed",
            MountState::Unscheduled(_) => "unscheduled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredPod {
    pub name: String,
    pub node: Option<String>,
    /// Ready containers over all containers, as `kubectl get pods` shows them.
    pub ready: String,
    pub pod_phase: String,
    pub mount: MountState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Every phase succeeded or does not apply.
    Succeeded,
    /// Nothing failed, something is still awaited.
    Pending,
    /// At least one phase failed or partly failed.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub namespace: String,
    pub name: String,
    pub volume: Option<String>,
    pub storage_class: Option<String>,
    pub pods: Vec<DesiredPod>,
    pub phases: Vec<PhaseReport>,
    pub outcome: Outcome,
}

impl Inspection {
    pub fn phase(&self, phase: Phase) -> &PhaseReport {
        // derive() always emits the four phases in order.
        &self.phases[phase as usize]
    }
}

/// Derives the four phases of one claim.
pub fn derive(set: &ObjectSet) -> Inspection {
    let claim = &set.claim;
    let claim_events = events_about(&set.events, "PersistentVolumeClaim", &claim.metadata);
    let users: Vec<&Pod> = set.pods.iter().filter(|p| uses_claim(p, claim)).collect();
    let pods: Vec<DesiredPod> = users.iter().map(|p| desired_pod(p, &set.events)).collect();
    let timing = Timing::of(claim, set);

    let mut provision = provision(set, &claim_events, &users);
    provision.took = timing.provision;
    let mut bind = bind(set, &claim_events, &users, provision.status);
    bind.took = timing.bind;
    let attach = attach(set, &users, &pods, bind.status);
    let mount = mount(&pods);
    let phases = vec![provision, bind, attach, mount];
    let outcome = outcome(&phases);

    Inspection {
        namespace: claim.metadata.namespace.clone().unwrap_or_default(),
        name: claim.metadata.name.clone().unwrap_or_default(),
        volume: volume_name(claim).map(str::to_owned),
        storage_class: class_name(claim).map(str::to_owned),
        pods,
        phases,
        outcome,
    }
}

fn outcome(phases: &[PhaseReport]) -> Outcome {
    if phases
        .iter()
        .any(|p| matches!(p.status, Status::Fail | Status::PartlyFail))
    {
        Outcome::Failed
    } else if phases.iter().any(|p| p.status == Status::Pending) {
        Outcome::Pending
    } else {
        Outcome::Succeeded
    }
}

fn report(phase: Phase, status: Status, detail: impl Into<String>) -> PhaseReport {
    let detail = detail.into();
    PhaseReport {
        phase,
        status,
        evidence: detail.clone(),
        detail,
        took: None,
    }
}

fn success(phase: Phase, evidence: impl Into<String>) -> PhaseReport {
    PhaseReport {
        phase,
        status: Status::Success,
        detail: String::new(),
        evidence: evidence.into(),
        took: None,
    }
}

#[cfg(test)]
mod tests;
