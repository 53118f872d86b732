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

fn non_empty(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

fn volume_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    non_empty(claim.spec.as_ref().and_then(|s| s.volume_name.as_ref()))
}

fn class_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    non_empty(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_ref()),
    )
}

fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    non_empty(meta.annotations.as_ref().and_then(|a| a.get(key)))
}

fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Events about one object, oldest first. A uid on both sides must match, so events of an
/// earlier object with the same name are not taken for this one's.
fn events_about<'a>(
    events: &'a [Event],
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<&'a Event> {
    let mut found: Vec<&Event> = events
        .iter()
        .filter(|e| {
            let o = &e.involved_object;
            o.kind.as_deref() == Some(kind)
                && o.name.is_some()
                && o.name == meta.name
                && match (o.uid.as_deref(), meta.uid.as_deref()) {
                    (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => a == b,
                    _ => true,
                }
        })
        .collect();
    found.sort_by_key(|e| event_time(e));
    found
}

fn latest<'a>(events: &[&'a Event], reasons: &[&str]) -> Option<&'a Event> {
    events
        .iter()
        .rev()
        .find(|e| e.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
        .copied()
}

fn reason_is(e: &Event, reason: &str) -> bool {
    e.reason.as_deref() == Some(reason)
}

fn message(e: &Event) -> String {
    e.message.clone().unwrap_or_default()
}

/// Names of the claims a pod mounts, in the order of its volumes. Generic ephemeral volumes
/// get a claim named `<pod>-<volume>`.
pub fn claims_of(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(c.claim_name.clone()),
            (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
            (None, None) => None,
        })
        .collect()
}

fn uses_claim(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    let Some(name) = claim.metadata.name.as_deref() else {
        return false;
    };
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !terminal && claims_of(pod).iter().any(|c| c == name)
}

fn node_of(pod: &Pod) -> Option<&str> {
    non_empty(pod.spec.as_ref().and_then(|s| s.node_name.as_ref()))
}

fn desired_pod(pod: &Pod, events: &[Event]) -> DesiredPod {
    let status = pod.status.as_ref();
    let containers = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let total = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let ready = containers.iter().filter(|c| c.ready).count();
    let pod_events = events_about(events, "Pod", &pod.metadata);
    let started = status.and_then(|s| s.phase.as_deref()) == Some("Running")
        || containers
            .iter()
            .chain(
                status
                    .and_then(|s| s.init_container_statuses.as_deref())
                    .unwrap_or_default(),
            )
            .any(|c| {
                c.state
                    .as_ref()
                    .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
            });
    let mount = match node_of(pod) {
        None => MountState::Unscheduled(latest(&pod_events, &["FailedScheduling"]).map(message)),
        Some(_) if started => MountState::Mounted,
        Some(_) => match latest(&pod_events, &["FailedMount"]) {
            Some(e) => MountState::Failed(message(e)),
            None => MountState::Waiting,
        },
    };
    DesiredPod {
        name: pod.metadata.name.clone().unwrap_or_default(),
        node: node_of(pod).map(str::to_owned),
        ready: format!("{ready}/{total}"),
        pod_phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".to_owned()),
        mount,
    }
}

fn wait_for_first_consumer(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

fn provision(set: &ObjectSet, claim_events: &[&Event], users: &[&Pod]) -> PhaseReport {
    let claim = &set.claim;
    let last = latest(claim_events, PROVISIONING_REASONS);
    let failed =
        latest(claim_events, ATTEMPT_REASONS).filter(|e| reason_is(e, "ProvisioningFailed"));
    if let Some(v) = volume_name(claim) {
        return match &set.volume {
            Some(Lookup::Found(pv)) => success(
                Phase::Provision,
                match annotation(&pv.metadata, PROVISIONED_BY_ANNOTATION) {
                    Some(by) => format!("persistentvolume {v} provisioned by {by}"),
                    None => format!("persistentvolume {v} (pre-provisioned)"),
                },
            ),
            Some(Lookup::Unreadable(why)) if claim_phase(claim) == "Bound" => success(
                Phase::Provision,
                format!("persistentvolume {v} (cannot read it: {why})"),
            ),
            Some(Lookup::Unreadable(why)) => report(
                Phase::Provision,
                Status::Pending,
                format!("cannot read persistentvolume {v}: {why}"),
            ),
            _ if claim_phase(claim) == "Lost" => report(
                Phase::Provision,
                Status::Fail,
                format!("persistentvolume \"{v}\" not found (the claim is Lost)"),
            ),
            _ => match failed {
                Some(e) => report(Phase::Provision, Status::Fail, message(e)),
                None => report(
                    Phase::Provision,
                    Status::Pending,
                    format!("waiting for persistentvolume \"{v}\" to be created"),
                ),
            },
        };
    }
    if let Some(e) = failed {
        return report(Phase::Provision, Status::Fail, message(e));
    }
    let pending = |d: String| report(Phase::Provision, Status::Pending, d);
    let class = match (class_name(claim), &set.class) {
        (None, _) => {
            return pending(
                "no storage class: waiting for a matching persistentvolume to be created".into(),
            );
        }
        (Some(name), Some(Lookup::Missing) | None) => {
            return report(
                Phase::Provision,
                Status::Fail,
                format!("storageclass.storage.k8s.io \"{name}\" not found"),
            );
        }
        (Some(name), Some(Lookup::Unreadable(why))) => {
            return pending(match last {
                Some(e) => message(e),
                None => format!("waiting for a volume (cannot read storageclass {name}: {why})"),
            });
        }
        (Some(_), Some(Lookup::Found(class))) => class,
    };
    let class_label = class.metadata.name.as_deref().unwrap_or_default();
    if class.provisioner == NO_PROVISIONER {
        return pending(format!(
            "storageclass {class_label} has no dynamic provisioner: waiting for a matching persistentvolume to be created"
        ));
    }
    if let Some(node) = annotation(&claim.metadata, SELECTED_NODE_ANNOTATION) {
        return pending(
            match last.filter(|e| !reason_is(e, "WaitForFirstConsumer")) {
                Some(e) => message(e),
                None => format!(
                    "waiting for {} to provision a volume on node {node}",
                    class.provisioner
                ),
            },
        );
    }
    if wait_for_first_consumer(class) {
        return pending(match users.first() {
            None => WAIT_FOR_FIRST_CONSUMER.to_owned(),
            Some(p) => format!(
                "waiting for the scheduler to pick a node for pod {}",
                p.metadata.name.as_deref().unwrap_or_default()
            ),
        });
    }
    pending(
        match last.filter(|e| !reason_is(e, "ProvisioningSucceeded")) {
            Some(e) => message(e),
            None => format!("waiting for {} to provision a volume", class.provisioner),
        },
    )
}

fn bind(
    set: &ObjectSet,
    claim_events: &[&Event],
    users: &[&Pod],
    provision: Status,
) -> PhaseReport {
    let claim = &set.claim;
    let volume = volume_name(claim).unwrap_or("<none>");
    match claim_phase(claim) {
        "Bound" => {
            if let Some(Lookup::Found(pv)) = &set.volume
                && let Some(by) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref())
                && (by.name != claim.metadata.name
                    || by.namespace != claim.metadata.namespace
                    || (by.uid.is_some()
                        && claim.metadata.uid.is_some()
                        && by.uid != claim.metadata.uid))
            {
                return report(
                    Phase::Bind,
                    Status::Fail,
                    format!(
                        "persistentvolume {volume} is bound to claim {}/{}",
                        by.namespace.as_deref().unwrap_or_default(),
                        by.name.as_deref().unwrap_or_default()
                    ),
                );
            }
            success(Phase::Bind, format!("bound to persistentvolume {volume}"))
        }
        "Lost" => report(
            Phase::Bind,
            Status::Fail,
            format!("the claim is Lost: persistentvolume {volume} is gone or bound elsewhere"),
        ),
        _ => {
            if let Some(e) = latest(claim_events, BINDING_FAILURE_REASONS)
                .filter(|e| e.type_.as_deref() == Some("Warning"))
            {
                return report(Phase::Bind, Status::Fail, message(e));
            }
            let detail = match (&set.volume, &set.class) {
                _ if provision != Status::Success => "waiting for Provision".to_owned(),
                (Some(Lookup::Found(_)), _) => {
                    format!("persistentvolume {volume} exists, waiting for the claim to be bound")
                }
                (_, Some(Lookup::Found(class)))
                    if wait_for_first_consumer(class) && users.is_empty() =>
                {
                    WAIT_FOR_FIRST_CONSUMER.to_owned()
                }
                _ => format!("waiting for the claim to be bound to {volume}"),
            };
            report(Phase::Bind, Status::Pending, detail)
        }
    }
}

/// Whether a volume must be attached to a node before it can be mounted there, or why not.
pub(crate) fn attach_needed(
    pv: &PersistentVolume,
    driver: Option<&Lookup<CSIDriver>>,
) -> Result<(), String> {
    let Some(spec) = pv.spec.as_ref() else {
        return Err("the persistentvolume has no spec".to_owned());
    };
    if let Some(csi) = &spec.csi {
        return match driver {
            Some(Lookup::Found(d)) if d.spec.attach_required == Some(false) => {
                Err(format!("CSI driver {} does not require attach", csi.driver))
            }
            // Kubernetes attaches when the driver has no CSIDriver object or asks for it.
            _ => Ok(()),
        };
    }
    let plain = [
        (spec.host_path.is_some(), "hostPath"),
        (spec.nfs.is_some(), "nfs"),
        (spec.local.is_some(), "local"),
        (spec.cephfs.is_some(), "cephfs"),
        (spec.glusterfs.is_some(), "glusterfs"),
    ];
    if let Some((_, kind)) = plain.iter().find(|(set, _)| *set) {
        return Err(format!("{kind} volumes need no attach"));
    }
    let block = spec.aws_elastic_block_store.is_some()
        || spec.gce_persistent_disk.is_some()
        || spec.azure_disk.is_some()
        || spec.cinder.is_some()
        || spec.rbd.is_some()
        || spec.iscsi.is_some()
        || spec.fc.is_some()
        || spec.vsphere_volume.is_some()
        || spec.portworx_volume.is_some();
    if block {
        Ok(())
    } else {
        Err("this volume type needs no attach".to_owned())
    }
}

fn names_list(names: &[String]) -> String {
    format!("[{}]", names.join(","))
}

/// Attach when the evidence cannot be read: mounted everywhere proves it, otherwise it is open.
fn attach_unknown(pods: &[DesiredPod], why: &str) -> PhaseReport {
    if pods.iter().all(|p| p.mount == MountState::Mounted) {
        success(Phase::Attach, format!("every pod has mounted it ({why})"))
    } else {
        report(Phase::Attach, Status::Pending, why)
    }
}

fn attach(set: &ObjectSet, users: &[&Pod], pods: &[DesiredPod], bind: Status) -> PhaseReport {
    if users.is_empty() {
        return report(
            Phase::Attach,
            Status::NotApplicable,
            "no pod uses this claim",
        );
    }
    let pv = match &set.volume {
        Some(Lookup::Found(pv)) if bind == Status::Success => pv,
        Some(Lookup::Unreadable(why)) if bind == Status::Success => {
            return attach_unknown(pods, &format!("cannot read the persistentvolume: {why}"));
        }
        _ => return report(Phase::Attach, Status::Pending, "waiting for Bind"),
    };
    if let Err(why) = attach_needed(pv, set.csi_driver.as_ref()) {
        return report(Phase::Attach, Status::NotApplicable, why);
    }
    let pv_name = pv.metadata.name.as_deref().unwrap_or_default();
    let mut nodes: Vec<&str> = Vec::new();
    for p in pods {
        if let Some(n) = p.node.as_deref()
            && !nodes.contains(&n)
        {
            nodes.push(n);
        }
    }
    if nodes.is_empty() {
        return report(
            Phase::Attach,
            Status::Pending,
            "waiting for pods to be scheduled",
        );
    }
    let attachments: &[VolumeAttachment] = match &set.attachments {
        Some(Lookup::Found(list)) => list,
        Some(Lookup::Unreadable(why)) => {
            return attach_unknown(pods, &format!("cannot read volumeattachments: {why}"));
        }
        _ => &[],
    };
    let mut attached = Vec::new();
    let mut waiting = Vec::new();
    let mut errors = Vec::new();
    for node in nodes {
        let va = attachments.iter().find(|va| {
            va.spec.node_name == node
                && va.spec.source.persistent_volume_name.as_deref() == Some(pv_name)
        });
        let va_status = va.and_then(|va| va.status.as_ref());
        // A container running on the node proves the volume reached it.
        let mounted_here = pods
            .iter()
            .any(|p| p.node.as_deref() == Some(node) && p.mount == MountState::Mounted);
        if va_status.is_some_and(|s| s.attached) {
            attached.push(node.to_owned());
            continue;
        }
        if mounted_here {
            attached.push(format!(
                "{node} (no attached VolumeAttachment, but a pod runs there)"
            ));
            continue;
        }
        let pod_error = users
            .iter()
            .filter(|p| node_of(p) == Some(node))
            .filter_map(|p| {
                latest(
                    &events_about(&set.events, "Pod", &p.metadata),
                    &["FailedAttachVolume"],
                )
                .map(message)
            })
            .next_back();
        let error = va_status
            .and_then(|s| s.attach_error.as_ref())
            .and_then(|e| e.message.clone())
            .or(pod_error);
        match error {
            Some(msg) => errors.push((node.to_owned(), msg)),
            None => waiting.push(node.to_owned()),
        }
    }
    if errors.is_empty() && waiting.is_empty() {
        return success(
            Phase::Attach,
            format!("attached to nodes: {}", names_list(&attached)),
        );
    }
    let mut not_attached: Vec<String> = errors.iter().map(|(n, _)| n.clone()).collect();
    not_attached.extend(waiting.iter().cloned());
    let mut detail = format!(
        "nodes: {} are still not attached as desired",
        names_list(&not_attached)
    );
    if !errors.is_empty() {
        let reasons: Vec<String> = errors.iter().map(|(n, m)| format!("{n}: {m}")).collect();
        detail.push_str(&format!(" ({})", reasons.join("; ")));
    }
    let status = if !attached.is_empty() {
        Status::PartlyFail
    } else if !errors.is_empty() {
        Status::Fail
    } else {
        Status::Pending
    };
    let mut r = report(Phase::Attach, status, detail);
    if !attached.is_empty() {
        r.evidence = format!("{}; attached to nodes: {}", r.detail, names_list(&attached));
    }
    r
}

fn mount(pods: &[DesiredPod]) -> PhaseReport {
    if pods.is_empty() {
        return report(
            Phase::Mount,
            Status::NotApplicable,
            "no pod uses this claim",
        );
    }
    let mounted = pods
        .iter()
        .filter(|p| p.mount == MountState::Mounted)
        .count();
    if mounted == pods.len() {
        return success(
            Phase::Mount,
            format!("mounted in {mounted} of {} pods", pods.len()),
        );
    }
    let missing: Vec<String> = pods
        .iter()
        .filter(|p| p.mount != MountState::Mounted)
        .map(|p| p.name.clone())
        .collect();
    let reasons: Vec<String> = pods
        .iter()
        .filter_map(|p| match &p.mount {
            MountState::Failed(m) => Some(format!("{}: {m}", p.name)),
            MountState::Unscheduled(Some(m)) => Some(format!("{}: unscheduled: {m}", p.name)),
            MountState::Unscheduled(None) => Some(format!("{}: unscheduled", p.name)),
            MountState::Mounted | MountState::Waiting => None,
        })
        .collect();
    let mut detail = format!(
        "pods: {} are still not mounted as desired",
        names_list(&missing)
    );
    if !reasons.is_empty() {
        detail.push_str(&format!(" ({})", reasons.join("; ")));
    }
    let status = if mounted > 0 {
        Status::PartlyFail
    } else if pods
        .iter()
        .any(|p| matches!(p.mount, MountState::Failed(_)))
    {
        Status::Fail
    } else {
        Status::Pending
    };
    let mut r = report(Phase::Mount, status, detail);
    if mounted > 0 {
        r.evidence = format!("{}; mounted in {mounted} of {} pods", r.detail, pods.len());
    }
    r
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimingAnnotation {
    timings: Vec<TimingEntry>,
}

#[derive(Deserialize)]
struct TimingEntry {
    phase: String,
    time: String,
}

/// Durations from the `pvc-timing` annotation; none when it is absent or unreadable.
#[derive(Default)]
struct Timing {
    provision: Option<Took>,
    bind: Option<Took>,
}

impl Timing {
    fn of(claim: &PersistentVolumeClaim, set: &ObjectSet) -> Timing {
        let Some(raw) = annotation(&claim.metadata, TIMING_ANNOTATION) else {
            return Timing::default();
        };
        let Ok(parsed) = serde_json::from_str::<TimingAnnotation>(raw) else {
            return Timing::default();
        };
        let first = |phase: &str| {
            parsed
                .timings
                .iter()
                .filter(|t| t.phase == phase)
                .find_map(|t| t.time.parse::<Timestamp>().ok())
        };
        let (Some(created), bound) = (first("Pending"), first("Bound")) else {
            return Timing::default();
        };
        let span = |from: Timestamp, to: Timestamp, finished: bool| {
            Some(Took {
                seconds: to.as_second().saturating_sub(from.as_second()).max(0),
                finished,
            })
        };
        // A volume made after the claim was provisioned for it; an older one was not.
        let provisioned = match &set.volume {
            Some(Lookup::Found(pv)) => pv.metadata.creation_timestamp.as_ref().map(|t| t.0),
            _ => None,
        }
        .filter(|t| *t >= created);
        let provision = match (provisioned, bound) {
            (Some(at), _) => span(created, at, true),
            (None, None) if set.volume.is_none() => span(created, set.now, false),
            _ => None,
        };
        let bind_from = provisioned.unwrap_or(created);
        let bind = match bound {
            Some(at) => span(bind_from, at, true),
            // Binding waits on provisioning; count it only once there is a volume.
            None if matches!(set.volume, Some(Lookup::Found(_))) => span(bind_from, set.now, false),
            None => None,
        };
        Timing { provision, bind }
    }
}

#[cfg(test)]
mod tests;
