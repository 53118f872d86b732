//! Provision: whether a volume was made (or chosen) for the claim.

use super::*;

pub(super) fn provision(set: &ObjectSet, claim_events: &[&Event], users: &[&Pod]) -> PhaseReport {
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
