//! The node agent: the only part that touches a node's hostPath directories. It watches only
//! the volumes labelled for its node, creates each one's directory, removes a directory once
//! the live API shows both its volume and its claim gone, and reports the node's free space in
//! its own capacity report (a Lease, see `capacity`). It writes no volume, claim or Node.
//!
//! Removal, the rules: a volume leaving the watch (deleted, or relabelled) is a candidate only.
//! The agent GETs the PV and the claim from the API; it removes the directory when neither
//! exists and the volume's reclaim policy was Delete, keeps it for good when the PV still
//! exists or the policy was Retain, and asks again on every resync while the claim exists. An
//! unknown directory found by the resync sweep (its volume deleted while the agent was down) is
//! removed only when empty, unchanged for a minute and confirmed gone the same way; one holding
//! data is kept and logged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_runtime::Service;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher::Config as WatchConfig;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, Keyed};
use crate::controller::log_error;
use crate::error::{Error, Result, kube, status_code};
use crate::informer::{self, Change};
use crate::objects::{
    CachedClaim, CachedVolume, LABEL_NODE, Lean, claim_ref, directory, node_label, phase_of_volume,
    provisioned_by, reclaim_policy,
};
use crate::plan::{Backend, Provisioners};
use crate::queue::{Key, Queue, Work};
use crate::{capacity, paths, storage};

/// An unknown directory is removed only once unchanged for this long.
const ORPHAN_MIN_AGE: Duration = Duration::from_secs(60);

/// The agent's readiness check: ready once its volume cache has synced.
const READY: &str = "agent";

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name (the DaemonSet's downward API `spec.nodeName`).
    pub node_name: String,
    /// Directory under which hostPath volumes live, the same path on the host and here.
    pub hostpath_base: PathBuf,
}

/// What the agent remembers of a volume on its node, to judge its directory once it is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub volume: String,
    pub directory: String,
    /// The claimRef's (namespace, name, uid).
    pub claim: Option<(String, String, String)>,
    pub policy: String,
}

/// A hostPath volume of ours (provisioned by one of our hostPath names) with a directory, as
/// the agent remembers it.
pub fn known(pv: &CachedVolume, names: &Provisioners) -> Option<Known> {
    let ours = provisioned_by(pv).is_some_and(|p| names.backend(p) == Some(Backend::HostPath));
    if !ours {
        return None;
    }
    let directory = directory(pv)
        .filter(|d| paths::parse_dir_name(d).is_some())?
        .to_owned();
    Some(Known {
        volume: pv.metadata.name.as_deref()?.to_owned(),
        directory,
        claim: claim_ref(pv).map(|(ns, n, u)| (ns.to_owned(), n.to_owned(), u.to_owned())),
        policy: reclaim_policy(pv).to_owned(),
    })
}

/// Whether a volume's directory should exist: ours, and neither terminating nor released.
pub fn wants_directory(pv: &CachedVolume, names: &Provisioners) -> Option<Known> {
    let live = pv.metadata.deletion_timestamp.is_none()
        && !matches!(phase_of_volume(pv), "Released" | "Failed");
    known(pv, names).filter(|_| live)
}

/// What to do with a gone volume's directory, on the live API's word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Remove,
    /// Keep the data for good, for this reason.
    Keep(&'static str),
    /// Ask again later, for this reason.
    Wait(&'static str),
}

/// `volume_exists`: a PV of that name exists; `claim_uid`: the uid of the claim of that
/// namespace and name, if one exists.
pub fn verdict(k: &Known, volume_exists: bool, claim_uid: Option<&str>) -> Verdict {
    if volume_exists {
        return Verdict::Keep("its volume still exists");
    }
    let claim_lives = match (&k.claim, claim_uid) {
        (Some((_, _, want)), Some(uid)) => want.is_empty() || want == uid,
        _ => false,
    };
    if claim_lives {
        return Verdict::Wait("its claim still exists");
    }
    if k.policy != "Delete" {
        return Verdict::Keep("the reclaim policy keeps the data");
    }
    Verdict::Remove
}

struct Agent {
    client: kube::Client,
    node: String,
    base: PathBuf,
    namespace: String,
    identity: String,
    names: Arc<Provisioners>,
    /// How long a report stays valid; renewed every quarter of it.
    report_lifetime: Duration,
    volumes: Cache<CachedVolume>,
    /// Volumes that left the watch, by directory, waiting for the live API's word.
    gone: Arc<Mutex<BTreeMap<String, Known>>>,
    /// Those whose claim still existed when asked: asked again on each resync only.
    waiting: Mutex<BTreeMap<String, Known>>,
    last_report: Mutex<Option<(u64, Timestamp)>>,
    warned: Mutex<HashSet<String>>,
}

/// What the agent gets from the process around it.
pub struct Setup {
    pub client: kube::Client,
    /// Where its capacity report goes.
    pub namespace: String,
    /// Its name in the report.
    pub identity: String,
    pub resync: Duration,
    /// The names whose volumes are ours.
    pub provisioners: Arc<Provisioners>,
    /// How long its report stays valid.
    pub report_lifetime: Duration,
}

/// Starts the agent of `config.node_name`: its watch, and its loop, as tasks of `svc`.
pub fn spawn(setup: Setup, config: AgentConfig, svc: &mut Service<Error>) {
    let Setup {
        client,
        namespace,
        identity,
        resync,
        provisioners,
        report_lifetime,
    } = setup;
    svc.readiness().register(READY);
    let readiness = svc.readiness().clone();
    let queue = Arc::new(Queue::default());
    let gone: Arc<Mutex<BTreeMap<String, Known>>> = Arc::default();
    let selector = format!("{LABEL_NODE}={}", node_label(&config.node_name));
    let (q, g) = (queue.clone(), gone.clone());
    // Every volume of this node seen, to notice those a relist no longer shows.
    let mut seen: HashMap<String, Known> = HashMap::new();
    let mut relisted: HashSet<String> = HashSet::new();
    let names = provisioners.clone();
    let volumes = informer::watch(
        Api::all(client.clone()),
        WatchConfig::default().labels(&selector),
        svc,
        "the agent's volume watch",
        move |c: Change<'_, CachedVolume>| {
            let left = |k: Known| {
                g.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(k.directory.clone(), k);
            };
            match c {
                Change::Listed(pv) | Change::Applied(pv) => {
                    if let Some(k) = known(pv, &names) {
                        relisted.insert(k.volume.clone());
                        seen.insert(k.volume.clone(), k);
                    }
                    if matches!(c, Change::Applied(_)) {
                        q.push(Key::Volume(pv.name().to_owned()));
                    }
                }
                Change::Deleted(pv) => {
                    let name = pv.name().to_owned();
                    if let Some(k) = seen.remove(&name).or_else(|| known(pv, &names)) {
                        left(k);
                    }
                    q.push(Key::Volume(name));
                }
                Change::Synced => {
                    let missing: Vec<String> = seen
                        .keys()
                        .filter(|n| !relisted.contains(*n))
                        .cloned()
                        .collect();
                    for name in missing {
                        if let Some(k) = seen.remove(&name) {
                            left(k);
                        }
                    }
                    relisted.clear();
                    q.push_all();
                }
            }
        },
    );
    let agent = Agent {
        client,
        node: config.node_name,
        base: config.hostpath_base,
        namespace,
        identity,
        names: provisioners,
        report_lifetime,
        volumes,
        gone,
        waiting: Mutex::default(),
        last_report: Mutex::default(),
        warned: Mutex::default(),
    };
    let shutdown = svc.shutdown();
    svc.spawn(
        "the node agent",
        run(agent, queue, readiness, resync, shutdown),
    );
}

async fn run(
    agent: Agent,
    queue: Arc<Queue>,
    readiness: ballast_runtime::admin::Readiness,
    resync: Duration,
    shutdown: CancellationToken,
) -> Result<()> {
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        res = agent.volumes.wait_until_ready() => if res.is_err() { return Ok(()) },
    }
    readiness.set(READY, true);
    tracing::info!(node = %agent.node, "agent cache synced; serving this node's volumes");
    queue.push_all();
    let mut next_resync = tokio::time::Instant::now();
    let renew = capacity::renew_every(agent.report_lifetime);
    loop {
        let full = match queue.take() {
            Work::All => true,
            Work::Keys(keys) => {
                for key in keys {
                    if let Key::Volume(name) = key
                        && let Some(pv) = agent.volumes.get("", &name)
                    {
                        agent.ensure(&pv);
                    }
                }
                false
            }
        };
        let resyncing = full || tokio::time::Instant::now() >= next_resync;
        if resyncing {
            for pv in agent.volumes.state() {
                agent.ensure(&pv);
            }
            agent.sweep().await;
            next_resync = tokio::time::Instant::now() + resync;
        }
        agent.settle_gone(resyncing).await;
        if let Err(e) = agent.report(renew).await {
            log_error(&e, &format!("capacity report of node {}", agent.node));
        }
        // The report is renewed (and free space looked at) every `renew` whatever else happens.
        let next_report = tokio::time::Instant::now() + renew;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            _ = queue.wait() => {}
            _ = tokio::time::sleep_until(next_resync.min(next_report)) => {}
        }
    }
}

impl Agent {
    /// Creates the directory of a volume placed on this node, if missing.
    fn ensure(&self, pv: &CachedVolume) {
        let Some(k) = wants_directory(pv, &self.names) else {
            return;
        };
        match storage::ensure(&self.base, &k.directory) {
            Ok(true) => {
                tracing::info!(volume = %k.volume, directory = %k.directory, "created volume directory")
            }
            Ok(false) => {}
            Err(e) => log_error(&e, &k.directory),
        }
    }

    /// Judges the volumes that left the watch since last asked (with `again`, also those whose
    /// claim still existed), on the live API's word.
    async fn settle_gone(&self, again: bool) {
        let mut pending: Vec<Known> = self
            .gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        if again {
            let waiting =
                std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
            pending.extend(waiting.into_values());
        }
        for k in pending {
            self.gone
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&k.directory);
            let ask_again = match self.judge(&k).await {
                Ok(Verdict::Remove) => match storage::remove(&self.base, &k.directory) {
                    Ok(()) => {
                        tracing::info!(volume = %k.volume, directory = %k.directory, "volume and claim gone; removed its directory");
                        false
                    }
                    Err(e) => {
                        log_error(&e, &k.directory);
                        true
                    }
                },
                Ok(Verdict::Keep(why)) => {
                    tracing::info!(volume = %k.volume, directory = %k.directory, why, "kept volume directory");
                    false
                }
                Ok(Verdict::Wait(why)) => {
                    tracing::debug!(volume = %k.volume, why, "directory kept for now");
                    true
                }
                Err(e) => {
                    log_error(&e, &k.directory);
                    true
                }
            };
            if ask_again {
                self.waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(k.directory.clone(), k);
            }
        }
    }

    /// GETs the volume and its claim from the API (never the cache) and decides.
    async fn judge(&self, k: &Known) -> Result<Verdict> {
        let volume = Api::<Lean<CachedVolume>>::all(self.client.clone())
            .get_opt(&k.volume)
            .await
            .map_err(kube(format!("read volume {}", k.volume)))?;
        if volume.is_some() {
            return Ok(verdict(k, true, None));
        }
        let claim_uid = match &k.claim {
            Some((ns, name, _)) => Api::<Lean<CachedClaim>>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await
                .map_err(kube(format!("read claim {ns}/{name}")))?
                .map(|c| c.metadata.uid.unwrap_or_default()),
            None => None,
        };
        Ok(verdict(k, false, claim_uid.as_deref()))
    }

    /// Directories under the base path that no volume of this node accounts for: removed when
    /// empty, idle and confirmed gone by the API; kept (and logged once) when holding data.
    async fn sweep(&self) {
        let dirs = match storage::list(&self.base) {
            Ok(d) => d,
            Err(e) => return log_error(&e, &self.base.display().to_string()),
        };
        let volumes: HashSet<String> = self
            .volumes
            .state()
            .iter()
            .filter_map(|v| v.metadata.name.as_deref().map(str::to_owned))
            .collect();
        let mut waiting: HashSet<String> = self
            .gone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        waiting.extend(
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned(),
        );
        for dir in dirs {
            let Some((pv, ns, claim)) = paths::parse_dir_name(&dir) else {
                continue;
            };
            if volumes.contains(pv) || waiting.contains(&dir) {
                continue;
            }
            match storage::idle(&self.base, &dir, ORPHAN_MIN_AGE) {
                Ok(storage::Idle::Removed | storage::Idle::Recent) => continue,
                Ok(storage::Idle::NotEmpty) => {
                    let first = self
                        .warned
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(dir.clone());
                    if first {
                        tracing::warn!(directory = %dir, "directory belongs to no volume of this node but holds data; kept");
                    }
                    continue;
                }
                Err(e) => {
                    log_error(&e, &dir);
                    continue;
                }
                Ok(storage::Idle::Empty) => {}
            }
            // An empty directory: its volume may have been deleted while this agent was down.
            let k = Known {
                volume: pv.to_owned(),
                directory: dir.clone(),
                claim: Some((ns.to_owned(), claim.to_owned(), String::new())),
                policy: "Delete".into(),
            };
            match self.judge(&k).await {
                Ok(Verdict::Remove) => {
                    match storage::remove_if_idle(&self.base, &dir, ORPHAN_MIN_AGE) {
                        Ok(storage::Idle::Removed) => {
                            tracing::info!(directory = %dir, "removed unknown empty directory")
                        }
                        Ok(_) => {}
                        Err(e) => log_error(&e, &dir),
                    }
                }
                Ok(_) => {}
                Err(e) => log_error(&e, &dir),
            }
        }
    }

    /// Writes this node's capacity report when free space moved by a few percent, or to renew
    /// (`renew` after the last write).
    async fn report(&self, renew: Duration) -> Result<()> {
        let free = storage::free_bytes(&self.base)?;
        let now = Timestamp::now();
        let last = *self.last_report.lock().unwrap_or_else(|e| e.into_inner());
        if !capacity::worth_writing(last, free, now, renew) {
            return Ok(());
        }
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = capacity::name(&self.node);
        let mut desired = capacity::report(
            &self.namespace,
            &self.node,
            &self.identity,
            free,
            now,
            self.report_lifetime,
        );
        let pp = PostParams {
            field_manager: Some(crate::FIELD_MANAGER.into()),
            ..Default::default()
        };
        let current = api
            .get_opt(&name)
            .await
            .map_err(kube(format!("read capacity report {name}")))?;
        let written = match current {
            Some(cur) => {
                desired.metadata.resource_version = cur.metadata.resource_version;
                api.replace(&name, &pp, &desired).await
            }
            None => api.create(&pp, &desired).await,
        };
        match written {
            Ok(_) => {}
            // Another write won; the next round reads it and decides again.
            Err(e) if status_code(&e) == Some(409) => return Ok(()),
            Err(e) => return Err(kube(format!("write capacity report {name}"))(e)),
        }
        *self.last_report.lock().unwrap_or_else(|e| e.into_inner()) = Some((free, now));
        tracing::debug!(node = %self.node, free, "capacity report written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{ANN_DIRECTORY, ANN_PROVISIONED_BY};
    use serde_json::json;

    fn pv(phase: &str, policy: &str) -> CachedVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pvc-1", "annotations": {
                ANN_PROVISIONED_BY: crate::objects::PROVISIONER_HOSTPATH,
                ANN_DIRECTORY: "pvc-1_ns_data"}},
            "spec": {"persistentVolumeReclaimPolicy": policy,
                     "claimRef": {"namespace": "ns", "name": "data", "uid": "u1"}},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn provisioned_by(name: &str) -> CachedVolume {
        let mut v = pv("Bound", "Delete");
        v.provisioned_by = Some(name.into());
        v
    }

    #[test]
    fn directories_are_wanted_for_our_live_volumes_only() {
        let names = Provisioners::default();
        assert!(wants_directory(&pv("Bound", "Delete"), &names).is_some());
        assert!(wants_directory(&pv("Pending", "Delete"), &names).is_some());
        assert!(wants_directory(&pv("Released", "Delete"), &names).is_none());
        let nfs = provisioned_by("ballast.dev/nfs");
        assert!(wants_directory(&nfs, &names).is_none());
        let legacy = provisioned_by(crate::objects::LEGACY_PROVISIONER_HOSTPATH);
        assert!(
            wants_directory(&legacy, &names).is_some(),
            "volumes made under the old name keep their directories"
        );
        let other = Provisioners::new("hostpath.other.example", "other.example/nfs");
        assert!(
            wants_directory(&pv("Bound", "Delete"), &other).is_none(),
            "another instance's volume on this node is not this agent's"
        );
        assert!(wants_directory(&provisioned_by("hostpath.other.example"), &other).is_some());
    }

    #[test]
    fn a_directory_goes_only_when_volume_and_claim_are_gone_and_the_policy_says_delete() {
        let names = Provisioners::default();
        let k = known(&pv("Released", "Delete"), &names).unwrap();
        assert_eq!(k.directory, "pvc-1_ns_data");
        assert_eq!(
            verdict(&k, true, None),
            Verdict::Keep("its volume still exists")
        );
        assert_eq!(
            verdict(&k, false, Some("u1")),
            Verdict::Wait("its claim still exists")
        );
        assert_eq!(
            verdict(&k, false, Some("u2")),
            Verdict::Remove,
            "a new claim of the same name is another claim"
        );
        assert_eq!(verdict(&k, false, None), Verdict::Remove);
        let retained = known(&pv("Released", "Retain"), &names).unwrap();
        assert_eq!(
            verdict(&retained, false, None),
            Verdict::Keep("the reclaim policy keeps the data")
        );
    }
}
