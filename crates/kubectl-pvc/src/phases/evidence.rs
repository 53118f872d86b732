//! Reading the objects: claim and class fields, the pods that use a claim, and the events about
//! an object.

use super::*;

pub(super) fn non_empty(s: Option<&String>) -> Option<&str> {
    s.map(String::as_str).filter(|s| !s.is_empty())
}

pub(super) fn volume_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    non_empty(claim.spec.as_ref().and_then(|s| s.volume_name.as_ref()))
}

pub(super) fn class_name(claim: &PersistentVolumeClaim) -> Option<&str> {
    non_empty(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_ref()),
    )
}

pub(super) fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub(super) fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    non_empty(meta.annotations.as_ref().and_then(|a| a.get(key)))
}

pub(super) fn event_time(e: &Event) -> Option<Timestamp> {
    e.last_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Events about one object, oldest first. A uid on both sides must match, so events of an
/// earlier object with the same name are not taken for this one's.
pub(super) fn events_about<'a>(
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

pub(super) fn latest<'a>(events: &[&'a Event], reasons: &[&str]) -> Option<&'a Event> {
    events
        .iter()
        .rev()
        .find(|e| e.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
        .copied()
}

pub(super) fn reason_is(e: &Event, reason: &str) -> bool {
    e.reason.as_deref() == Some(reason)
}

pub(super) fn message(e: &Event) -> String {
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

pub(super) fn uses_claim(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    let Some(name) = claim.metadata.name.as_deref() else {
        return false;
    };
    let terminal = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !terminal && claims_of(pod).iter().any(|c| c == name)
}

pub(super) fn node_of(pod: &Pod) -> Option<&str> {
    non_empty(pod.spec.as_ref().and_then(|s| s.node_name.as_ref()))
}

pub(super) fn desired_pod(pod: &Pod, events: &[Event]) -> DesiredPod {
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

pub(super) fn wait_for_first_consumer(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}
