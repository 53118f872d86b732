//! Attach: whether the volume is attached to the nodes of the pods that use it.

use super::*;

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

pub(super) fn names_list(names: &[String]) -> String {
    format!("[{}]", names.join(","))
}

/// Attach when the evidence cannot be read: mounted everywhere proves it, otherwise it is open.
pub(super) fn attach_unknown(pods: &[DesiredPod], why: &str) -> PhaseReport {
    if pods.iter().all(|p| p.mount == MountState::Mounted) {
        success(Phase::Attach, format!("every pod has mounted it ({why})"))
    } else {
        report(Phase::Attach, Status::Pending, why)
    }
}

pub(super) fn attach(
    set: &ObjectSet,
    users: &[&Pod],
    pods: &[DesiredPod],
    bind: Status,
) -> PhaseReport {
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
