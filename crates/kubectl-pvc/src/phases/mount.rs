//! Mount: whether the pods that use the claim have it mounted and run.

use super::*;

pub(super) fn mount(pods: &[DesiredPod]) -> PhaseReport {
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
