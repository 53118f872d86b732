//! Bind: whether the claim and its volume are bound to each other.

use super::*;

pub(super) fn bind(
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
