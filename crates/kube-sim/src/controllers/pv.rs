//! The PV controller (`persistent-volume-binder`) and the PVC/PV protection controllers, as
//! kube-controller-manager runs them (pkg/controller/volume/persistentvolume and
//! pkg/controller/volume/{pvc,pv}protection):
//! - a claim without `volumeName` binds to a volume pre-bound to it (`claimRef` naming it, uid
//!   empty or equal), else to the smallest Available volume of its class, access modes and
//!   volume mode that fits (not for WaitForFirstConsumer classes: the scheduler binds those);
//! - otherwise, for a class whose provisioner is external, the controller hands the claim over:
//!   it sets `volume.kubernetes.io/storage-provisioner` (and the beta twin) and emits the
//!   `ExternalProvisioning` event, again on every sync while the claim waits (claim update or
//!   resync every 15 s), folded into one Event whose count grows; WaitForFirstConsumer claims
//!   wait for `volume.kubernetes.io/selected-node` first (`WaitForFirstConsumer` /
//!   `WaitForPodScheduled` events);
//! - a claim naming a volume binds to it when the volume is free and satisfies the claim
//!   (else `VolumeMismatch`), or when the volume's `claimRef` names the claim;
//! - binding writes, in order: the volume's `claimRef` (full reference with uid;
//!   `bound-by-controller` when the controller chose the volume), the volume's phase, the claim's
//!   `volumeName` with `bind-completed` (and `bound-by-controller` when it set the name), then
//!   the claim's status (phase, capacity, access modes);
//! - volumes: Available without a claim, Bound with one, Released when their claim is gone (an
//!   external provisioner deletes those of reclaim policy Delete), unbound again when the
//!   controller had bound them to a claim that took another volume;
//! - bound claims whose volume is gone are `Lost`;
//! - protection: deleting a claim still used by a scheduled, non-terminated pod, or a Bound
//!   volume, waits;
//!   the `kubernetes.io/pvc-protection` / `pv-protection` finalizers (added at creation while
//!   this controller runs, as the StorageObjectInUseProtection admission plugin does) are
//!   removed once nothing uses the object.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ANN_SELECTED_NODE, TICK, list, s, sleep_or_stop};
use crate::apiserver::{ApiRequest, Sim, Verb, now};
use crate::auth::UserInfo;
use crate::patch::PatchType;
use crate::selectors::LabelSelector;

pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const FINALIZER_PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const FINALIZER_PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// `source.component` and `reportingComponent` of the controller's events.
pub const COMPONENT: &str = "persistentvolume-controller";
/// kube-controller-manager's `--pvclaimbinder-sync-period`: every claim is synced again this
/// often, so the event of a waiting claim repeats at this pace.
pub const RESYNC: Duration = Duration::from_secs(15);

/// An event the controller records on a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

fn note(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Note {
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

fn ann<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
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

fn access_modes(v: &Value, ptr: &str) -> Vec<String> {
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

fn request(pvc: &Value) -> f64 {
    quantity_bytes(s(pvc, "/spec/resources/requests/storage")).unwrap_or(0.0)
}

fn capacity(pv: &Value) -> f64 {
    quantity_bytes(s(pv, "/spec/capacity/storage")).unwrap_or(0.0)
}

fn volume_mode(v: &Value) -> &str {
    match s(v, "/spec/volumeMode") {
        "" => "Filesystem",
        m => m,
    }
}

fn modes_fit(pv: &Value, pvc: &Value) -> bool {
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

fn has_claim_ref(pv: &Value) -> bool {
    pv.pointer("/spec/claimRef").is_some_and(|r| !r.is_null())
}

/// The volumes, indexed the way a claim sync looks them up.
pub struct Volumes<'a> {
    by_name: HashMap<&'a str, &'a Value>,
    /// Volumes with a `claimRef`, by the claim's (namespace, name).
    reserved: HashMap<(&'a str, &'a str), Vec<&'a Value>>,
    /// Volumes without a `claimRef`.
    free: Vec<&'a Value>,
}

impl<'a> Volumes<'a> {
    pub fn new(pvs: &'a [Value]) -> Self {
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
fn unsatisfied(pv: &Value, pvc: &Value) -> Option<&'static str> {
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
fn waiting_for_consumer(pvc: &Value, pods: &[Value]) -> Note {
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
fn bind_complete(pv: &Value, pvc: &Value) -> bool {
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
fn claim_in_use(pvc: &Value, pods: &[Value]) -> bool {
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

fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == f))
}

/// Adds the protection finalizer to a new claim or volume (StorageObjectInUseProtection).
pub fn add_protection_finalizer(resource: &str, obj: &mut Value) {
    let f = match resource {
        "persistentvolumeclaims" => FINALIZER_PVC_PROTECTION,
        "persistentvolumes" => FINALIZER_PV_PROTECTION,
        _ => return,
    };
    if has_finalizer(obj, f) {
        return;
    }
    if !obj
        .pointer("/metadata/finalizers")
        .is_some_and(Value::is_array)
    {
        obj["metadata"]["finalizers"] = json!([]);
    }
    if let Some(a) = obj["metadata"]["finalizers"].as_array_mut() {
        a.push(json!(f));
    }
}

/// Events already recorded, by (claim uid, reason, message): the Event's namespace, name and
/// count, so a repeat is folded into it as the client-go event correlator does.
type Recorded = HashMap<(String, &'static str, String), (String, String, u64)>;

struct State {
    user: UserInfo,
    /// Per claim uid: the resourceVersion last synced and when, for event pacing.
    synced: HashMap<String, (String, Instant)>,
    recorded: Recorded,
}

pub fn spawn_pv_binder(sim: Arc<Sim>) {
    tokio::spawn(async move {
        let mut state = State {
            user: UserInfo::service_account("kube-system", "persistent-volume-binder"),
            synced: HashMap::new(),
            recorded: HashMap::new(),
        };
        while sleep_or_stop(&sim, TICK).await {
            pv_binder_pass(&sim, &mut state).await;
            protection_pass(&sim).await;
        }
    });
}

async fn write(sim: &Arc<Sim>, req: ApiRequest, what: &str, ns: &str, name: &str) -> Option<Value> {
    match sim.call(req).await {
        Ok(v) => {
            tracing::info!(namespace = %ns, name = %name, "pv controller: {what}");
            Some(v)
        }
        Err(e) => {
            tracing::debug!(namespace = %ns, name = %name, error = %e, "pv controller: failed to {what}");
            None
        }
    }
}

fn update(user: &UserInfo, resource: &str, obj: &Value, status: bool) -> ApiRequest {
    let req = ApiRequest::new(Verb::Update, "v1", resource, user.clone())
        .ns(s(obj, "/metadata/namespace"))
        .name(s(obj, "/metadata/name"))
        .body(obj);
    if status {
        req.subresource("status")
    } else {
        req
    }
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if !obj
        .pointer("/metadata/annotations")
        .is_some_and(Value::is_object)
    {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][key] = json!(value);
}

async fn pv_binder_pass(sim: &Arc<Sim>, state: &mut State) {
    let pvs = list(sim, "", "persistentvolumes");
    let pvcs = list(sim, "", "persistentvolumeclaims");
    let classes = list(sim, "storage.k8s.io", "storageclasses");
    let pods = if pvcs.is_empty() {
        Vec::new()
    } else {
        list(sim, "", "pods")
    };
    let volumes = Volumes::new(&pvs);
    let user = state.user.clone();
    for pvc in &pvcs {
        let decision = sync_claim(pvc, &volumes, &classes, &pods);
        let (ns, name) = (s(pvc, "/metadata/namespace"), s(pvc, "/metadata/name"));
        let uid = s(pvc, "/metadata/uid").to_string();
        let rv = s(pvc, "/metadata/resourceVersion").to_string();
        let due = state
            .synced
            .get(&uid)
            .is_none_or(|(seen, at)| *seen != rv || at.elapsed() >= RESYNC);
        match decision {
            ClaimSync::Idle => {}
            ClaimSync::Bind(volume) => {
                if let Some(pv) = volumes.by_name.get(volume.as_str()) {
                    bind(sim, &user, pv, pvc).await;
                }
            }
            ClaimSync::Pending(note) => {
                if due && let Some(note) = note {
                    record(sim, state, pvc, &note).await;
                    state.synced.insert(uid, (rv, Instant::now()));
                }
            }
            ClaimSync::External(provisioner) => {
                let mut claim = pvc.clone();
                if ann(pvc, ANN_STORAGE_PROVISIONER) != Some(provisioner.as_str()) {
                    set_annotation(&mut claim, ANN_BETA_STORAGE_PROVISIONER, &provisioner);
                    set_annotation(&mut claim, ANN_STORAGE_PROVISIONER, &provisioner);
                    let req = update(&user, "persistentvolumeclaims", &claim, false);
                    match write(
                        sim,
                        req,
                        "claim handed to its external provisioner",
                        ns,
                        name,
                    )
                    .await
                    {
                        Some(updated) => claim = updated,
                        None => continue,
                    }
                }
                if due {
                    let n = note(
                        "Normal",
                        "ExternalProvisioning",
                        external_provisioning_message(&provisioner),
                    );
                    record(sim, state, &claim, &n).await;
                    state.synced.insert(uid, (rv, Instant::now()));
                }
            }
            ClaimSync::Lost(note) => {
                if s(pvc, "/status/phase") != "Lost" {
                    let mut claim = pvc.clone();
                    claim["status"]["phase"] = json!("Lost");
                    let req = update(&user, "persistentvolumeclaims", &claim, true);
                    if write(sim, req, "claim Lost", ns, name).await.is_some() {
                        record(sim, state, pvc, &note).await;
                    }
                }
            }
        }
    }
    let live: HashSet<&str> = pvcs.iter().map(|c| s(c, "/metadata/uid")).collect();
    state.synced.retain(|uid, _| live.contains(uid.as_str()));
    state
        .recorded
        .retain(|(uid, _, _), _| live.contains(uid.as_str()));

    // Volumes, against the claims as they are now (the claim pass may have bound some).
    let pvs = list(sim, "", "persistentvolumes");
    let pvcs = list(sim, "", "persistentvolumeclaims");
    let claims: HashMap<(&str, &str), &Value> = pvcs
        .iter()
        .map(|c| ((s(c, "/metadata/namespace"), s(c, "/metadata/name")), c))
        .collect();
    for pv in &pvs {
        let name = s(pv, "/metadata/name");
        match sync_volume(pv, &claims) {
            VolumeSync::Idle => {}
            VolumeSync::Phase(phase) => {
                let mut p = pv.clone();
                set_phase(&mut p, phase);
                let req = update(&user, "persistentvolumes", &p, true);
                write(sim, req, &format!("volume {phase}"), "", name).await;
            }
            VolumeSync::Unbind => {
                let mut p = pv.clone();
                p["spec"]["claimRef"] = Value::Null;
                if let Some(a) = p
                    .pointer_mut("/metadata/annotations")
                    .and_then(Value::as_object_mut)
                {
                    a.remove(ANN_BOUND_BY_CONTROLLER);
                }
                let req = update(&user, "persistentvolumes", &p, false);
                if let Some(mut p) = write(sim, req, "volume unbound", "", name).await {
                    set_phase(&mut p, "Available");
                    let req = update(&user, "persistentvolumes", &p, true);
                    write(sim, req, "volume Available", "", name).await;
                }
            }
        }
    }
}

fn set_phase(pv: &mut Value, phase: &str) {
    if !pv.get("status").is_some_and(Value::is_object) {
        pv["status"] = json!({});
    }
    pv["status"]["phase"] = json!(phase);
    pv["status"]["lastPhaseTransitionTime"] = json!(now());
}

/// Records an event on a claim, folding a repeat into the Event already written (count and
/// lastTimestamp), as client-go's event correlator does for the real controller.
async fn record(sim: &Arc<Sim>, state: &mut State, pvc: &Value, note: &Note) {
    let ns = s(pvc, "/metadata/namespace").to_string();
    let claim = s(pvc, "/metadata/name").to_string();
    let key = (
        s(pvc, "/metadata/uid").to_string(),
        note.reason,
        note.message.clone(),
    );
    let t = now();
    if let Some((ev_ns, ev_name, count)) = state.recorded.get(&key).cloned() {
        let patch = json!({"count": count + 1, "lastTimestamp": t});
        let req = ApiRequest::new(
            Verb::Patch(PatchType::Strategic),
            "v1",
            "events",
            state.user.clone(),
        )
        .ns(&ev_ns)
        .name(&ev_name)
        .body(&patch);
        if sim.call(req).await.is_ok() {
            state.recorded.insert(key, (ev_ns, ev_name, count + 1));
            return;
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let ev_name = format!("{claim}.{nanos:x}");
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": ev_name, "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
            "name": claim, "uid": s(pvc, "/metadata/uid"),
            "resourceVersion": s(pvc, "/metadata/resourceVersion")},
        "reason": note.reason, "message": note.message, "type": note.type_,
        "source": {"component": COMPONENT},
        "firstTimestamp": t, "lastTimestamp": t, "count": 1, "eventTime": null,
        "reportingComponent": COMPONENT, "reportingInstance": "",
    });
    let req = ApiRequest::new(Verb::Create, "v1", "events", state.user.clone())
        .ns(&ns)
        .body(&event);
    match sim.call(req).await {
        Ok(_) => {
            tracing::info!(namespace = %ns, name = %claim, reason = note.reason, "pv controller: event");
            state.recorded.insert(key, (ns, ev_name, 1));
        }
        Err(e) => {
            tracing::debug!(namespace = %ns, name = %claim, error = %e, "pv controller: failed to record event")
        }
    }
}

/// Binds a claim and a volume the way the PV controller does (bind(): volume first, then claim;
/// each step only when needed, so finishing a half-done binding repeats nothing).
async fn bind(sim: &Arc<Sim>, user: &UserInfo, pv: &Value, pvc: &Value) {
    let pv_name = s(pv, "/metadata/name");
    let (ns, name) = (s(pvc, "/metadata/namespace"), s(pvc, "/metadata/name"));
    let uid = s(pvc, "/metadata/uid");
    let mut volume = pv.clone();
    let full_ref = s(pv, "/spec/claimRef/namespace") == ns
        && s(pv, "/spec/claimRef/name") == name
        && s(pv, "/spec/claimRef/uid") == uid;
    let chosen_by_controller = !bound_to(pv, pvc);
    if !full_ref || (chosen_by_controller && ann(pv, ANN_BOUND_BY_CONTROLLER).is_none()) {
        volume["spec"]["claimRef"] = json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1",
            "namespace": ns, "name": name, "uid": uid,
            "resourceVersion": s(pvc, "/metadata/resourceVersion")});
        if chosen_by_controller {
            set_annotation(&mut volume, ANN_BOUND_BY_CONTROLLER, "yes");
        }
        let req = update(user, "persistentvolumes", &volume, false);
        match write(sim, req, "volume bound to claim", ns, name).await {
            Some(v) => volume = v,
            None => return,
        }
    }
    if s(&volume, "/status/phase") != "Bound" {
        set_phase(&mut volume, "Bound");
        let req = update(user, "persistentvolumes", &volume, true);
        match write(sim, req, "volume phase Bound", "", pv_name).await {
            Some(v) => volume = v,
            None => return,
        }
    }
    let mut claim = pvc.clone();
    let mut dirty = false;
    if s(pvc, "/spec/volumeName") != pv_name {
        claim["spec"]["volumeName"] = json!(pv_name);
        if ann(pvc, ANN_BOUND_BY_CONTROLLER).is_none() {
            set_annotation(&mut claim, ANN_BOUND_BY_CONTROLLER, "yes");
        }
        dirty = true;
    }
    if ann(pvc, ANN_BIND_COMPLETED).is_none() {
        set_annotation(&mut claim, ANN_BIND_COMPLETED, "yes");
        dirty = true;
    }
    if dirty {
        let req = update(user, "persistentvolumeclaims", &claim, false);
        match write(sim, req, "claim bound to volume", ns, name).await {
            Some(c) => claim = c,
            None => return,
        }
    }
    let modes = volume.pointer("/spec/accessModes").cloned();
    let cap = volume.pointer("/spec/capacity").cloned();
    if s(&claim, "/status/phase") != "Bound"
        || claim.pointer("/status/accessModes") != modes.as_ref()
        || claim.pointer("/status/capacity") != cap.as_ref()
    {
        if !claim.get("status").is_some_and(Value::is_object) {
            claim["status"] = json!({});
        }
        claim["status"]["phase"] = json!("Bound");
        claim["status"]["accessModes"] = modes.unwrap_or(Value::Null);
        claim["status"]["capacity"] = cap.unwrap_or(Value::Null);
        let req = update(user, "persistentvolumeclaims", &claim, true);
        write(sim, req, "claim phase Bound", ns, name).await;
    }
}

/// The pvc-protection and pv-protection controllers: remove the finalizer of a deleted claim
/// no pod uses any more, and of a deleted volume that is not Bound.
async fn protection_pass(sim: &Arc<Sim>) {
    let deleting = |items: Vec<Value>, f: &str| -> Vec<Value> {
        items
            .into_iter()
            .filter(|o| o.pointer("/metadata/deletionTimestamp").is_some() && has_finalizer(o, f))
            .collect()
    };
    let claims = deleting(
        list(sim, "", "persistentvolumeclaims"),
        FINALIZER_PVC_PROTECTION,
    );
    let pods = if claims.is_empty() {
        Vec::new()
    } else {
        list(sim, "", "pods")
    };
    let pvc_user = UserInfo::service_account("kube-system", "pvc-protection-controller");
    for claim in claims.iter().filter(|c| !claim_in_use(c, &pods)) {
        remove_finalizer(
            sim,
            &pvc_user,
            "persistentvolumeclaims",
            claim,
            FINALIZER_PVC_PROTECTION,
        )
        .await;
    }
    let pv_user = UserInfo::service_account("kube-system", "pv-protection-controller");
    for pv in deleting(list(sim, "", "persistentvolumes"), FINALIZER_PV_PROTECTION)
        .iter()
        .filter(|v| s(v, "/status/phase") != "Bound")
    {
        remove_finalizer(
            sim,
            &pv_user,
            "persistentvolumes",
            pv,
            FINALIZER_PV_PROTECTION,
        )
        .await;
    }
}

async fn remove_finalizer(sim: &Arc<Sim>, user: &UserInfo, resource: &str, obj: &Value, f: &str) {
    let mut o = obj.clone();
    if let Some(a) = o
        .pointer_mut("/metadata/finalizers")
        .and_then(Value::as_array_mut)
    {
        a.retain(|x| x != f);
    }
    let req = update(user, resource, &o, false);
    write(
        sim,
        req,
        &format!("{f} finalizer removed"),
        s(obj, "/metadata/namespace"),
        s(obj, "/metadata/name"),
    )
    .await;
}

#[cfg(test)]
mod tests;
