//! Pure: the status a PodManager should show, from the plan and what applying it did.
//! Conditions follow metav1.Condition: `lastTransitionTime` moves only when `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{PodManager, PodManagerStatus};
use crate::plan::{DeleteReason, Plan};

/// Condition types, as users of Deployments would look for them.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// The label selector of a PodManager's pods (also `status.selector` for the scale subresource).
pub fn selector(pm: &PodManager) -> String {
    format!(
        "{}={},{}={}",
        crate::LABEL_NAME,
        pm.metadata.name.as_deref().unwrap_or_default(),
        crate::LABEL_UID,
        pm.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// Whether a reconcile writes its status. Not when it created or deleted pods
/// (`pods_written`) and every pod call succeeded: its counts are from before those writes, and
/// the pod watch reports each of them, triggering the reconcile that counts them and writes
/// that status instead (one write where there would be two). A failure is shown at once.
pub fn write_now(failures: &[String], pods_written: usize) -> bool {
    pods_written == 0 || !failures.is_empty()
}

/// Compute the status to show. `failures` are messages of API calls that failed while applying
/// `plan`; `now` stamps conditions whose status changed.
pub fn desired(pm: &PodManager, plan: &Plan, failures: &[String], now: &Time) -> PodManagerStatus {
    let generation = pm.metadata.generation;
    let replicas = pm.spec.replicas.max(0);
    let c = plan.counts;
    let ready = i32::try_from(c.ready).unwrap_or(i32::MAX);
    let current = i32::try_from(c.current).unwrap_or(i32::MAX);
    let previous = pm
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();

    let ready_cond = if ready >= replicas {
        (
            "True",
            "AllReplicasReady",
            format!("{ready}/{replicas} pods ready"),
        )
    } else {
        (
            "False",
            "ReplicasNotReady",
            format!("{ready}/{replicas} pods ready"),
        )
    };

    let progressing = if !plan.create.is_empty() {
        (
            "True",
            "ScalingUp",
            format!("creating {}", plan.create.join(", ")),
        )
    } else if let Some(d) = plan
        .delete
        .iter()
        .find(|d| d.reason == DeleteReason::Rollout)
    {
        (
            "True",
            "RollingOut",
            format!("replacing {} with image {}", d.name, pm.spec.image),
        )
    } else if !plan.delete.is_empty() {
        let names: Vec<&str> = plan.delete.iter().map(|d| d.name.as_str()).collect();
        (
            "True",
            "ScalingDown",
            format!("deleting {}", names.join(", ")),
        )
    } else if let Some(w) = &plan.waiting {
        ("True", "Waiting", w.clone())
    } else if c.updated < c.current {
        (
            "True",
            "RollingOut",
            format!(
                "{}/{} pods on image {}",
                c.updated, c.current, pm.spec.image
            ),
        )
    } else {
        (
            "False",
            "Complete",
            format!("{current} pods on image {}", pm.spec.image),
        )
    };

    let degraded = if !failures.is_empty() {
        ("True", "PodOperationFailed", failures.join("; "))
    } else if c.stranded > 0 {
        (
            "True",
            "PodsOnNotReadyNodes",
            format!(
                "{} pod(s) on NotReady nodes kept while eviction protection is on; replaced elsewhere",
                c.stranded
            ),
        )
    } else {
        ("False", "AsExpected", "no failures".to_string())
    };

    let conditions = [
        (READY, ready_cond),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
    ]
    .into_iter()
    .map(|(type_, (status, reason, message))| {
        condition(previous, type_, status, reason, message, generation, now)
    })
    .collect();

    PodManagerStatus {
        ready_replicas: ready,
        ready: Some(format!("{ready}/{replicas}")),
        current_replicas: current,
        observed_generation: generation,
        selector: Some(selector(pm)),
        conditions,
    }
}

/// A condition, keeping the previous transition time when the status is unchanged.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ClusterHealth, plan};
    use crate::testing::{PodFixture, mk_pm, mk_pod};
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("timestamp"))
    }

    fn cond<'a>(s: &'a PodManagerStatus, type_: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn status_waits_for_the_pod_writes_to_be_seen_unless_something_failed() {
        assert!(write_now(&[], 0), "nothing written: the status is current");
        assert!(
            !write_now(&[], 3),
            "three creates landed: their watch events follow"
        );
        let failed = vec!["failed to create pod web-2: quota".to_string()];
        assert!(write_now(&failed, 2), "a failure is shown at once");
        assert!(write_now(&failed, 0));
    }

    #[test]
    fn all_ready_pods_give_ready_true_and_progressing_complete() {
        let pm = mk_pm("web", 3, "nginx:1.21");
        let pods: Vec<_> = (0..3)
            .map(|i| mk_pod(&format!("web-{i}")).ready())
            .collect();
        let p = plan(&pm, &pods, &ClusterHealth::all_ready());
        let s = desired(&pm, &p, &[], &at(100));
        assert_eq!((s.ready_replicas, s.current_replicas), (3, 3));
        assert_eq!(s.ready.as_deref(), Some("3/3"));
        assert_eq!(cond(&s, READY).status, "True");
        assert_eq!(cond(&s, READY).message, "3/3 pods ready");
        assert_eq!(cond(&s, PROGRESSING).reason, "Complete");
        assert_eq!(cond(&s, DEGRADED).status, "False");
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(cond(&s, READY).observed_generation, Some(1));
        assert_eq!(
            s.selector.as_deref(),
            Some("podmanager=web,podmanager-uid=uid-web")
        );
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut pm = mk_pm("web", 2, "nginx:1.21");
        let one = vec![mk_pod("web-0").ready()];
        let first = desired(
            &pm,
            &plan(&pm, &one, &ClusterHealth::all_ready()),
            &[],
            &at(100),
        );
        assert_eq!(cond(&first, READY).status, "False");
        pm.status = Some(first);

        // Same status, new message: the transition time stays.
        let none: Vec<k8s_openapi::api::core::v1::Pod> = vec![];
        let second = desired(
            &pm,
            &plan(&pm, &none, &ClusterHealth::all_ready()),
            &[],
            &at(200),
        );
        assert_eq!(cond(&second, READY).message, "0/2 pods ready");
        assert_eq!(cond(&second, READY).last_transition_time, at(100));
        pm.status = Some(second);

        let two = vec![mk_pod("web-0").ready(), mk_pod("web-1").ready()];
        let third = desired(
            &pm,
            &plan(&pm, &two, &ClusterHealth::all_ready()),
            &[],
            &at(300),
        );
        assert_eq!(cond(&third, READY).status, "True");
        assert_eq!(cond(&third, READY).last_transition_time, at(300));
    }

    #[test]
    fn unchanged_inputs_give_an_equal_status_so_no_write_happens() {
        let mut pm = mk_pm("web", 1, "nginx:1.21");
        let pods = vec![mk_pod("web-0").ready()];
        let p = plan(&pm, &pods, &ClusterHealth::all_ready());
        pm.status = Some(desired(&pm, &p, &[], &at(100)));
        let again = desired(&pm, &p, &[], &at(500));
        assert_eq!(pm.status.as_ref(), Some(&again));
    }

    #[test]
    fn failures_and_stranded_pods_show_as_degraded() {
        let pm = mk_pm("web", 2, "nginx:1.21");
        let pods = vec![mk_pod("web-0").ready().on("dead"), mk_pod("web-1").ready()];
        let health = ClusterHealth {
            known: true,
            not_ready: ["dead".to_string()].into(),
            protection: true,
        };
        let p = plan(&pm, &pods, &health);
        let s = desired(&pm, &p, &[], &at(1));
        assert_eq!(cond(&s, DEGRADED).reason, "PodsOnNotReadyNodes");
        assert_eq!(cond(&s, PROGRESSING).reason, "ScalingUp");
        assert_eq!(cond(&s, PROGRESSING).message, "creating web-2");
        assert_eq!(s.ready_replicas, 1);

        let s = desired(
            &pm,
            &p,
            &["failed to create pod web-2: quota".into()],
            &at(1),
        );
        assert_eq!(cond(&s, DEGRADED).reason, "PodOperationFailed");
        assert_eq!(
            cond(&s, DEGRADED).message,
            "failed to create pod web-2: quota"
        );
    }

    #[test]
    fn rollout_shows_as_progressing_with_the_pod_being_replaced() {
        let pm = mk_pm("web", 2, "nginx:1.22");
        let pods = vec![
            mk_pod("web-0").ready().image("nginx:1.21"),
            mk_pod("web-1").ready().image("nginx:1.21"),
        ];
        let s = desired(
            &pm,
            &plan(&pm, &pods, &ClusterHealth::all_ready()),
            &[],
            &at(1),
        );
        assert_eq!(cond(&s, PROGRESSING).reason, "RollingOut");
        assert_eq!(
            cond(&s, PROGRESSING).message,
            "replacing web-1 with image nginx:1.22"
        );
    }
}
