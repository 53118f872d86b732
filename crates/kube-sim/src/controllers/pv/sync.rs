//! The PV controller's decisions (pure): what one sync of a claim or a volume does, and the
//! matching of claims to volumes behind them.

use std::collections::HashMap;

use serde_json::Value;

use super::*;

/// An event the controller records on a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

pub(super) fn note(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Note {
    Note {
        type_,
        reason,
        message: message.into(),
    }
}

/// What a sync of one claim does (pure decision of [`sync_claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimSync {
    /// Nothing to write or say.
    Idle,
    /// Bind the claim and this volume, or finish a binding begun earlier.
    Bind(String),
    /// The claim stays Pending; the event, if any, is recorded on every sync.
    Pending(Option<Note>),
    /// An external provisioner's class: hand the claim to this provisioner and wait.
    External(String),
    /// A bound claim whose volume is gone or taken: phase Lost, with this event.
    Lost(Note),
}

/// What a sync of one volume does (pure decision of [`sync_volume`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSync {
    Idle,
    /// Set the volume's phase.
    Phase(&'static str),
    /// The controller bound this volume to a claim that bound another volume: free it again.
    Unbind,
}

pub(super) fn ann<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// A storage quantity in bytes ("1Gi", "500M", "1e3"); None when unparseable.
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(n * mult)
}

pub(super) fn access_modes(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn request(pvc: &Value) -> f64 {
    quantity_bytes(s(pvc, "/spec/resources/requests/storage")).unwrap_or(0.0)
}

pub(super) fn capacity(pv: &Value) -> f64 {
    quantity_bytes(s(pv, "/spec/capacity/storage")).unwrap_or(0.0)
}

pub(super) fn volume_mode(v: &Value) -> &str {
    match s(v, "/spec/volumeMode") {
        "" => "Filesystem",
        m => m,
    }
}

pub(super) fn modes_fit(pv: &Value, pvc: &Value) -> bool {
    let offered = access_modes(pv, "/spec/accessModes");
    access_modes(pvc, "/spec/accessModes")
        .iter()
        .all(|m| offered.contains(m))
}

/// Whether a volume can serve a claim: class, access modes, volume mode, size and selector.
pub fn pv_fits(pv: &Value, pvc: &Value) -> bool {
    let selector_ok = match pvc.pointer("/spec/selector") {
        None | Some(Value::Null) => true,
        Some(sel) => LabelSelector::from_json(Some(sel)).is_ok_and(|sel| sel.matches(pv)),
    };
    s(pv, "/spec/storageClassName") == s(pvc, "/spec/storageClassName")
        && modes_fit(pv, pvc)
        && volume_mode(pv) == volume_mode(pvc)
        && capacity(pv) >= request(pvc)
        && selector_ok
}

/// Whether a volume's `claimRef` names this claim (an empty uid names any claim of that name).
pub fn bound_to(pv: &Value, pvc: &Value) -> bool {
    let uid = s(pv, "/spec/claimRef/uid");
    pv.pointer("/spec/claimRef").is_some_and(|r| !r.is_null())
        && s(pv, "/spec/claimRef/namespace") == s(pvc, "/metadata/namespace")
        && s(pv, "/spec/claimRef/name") == s(pvc, "/metadata/name")
        && (uid.is_empty() || uid == s(pvc, "/metadata/uid"))
}

pub(super) fn has_claim_ref(pv: &Value) -> bool {
    pv.pointer("/spec/claimRef").is_some_and(|r| !r.is_null())
}

/// The volumes, indexed the way a claim sync looks them up.
pub struct Volumes<'a> {
    pub(super) by_name: HashMap<&'a str, &'a Value>,
    /// Volumes with a `claimRef`, by the claim's (namespace, name).
    pub(super) reserved: HashMap<(&'a str, &'a str), Vec<&'a Value>>,
    /// Volumes without a `claimRef`.
    pub(super) free: Vec<&'a Value>,
}

impl<'a> Volumes<'a> {
    pub fn new(pvs: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut by_name = HashMap::new();
        let mut reserved: HashMap<(&str, &str), Vec<&Value>> = HashMap::new();
        let mut free = Vec::new();
        for pv in pvs {
            by_name.insert(s(pv, "/metadata/name"), pv);
            if has_claim_ref(pv) {
                reserved
                    .entry((
                        s(pv, "/spec/claimRef/namespace"),
                        s(pv, "/spec/claimRef/name"),
                    ))
                    .or_default()
                    .push(pv);
            } else {
                free.push(pv);
            }
        }
        Volumes {
            by_name,
            reserved,
            free,
        }
    }

    /// findBestMatchForClaim: a volume pre-bound to the claim, else (unless binding waits for
    /// the first consumer) the smallest Available volume that fits.
    pub fn best_match(&self, pvc: &Value, delay_binding: bool) -> Option<&'a Value> {
        let key = (s(pvc, "/metadata/namespace"), s(pvc, "/metadata/name"));
        let usable = |pv: &Value| {
            pv.pointer("/metadata/deletionTimestamp").is_none()
                && modes_fit(pv, pvc)
                && volume_mode(pv) == volume_mode(pvc)
                && capacity(pv) >= request(pvc)
        };
        if let Some(pv) = self
            .reserved
            .get(&key)
            .into_iter()
            .flatten()
            .find(|pv| usable(pv) && bound_to(pv, pvc))
        {
            return Some(*pv);
        }
        if delay_binding {
            return None;
        }
        self.free
            .iter()
            .filter(|pv| usable(pv) && s(pv, "/status/phase") == "Available" && pv_fits(pv, pvc))
            .min_by(|a, b| {
                capacity(a)
                    .total_cmp(&capacity(b))
                    .then_with(|| s(a, "/metadata/name").cmp(s(b, "/metadata/name")))
            })
            .copied()
    }
}

/// checkVolumeSatisfyClaim: why a free volume a claim names cannot serve it.
pub(super) fn unsatisfied(pv: &Value, pvc: &Value) -> Option<&'static str> {
    if pv.pointer("/metadata/deletionTimestamp").is_some() {
        Some("the volume is marked for deletion")
    } else if capacity(pv) < request(pvc) {
        Some("requested PV is too small")
    } else if s(pv, "/spec/storageClassName") != s(pvc, "/spec/storageClassName") {
        Some("storageClassName does not match")
    } else if volume_mode(pv) != volume_mode(pvc) {
        Some("incompatible volumeMode")
    } else if !modes_fit(pv, pvc) {
        Some("incompatible accessMode")
    } else {
        None
    }
}

/// The event of a WaitForFirstConsumer claim no pod has been scheduled with yet.
pub(super) fn waiting_for_consumer(pvc: &Value, pods: &[Value]) -> Note {
    let (ns, name) = (s(pvc, "/metadata/namespace"), s(pvc, "/metadata/name"));
    let waiting: Vec<&str> = pods
        .iter()
        .filter(|p| s(p, "/metadata/namespace") == ns && s(p, "/spec/nodeName").is_empty())
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| {
            p.pointer("/spec/volumes")
                .and_then(Value::as_array)
                .is_some_and(|vs| {
                    vs.iter()
                        .any(|v| s(v, "/persistentVolumeClaim/claimName") == name)
                })
        })
        .map(|p| s(p, "/metadata/name"))
        .collect();
    match waiting.as_slice() {
        [] => note(
            "Normal",
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        ),
        [one] => note(
            "Normal",
            "WaitForPodScheduled",
            format!("waiting for pod {one} to be scheduled"),
        ),
        many => note(
            "Normal",
            "WaitForPodScheduled",
            format!("waiting for pods {} to be scheduled", many.join(",")),
        ),
    }
}

/// The message of the `ExternalProvisioning` event, verbatim from the PV controller.
pub fn external_provisioning_message(provisioner: &str) -> String {
    format!(
        "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
         or manually by the system administrator. If volume creation is delayed, please verify \
         that the provisioner is running and correctly registered."
    )
}

/// Whether a claim and its volume are bound both ways with nothing left to write.
pub(super) fn bind_complete(pv: &Value, pvc: &Value) -> bool {
    s(pv, "/spec/claimRef/uid") == s(pvc, "/metadata/uid")
        && bound_to(pv, pvc)
        && s(pv, "/status/phase") == "Bound"
        && s(pvc, "/status/phase") == "Bound"
        && pvc.pointer("/status/capacity") == pv.pointer("/spec/capacity")
        && pvc.pointer("/status/accessModes") == pv.pointer("/spec/accessModes")
}

/// syncClaim: what the PV controller does with one claim.
pub fn sync_claim(pvc: &Value, volumes: &Volumes, classes: &[Value], pods: &[Value]) -> ClaimSync {
    if pvc.pointer("/metadata/deletionTimestamp").is_some() {
        return ClaimSync::Idle;
    }
    let volume_name = s(pvc, "/spec/volumeName");
    if ann(pvc, ANN_BIND_COMPLETED).is_some() {
        // syncBoundClaim
        if volume_name.is_empty() {
            return ClaimSync::Lost(note(
                "Warning",
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            ));
        }
        return match volumes.by_name.get(volume_name) {
            None => ClaimSync::Lost(note(
                "Warning",
                "ClaimLost",
                "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
            )),
            Some(pv) if bind_complete(pv, pvc) => ClaimSync::Idle,
            Some(pv) if !has_claim_ref(pv) || bound_to(pv, pvc) => {
                ClaimSync::Bind(volume_name.to_string())
            }
            Some(_) => ClaimSync::Lost(note(
                "Warning",
                "ClaimMisbound",
                "Two claims are bound to the same volume, this one is bound incorrectly",
            )),
        };
    }
    if !volume_name.is_empty() {
        return match volumes.by_name.get(volume_name) {
            None => ClaimSync::Pending(None),
            Some(pv) if !has_claim_ref(pv) => match unsatisfied(pv, pvc) {
                Some(why) => ClaimSync::Pending(Some(note(
                    "Warning",
                    "VolumeMismatch",
                    format!("Cannot bind to requested volume \"{volume_name}\": {why}"),
                ))),
                None => ClaimSync::Bind(volume_name.to_string()),
            },
            Some(pv) if bound_to(pv, pvc) => ClaimSync::Bind(volume_name.to_string()),
            Some(_) => ClaimSync::Pending(None),
        };
    }
    let class_name = s(pvc, "/spec/storageClassName");
    let class = classes
        .iter()
        .find(|c| !class_name.is_empty() && s(c, "/metadata/name") == class_name);
    let delay_binding = class.is_some_and(|c| s(c, "/volumeBindingMode") == "WaitForFirstConsumer");
    if let Some(pv) = volumes.best_match(pvc, delay_binding) {
        return ClaimSync::Bind(s(pv, "/metadata/name").to_string());
    }
    if delay_binding && ann(pvc, ANN_SELECTED_NODE).is_none_or(str::is_empty) {
        return ClaimSync::Pending(Some(waiting_for_consumer(pvc, pods)));
    }
    if class_name.is_empty() {
        return ClaimSync::Pending(Some(note(
            "Normal",
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        )));
    }
    let Some(class) = class else {
        return ClaimSync::Pending(Some(note(
            "Warning",
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
        )));
    };
    let provisioner = s(class, "/provisioner");
    if provisioner.starts_with("kubernetes.io/") {
        // In-tree plugins are not simulated; for `kubernetes.io/no-provisioner` this is the
        // real controller's answer too.
        return ClaimSync::Pending(Some(note(
            "Warning",
            "ProvisioningFailed",
            format!("no volume plugin matched name: {provisioner}"),
        )));
    }
    ClaimSync::External(provisioner.to_string())
}

/// syncVolume: what the PV controller does with one volume; `claims` by (namespace, name).
pub fn sync_volume(pv: &Value, claims: &HashMap<(&str, &str), &Value>) -> VolumeSync {
    let phase = s(pv, "/status/phase");
    let to = |p: &'static str| {
        if phase == p {
            VolumeSync::Idle
        } else {
            VolumeSync::Phase(p)
        }
    };
    if !has_claim_ref(pv) || s(pv, "/spec/claimRef/uid").is_empty() {
        return to("Available");
    }
    let claim = claims
        .get(&(
            s(pv, "/spec/claimRef/namespace"),
            s(pv, "/spec/claimRef/name"),
        ))
        .filter(|c| s(c, "/metadata/uid") == s(pv, "/spec/claimRef/uid"));
    let released = || {
        if matches!(phase, "Released" | "Failed") {
            VolumeSync::Idle
        } else {
            VolumeSync::Phase("Released")
        }
    };
    let Some(claim) = claim else {
        return released();
    };
    let pv_name = s(pv, "/metadata/name");
    match s(claim, "/spec/volumeName") {
        "" => VolumeSync::Idle,
        name if name == pv_name => to("Bound"),
        _ => {
            let provisioned = ann(pv, ANN_PROVISIONED_BY).is_some();
            if provisioned && s(pv, "/spec/persistentVolumeReclaimPolicy") == "Delete" {
                released()
            } else if ann(pv, ANN_BOUND_BY_CONTROLLER).is_some() {
                VolumeSync::Unbind
            } else {
                VolumeSync::Idle
            }
        }
    }
}

/// Whether a scheduled, non-terminated pod in the claim's namespace mounts it
/// (pvc-protection: a pod not yet scheduled does not hold the claim, the kubelet will refuse
/// to start it with a claim being deleted).
pub(super) fn claim_in_use(pvc: &Value, pods: &[Value]) -> bool {
    let (ns, name) = (s(pvc, "/metadata/namespace"), s(pvc, "/metadata/name"));
    pods.iter()
        .filter(|p| s(p, "/metadata/namespace") == ns && !s(p, "/spec/nodeName").is_empty())
        .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
        .any(|p| {
            p.pointer("/spec/volumes")
                .and_then(Value::as_array)
                .is_some_and(|vs| {
                    vs.iter().any(|v| {
                        s(v, "/persistentVolumeClaim/claimName") == name
                            || (v.pointer("/ephemeral").is_some()
                                && format!("{}-{}", s(p, "/metadata/name"), s(v, "/name")) == name)
                    })
                })
        })
}

pub(super) fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == f))
}
