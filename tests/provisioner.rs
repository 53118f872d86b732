//! provisioner end to end, on kube-sim and on a real control plane. The PV controller hands
//! claims to the provisioner (storage-provisioner annotations) and binds the volumes it creates
//! pre-bound — kube-controller-manager's own on a real cluster, kube-sim's look-alike on the
//! simulator; the scheduler places pods — kube-scheduler or kube-sim's; the provisioner never
//! writes a claim's spec or status. With real directories under temporary base paths (the
//! hostPath agents run in-process and need no real node): a hostPath claim gets a directory on
//! its selected node and a PV pinned there; the agents' reports become CSIStorageCapacity
//! objects, so the scheduler puts pods only on nodes with a live agent (several agentless
//! nodes, many pods), and an agent stopped for longer than its report's lifetime gets no new
//! volume, whether the scheduler or (Immediate binding) the provisioner places it; a selected
//! node without an agent, NotReady or short of space still gets `ProvisioningFailed` and loses
//! `selected-node`, so the scheduler picks again; an NFS claim gets a subdirectory of the
//! (fake, local: IS_NFS_SERVER) export and an `nfs` PV; a claim naming a missing PV gets it
//! created; a class mismatch stays unbound with a Warning; Delete removes directory and PV,
//! Retain keeps them; 50 claims at once are provisioned and bound once each; a crash halfway
//! through 50 claims leaves no duplicate and no orphan directory; two controllers racing create
//! each volume once; a node agent (with only its own rights) never removes a directory whose
//! volume or claim the API still has.
//!
//! Each scenario is an instance of its own: provisioner names containing its namespace
//! (`hostpath.<namespace>.ballast.dev`, also the name of its CSIDriver, and
//! `<namespace>.ballast.dev/nfs`), StorageClasses (`hostpath-<namespace>`, ...), nodes
//! ([`TestEnv::node`]), service accounts, and Leases and capacity objects in its namespace; its
//! controllers act only on claims of its classes. So the scenarios run in parallel on a shared
//! cluster too; the harness removes the classes, the CSIDriver and the volumes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ballast_e2e::{SimConfig, TestEnv, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIStorageCapacity, StorageClass};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use provisioner::plan::{Provisioners, RESCHEDULE};
use provisioner::{AgentConfig, Config, ControllerConfig, KubeAccess, NfsConfig, Options};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Longest wait for any single condition; each is expected within a few seconds (a real PV
/// controller that missed something retries on its 15s resync).
const TIMEOUT: Duration = Duration::from_secs(60);
const NFS_SERVER: &str = "nfs.example.internal";
const NFS_EXPORT: &str = "/srv/nfs";

struct Env {
    env: TestEnv,
    /// When the scenario began (for the run's log).
    began: Instant,
    ns: String,
    /// The scenario's hostPath provisioner name, also its CSIDriver's.
    hostpath_name: String,
    /// The scenario's NFS provisioner name.
    nfs_name: String,
    /// The scenario's shipped classes: `hostpath`, `nfs`, and `nfs-retain` (Retain).
    hostpath_class: String,
    nfs_class: String,
    retain_class: String,
    hostpath: tempfile::TempDir,
    export: tempfile::TempDir,
}

/// One event about an object, as `kubectl describe` shows it.
#[derive(Debug, Clone)]
struct Ev {
    type_: String,
    reason: String,
    message: String,
    /// The component that wrote it.
    by: String,
}

impl Ev {
    fn ours(&self) -> bool {
        self.by == provisioner::events::COMPONENT
    }
}

impl Env {
    async fn start() -> Env {
        Env::start_with(SimConfig::default().nodes(2).pv_binder(true)).await
    }

    /// Installs the scenario's instance as shipped, under names of its own: the hostPath
    /// CSIDriver (kustomize/provisioner-hostpath) and the StorageClasses
    /// (crates/provisioner/manifests), plus `nfs-retain`.
    async fn start_with(cfg: SimConfig) -> Env {
        Env::install(TestEnv::start(cfg).await).await
    }

    /// [`Env::start_with`] on a control plane of the scenario's own (see
    /// [`TestEnv::start_private`]); `None` after recording the skip without one.
    async fn start_private(cfg: SimConfig) -> Option<Env> {
        Some(Env::install(TestEnv::start_private(cfg).await?).await)
    }

    async fn install(env: TestEnv) -> Env {
        let ns = env.namespace.clone();
        let hostpath_name = format!("hostpath.{ns}.ballast.dev");
        let nfs_name = format!("{ns}.ballast.dev/nfs");
        let mut driver: CSIDriver = serde_yaml::from_str(include_str!(
            "../kustomize/provisioner-hostpath/base/csidriver.yaml"
        ))
        .expect("shipped CSIDriver parses");
        driver.metadata.name = Some(hostpath_name.clone());
        Api::<CSIDriver>::all(env.client.clone())
            .create(&PostParams::default(), &driver)
            .await
            .expect("the scenario's CSIDriver is created");
        let classes: Api<StorageClass> = Api::all(env.client.clone());
        let shipped = include_str!("../crates/provisioner/manifests/storageclasses.yaml");
        for doc in shipped.split("\n---\n") {
            let mut sc: StorageClass =
                serde_yaml::from_str(doc).expect("shipped StorageClass parses");
            let name = sc.metadata.name.take().expect("a named class");
            sc.metadata.name = Some(format!("{name}-{ns}"));
            sc.provisioner = match sc.provisioner.as_str() {
                provisioner::objects::PROVISIONER_HOSTPATH => hostpath_name.clone(),
                provisioner::objects::PROVISIONER_NFS => nfs_name.clone(),
                other => panic!("class {name} names provisioner {other}, not one the code serves"),
            };
            classes.create(&PostParams::default(), &sc).await.unwrap();
        }
        let me = Env {
            hostpath_class: format!("hostpath-{ns}"),
            nfs_class: format!("nfs-{ns}"),
            retain_class: format!("nfs-retain-{ns}"),
            env,
            began: Instant::now(),
            ns,
            hostpath_name,
            nfs_name,
            hostpath: tempfile::tempdir().unwrap(),
            export: tempfile::tempdir().unwrap(),
        };
        me.create_class(
            "nfs-retain",
            json!({"provisioner": me.nfs_name, "reclaimPolicy": "Retain"}),
        )
        .await;
        me
    }

    /// The scenario's names (and the default report lifetime).
    fn options(&self) -> Options {
        Options {
            provisioners: Provisioners::new(&self.hostpath_name, &self.nfs_name),
            ..Options::default()
        }
    }

    /// Starts a provisioner in-process with `config` and the scenario's names.
    async fn start_one(
        &self,
        config: Config,
        shutdown: &CancellationToken,
    ) -> provisioner::Running {
        provisioner::start_with(config, self.options(), shutdown.clone())
            .await
            .expect("provisioner starts")
    }

    /// Creates StorageClass `<base>-<namespace>` with `spec`; returns its name.
    async fn create_class(&self, base: &str, spec: serde_json::Value) -> String {
        let name = format!("{base}-{}", self.ns);
        let mut sc = json!({"metadata": {"name": name}});
        merge(&mut sc, spec);
        let sc: StorageClass = serde_json::from_value(sc).unwrap();
        Api::<StorageClass>::all(self.env.client.clone())
            .create(&PostParams::default(), &sc)
            .await
            .unwrap();
        name
    }

    fn node(&self, i: usize) -> String {
        self.env.node(i)
    }

    /// Ends the scenario: the harness removes namespace, classes, CSIDriver and volumes.
    async fn finish(self) {
        let Env { env, began, .. } = self;
        let backend = env.backend();
        let ran = began.elapsed();
        env.shutdown().await;
        eprintln!(
            "scenario ran {ran:?} on {backend}, then cleanup {:?}",
            began.elapsed() - ran
        );
    }

    /// Starts the provisioner in-process: controller plus the hostPath agent of node 1.
    async fn provisioner(
        &self,
        identity: &str,
        shutdown: &CancellationToken,
    ) -> provisioner::Running {
        self.provisioner_with(identity, shutdown, None).await
    }

    async fn provisioner_with(
        &self,
        identity: &str,
        shutdown: &CancellationToken,
        control_endpoint: Option<String>,
    ) -> provisioner::Running {
        let mut config = self.config(identity, "provisioner");
        config.control_endpoint = control_endpoint;
        self.start_one(config, shutdown).await
    }

    /// Controller (holding `lease`) serving hostPath and NFS on the fake export, plus the
    /// hostPath agent of node 1, in one process.
    fn config(&self, identity: &str, lease: &str) -> Config {
        let mut lease = ballast_runtime::leader::LeaseConfig::new(&self.ns, lease, identity);
        lease.lease_duration = Duration::from_secs(2);
        lease.renew_every = Duration::from_millis(300);
        Config {
            controller: Some(ControllerConfig {
                lease: Some(lease),
                hostpath: Some(self.hostpath.path().to_path_buf()),
                nfs: Some(NfsConfig {
                    server: NFS_SERVER.into(),
                    export_path: PathBuf::from(NFS_EXPORT),
                    mount: self.export.path().to_path_buf(),
                }),
            }),
            agent: Some(AgentConfig {
                node_name: self.node(1),
                hostpath_base: self.hostpath.path().to_path_buf(),
            }),
            namespace: self.ns.clone(),
            control_endpoint: None,
            control_client: Default::default(),
            admin_addr: "127.0.0.1:0".parse().unwrap(),
            kube: KubeAccess::Client(self.env.client.clone()),
            identity: identity.into(),
            resync: Duration::from_secs(2),
        }
    }

    /// A client with exactly an NFS controller's RBAC, as its ServiceAccount in the scenario's
    /// namespace (where its Lease and the agents' reports live).
    async fn controller_client(&self) -> kube::Client {
        self.client_with("provisioner", provisioner::CONTROLLER_RBAC)
            .await
    }

    /// A client with exactly a hostPath controller's RBAC (its capacity objects too).
    async fn hostpath_controller_client(&self) -> kube::Client {
        self.client_with(
            "provisioner-hostpath",
            provisioner::HOSTPATH_CONTROLLER_RBAC,
        )
        .await
    }

    /// A client for service account `name` of the scenario with exactly `rbac`.
    async fn client_with(&self, name: &str, rbac: &[(&str, &str, &[&str])]) -> kube::Client {
        let user = format!("system:serviceaccount:{}:{name}", self.ns);
        for (group, resource, verbs) in rbac {
            for verb in *verbs {
                self.env.allow(&user, verb, group, resource).await;
            }
        }
        let own_group = format!("system:serviceaccounts:{}", self.ns);
        self.env
            .client_as(
                &user,
                &["system:serviceaccounts", &own_group, "system:authenticated"],
            )
            .await
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        self.env.api()
    }

    fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.env.client.clone())
    }

    /// The volumes of this scenario: named after it or reserved for one of its claims (other
    /// scenarios' volumes share a real cluster).
    async fn our_volumes(&self) -> Vec<PersistentVolume> {
        self.volumes()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|v| {
                v.metadata.name.as_deref().unwrap_or("").contains(&self.ns)
                    || v.spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .and_then(|r| r.namespace.as_deref())
                        == Some(self.ns.as_str())
            })
            .collect()
    }

    async fn create_claim(
        &self,
        name: &str,
        class: &str,
        extra: serde_json::Value,
    ) -> PersistentVolumeClaim {
        let mut claim = json!({
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "storageClassName": class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Mi"}},
            },
        });
        merge(&mut claim, extra);
        let claim: PersistentVolumeClaim = serde_json::from_value(claim).unwrap();
        self.claims()
            .create(&PostParams::default(), &claim)
            .await
            .expect("claim created")
    }

    /// `extra` for a claim the scheduler has placed on `node` (its annotation, as kube-scheduler
    /// writes it for a pod using the claim).
    fn selected(node: &str) -> serde_json::Value {
        json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": node}}})
    }

    async fn bound(&self, name: &str) -> (PersistentVolumeClaim, PersistentVolume) {
        wait_for(&format!("claim {name} Bound"), TIMEOUT, || async {
            let c = self.claims().get(name).await.ok()?;
            let phase = c.status.as_ref()?.phase.clone()?;
            let volume = c.spec.as_ref()?.volume_name.clone()?;
            let pv = self.volumes().get(&volume).await.ok()?;
            let pv_phase = pv.status.as_ref()?.phase.clone()?;
            (phase == "Bound" && pv_phase == "Bound").then_some((c, pv))
        })
        .await
    }

    async fn selected_node_removed(&self, name: &str) {
        wait_for(
            &format!("selected-node removed from {name}"),
            TIMEOUT,
            || async {
                let c = self.claims().get(name).await.ok()?;
                (!c.metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("volume.kubernetes.io/selected-node"))
                .then_some(())
            },
        )
        .await
    }

    /// Starts a provisioner in-process with `config` and `options`.
    async fn start_with_options(
        &self,
        config: Config,
        options: Options,
        shutdown: &CancellationToken,
    ) -> provisioner::Running {
        provisioner::start_with(config, options, shutdown.clone())
            .await
            .expect("provisioner starts")
    }

    /// A process that is only node `i`'s hostPath agent, its volumes under `base`.
    fn agent_config(&self, i: usize, base: &Path) -> Config {
        let mut config = self.config(&format!("agent-node-{i}"), "unused");
        config.controller = None;
        config.agent = Some(AgentConfig {
            node_name: self.node(i),
            hostpath_base: base.to_path_buf(),
        });
        config
    }

    /// The capacity objects of this scenario's hostPath provisioner, as (class, node hostname)
    /// to bytes.
    async fn published(&self) -> BTreeMap<(String, String), u64> {
        let selector = provisioner::plan::capacity::selector(&self.hostpath_name);
        let list = self
            .env
            .api::<CSIStorageCapacity>()
            .list(&ListParams::default().labels(&selector))
            .await
            .unwrap();
        list.items
            .into_iter()
            .map(|c| {
                let host = c
                    .node_topology
                    .and_then(|t| t.match_labels)
                    .and_then(|l| l.get("kubernetes.io/hostname").cloned())
                    .unwrap_or_default();
                let bytes = c
                    .capacity
                    .and_then(|q| provisioner::quantity::to_bytes(&q.0))
                    .unwrap_or(0);
                ((c.storage_class_name, host), bytes)
            })
            .collect()
    }

    /// The nodes with a capacity object for `class`, once they are exactly `nodes`.
    async fn published_on(&self, class: &str, nodes: &[String]) -> BTreeMap<String, u64> {
        let want: BTreeSet<&String> = nodes.iter().collect();
        wait_for(
            &format!("capacity of class {class} published for exactly {want:?}"),
            TIMEOUT,
            || async {
                let got: BTreeMap<String, u64> = self
                    .published()
                    .await
                    .into_iter()
                    .filter(|((c, _), _)| c == class)
                    .map(|((_, host), bytes)| (host, bytes))
                    .collect();
                (got.keys().collect::<BTreeSet<_>>() == want).then_some(got)
            },
        )
        .await
    }

    /// Creates claim `claim` of `class` and a pod `pod` using it, for the scheduler to place.
    async fn pod_with_claim(&self, pod: &str, claim: &str, class: &str) {
        self.create_claim(claim, class, json!({})).await;
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod, "namespace": self.ns},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}],
                     "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}}))
        .unwrap();
        self.env
            .api::<Pod>()
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
    }

    /// The node the scheduler bound pod `name` to, once it has.
    async fn scheduled(&self, name: &str) -> String {
        wait_for(&format!("pod {name} scheduled"), TIMEOUT, || async {
            let pod = self.env.api::<Pod>().get(name).await.ok()?;
            pod.spec?.node_name.filter(|n| !n.is_empty())
        })
        .await
    }

    /// The provisioner's `ProvisioningFailed` events about claim `name`.
    async fn failures(&self, name: &str) -> Vec<String> {
        self.events_for(name)
            .await
            .into_iter()
            .filter(|e| e.ours() && e.reason == "ProvisioningFailed")
            .map(|e| e.message)
            .collect()
    }

    /// The free bytes `node`'s agent reports, once it has.
    async fn reported_free(&self, node: &str) -> u64 {
        let leases: Api<Lease> = self.env.api();
        wait_for(&format!("{node}'s capacity report"), TIMEOUT, || async {
            let lease = leases
                .get_opt(&provisioner::capacity::name(node))
                .await
                .ok()??;
            lease.metadata.annotations?["ballast.dev/hostpath-free-bytes"]
                .parse()
                .ok()
        })
        .await
    }

    async fn events(&self) -> Vec<Event> {
        self.env
            .api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    }

    async fn events_for(&self, name: &str) -> Vec<Ev> {
        self.events()
            .await
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .map(|e| Ev {
                by: reporter(&e),
                type_: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
            })
            .collect()
    }

    /// The message of the provisioner's first Warning `reason` about claim `name`, once written.
    async fn our_warning(&self, name: &str, reason: &str) -> String {
        wait_for(
            &format!("{reason} about {name} from the provisioner"),
            TIMEOUT,
            || async {
                self.events_for(name)
                    .await
                    .into_iter()
                    .find(|e| e.ours() && e.type_ == "Warning" && e.reason == reason)
                    .map(|e| e.message)
            },
        )
        .await
    }

    /// Prints the Warning events of the scenario written by others than the provisioner (the
    /// PV controller's, on a real cluster), for the run's log; returns how many there are.
    async fn report_other_warnings(&self) -> usize {
        let warnings: Vec<String> = self
            .events()
            .await
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| reporter(e) != provisioner::events::COMPONENT)
            .map(|e| {
                format!(
                    "{} x{} {} {}: {}",
                    reporter(&e),
                    e.count.unwrap_or(1),
                    e.involved_object.name.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .collect();
        eprintln!(
            "Warning events from others than the provisioner ({}): {}",
            warnings.len(),
            self.env.backend()
        );
        for w in &warnings {
            eprintln!("  {w}");
        }
        warnings.len()
    }
}

/// The component that wrote `e`: its reporting controller, or the legacy source.
fn reporter(e: &Event) -> String {
    e.reporting_component
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
        .unwrap_or_default()
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

fn dirs(base: &Path) -> BTreeSet<String> {
    std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn pinned_node(pv: &PersistentVolume) -> Option<String> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let expr = terms.first()?.match_expressions.as_ref()?.first()?;
    Some(format!(
        "{} {} {:?}",
        expr.key,
        expr.operator,
        expr.values.as_ref()?
    ))
}

/// What [`pinned_node`] says of a volume pinned to `node`.
fn pinned_to(node: &str) -> Option<String> {
    Some(format!("kubernetes.io/hostname In {:?}", [node]))
}

#[tokio::test]
async fn hostpath_claim_gets_a_directory_on_its_node_and_delete_removes_it() {
    let env = Env::start().await;
    let (ns, node1) = (env.ns.clone(), env.node(1));
    let shutdown = CancellationToken::new();
    let running = env.provisioner("p1", &shutdown).await;

    // WaitForFirstConsumer: nothing happens until the scheduler has picked a node.
    env.create_claim("data", &env.hostpath_class, json!({}))
        .await;
    let claim = env
        .create_claim("web", &env.hostpath_class, Env::selected(&node1))
        .await;
    let (claim_now, pv) = env.bound("web").await;
    let uid = claim.metadata.uid.clone().unwrap();
    let dir = format!("pvc-{uid}_{ns}_web");
    assert_eq!(
        pv.metadata.name.as_deref(),
        Some(format!("pvc-{uid}").as_str())
    );
    // The agent creates the directory as soon as it sees the volume labelled for its node.
    wait_for(&format!("directory {dir}"), TIMEOUT, || async {
        env.hostpath.path().join(&dir).is_dir().then_some(())
    })
    .await;
    assert_eq!(
        pv.metadata.labels.clone().unwrap()["ballast.dev/hostpath-node"],
        provisioner::objects::node_label(&node1),
        "labelled for node 1's agent"
    );
    let spec = pv.spec.clone().unwrap();
    assert_eq!(
        spec.host_path.unwrap().path,
        env.hostpath.path().join(&dir).to_string_lossy()
    );
    assert_eq!(pinned_node(&pv), pinned_to(&node1));
    assert_eq!(spec.claim_ref.unwrap().uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(
        claim_now.status.unwrap().capacity.unwrap()["storage"].0,
        "1Mi",
        "claim status shows the capacity"
    );
    let events = env.events_for("web").await;
    assert!(
        events
            .iter()
            .any(|e| e.ours() && e.type_ == "Normal" && e.reason == "Provisioning"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.ours()
            && e.reason == "ProvisioningSucceeded"
            && e.message.contains(&format!("pvc-{uid}"))),
        "{events:?}"
    );
    let waiting = env.claims().get("data").await.unwrap();
    assert_ne!(
        waiting.status.and_then(|s| s.phase).as_deref(),
        Some("Bound")
    );
    assert!(
        waiting.spec.unwrap().volume_name.is_none(),
        "WaitForFirstConsumer claim left alone"
    );

    // The agent reports its free space in a Lease of its own, which is how the controller
    // places hostPath volumes; the Node is never written.
    let free = env.reported_free(&node1).await;
    assert!(free > 0);
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(env.env.client.clone())
        .get(&node1)
        .await
        .unwrap();
    assert!(
        !node
            .metadata
            .annotations
            .unwrap_or_default()
            .keys()
            .any(|k| k.starts_with("ballast.dev/")),
        "no annotation of ours on the Node"
    );

    // The report is published for the scheduler: a CSIStorageCapacity per class of the
    // provisioner on node 1 (the only node with an agent), in the provisioner's namespace.
    let published = env
        .published_on(&env.hostpath_class, std::slice::from_ref(&node1))
        .await;
    assert!(
        published[&node1].abs_diff(free) * 20 <= free,
        "capacity {} is the reported {free} (within 5%)",
        published[&node1]
    );

    // Immediate binding: the provisioner picks a Ready node whose agent reports enough space;
    // only node 1 runs an agent here.
    let immediate = env
        .create_class(
            "hostpath-now",
            json!({"provisioner": env.hostpath_name, "volumeBindingMode": "Immediate"}),
        )
        .await;
    env.published_on(&immediate, std::slice::from_ref(&node1))
        .await;
    env.create_claim("scratch", &immediate, json!({})).await;
    let (_, scratch_pv) = env.bound("scratch").await;
    assert_eq!(pinned_node(&scratch_pv), pinned_to(&node1));

    // Reclaim policy Delete: deleting the claim removes the directory and the PV.
    env.claims()
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let pv_name = pv.metadata.name.clone().unwrap();
    wait_for("PV and directory removed", TIMEOUT, || async {
        let gone = env.volumes().get_opt(&pv_name).await.unwrap().is_none();
        (gone && !env.hostpath.path().join(&dir).exists()).then_some(())
    })
    .await;

    // A claim selected to a node short of space fails, the event says why, and the selected node
    // is removed so the scheduler can pick another.
    let mut huge = Env::selected(&node1);
    merge(
        &mut huge,
        json!({"spec": {"resources": {"requests": {"storage": "1Ei"}}}}),
    );
    env.create_claim("huge", &env.hostpath_class, huge).await;
    let message = env.our_warning("huge", "ProvisioningFailed").await;
    assert!(
        message.contains(&format!("node \"{node1}\" has only")),
        "{message}"
    );
    assert!(message.contains("but the claim requests 1Ei"), "{message}");
    env.selected_node_removed("huge").await;

    let admin = running.admin_addr;
    let readyz = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200, "ready once the caches have synced");
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name| {
        ballast_runtime::metrics::sample(&metrics, name, &[("class", env.hostpath_class.as_str())])
            .unwrap_or(0.0)
    };
    assert!(
        sample("provisioner_volumes_provisioned_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        sample("provisioner_volumes_deleted_total") >= 1.0,
        "{metrics}"
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    env.finish().await;
}

#[tokio::test]
async fn nfs_claims_get_subdirectories_named_pvs_are_created_and_retain_keeps_data() {
    let env = Env::start().await;
    let ns = env.ns.clone();
    let shutdown = CancellationToken::new();
    let running = env.provisioner("p1", &shutdown).await;

    let claim = env.create_claim("shared", &env.nfs_class, json!({})).await;
    let uid = claim.metadata.uid.clone().unwrap();
    let (_, pv) = env.bound("shared").await;
    let dir = format!("pvc-{uid}_{ns}_shared");
    assert!(
        env.export.path().join(&dir).is_dir(),
        "subdirectory under the export"
    );
    let nfs = pv.spec.clone().unwrap().nfs.expect("nfs source");
    assert_eq!(nfs.server, NFS_SERVER);
    assert_eq!(nfs.path, format!("{NFS_EXPORT}/{dir}"));
    assert!(pv.spec.unwrap().node_affinity.is_none());

    // volumeName of a PV that does not exist: created with that name, pre-bound, and bound.
    let team_data = format!("{ns}-team-data");
    env.create_claim(
        "named",
        &env.nfs_class,
        json!({"spec": {"volumeName": team_data}}),
    )
    .await;
    let (claim, pv) = env.bound("named").await;
    assert_eq!(pv.metadata.name.as_deref(), Some(team_data.as_str()));
    assert_eq!(
        pv.spec.unwrap().claim_ref.unwrap().name.as_deref(),
        Some("named")
    );
    assert_eq!(
        claim.spec.unwrap().volume_name.as_deref(),
        Some(team_data.as_str())
    );
    assert!(
        env.export
            .path()
            .join(format!("{team_data}_{ns}_named"))
            .is_dir()
    );

    // Retain: the claim goes, the PV is Released and the data stays.
    env.create_claim("keep", &env.retain_class, json!({})).await;
    let (keep, keep_pv) = env.bound("keep").await;
    let keep_dir = format!("pvc-{}_{ns}_keep", keep.metadata.uid.unwrap());
    std::fs::write(env.export.path().join(&keep_dir).join("precious"), b"data").unwrap();
    env.claims()
        .delete("keep", &DeleteParams::default())
        .await
        .unwrap();
    let keep_name = keep_pv.metadata.name.unwrap();
    wait_for("retained PV Released", TIMEOUT, || async {
        let pv = env.volumes().get(&keep_name).await.ok()?;
        (pv.status?.phase.as_deref() == Some("Released")).then_some(())
    })
    .await;
    assert!(
        env.export.path().join(&keep_dir).join("precious").is_file(),
        "retained data kept"
    );

    // Delete: PV and subdirectory gone.
    env.claims()
        .delete("shared", &DeleteParams::default())
        .await
        .unwrap();
    let pv_name = format!("pvc-{uid}");
    wait_for("NFS PV and subdirectory removed", TIMEOUT, || async {
        let gone = env.volumes().get_opt(&pv_name).await.unwrap().is_none();
        (gone && !env.export.path().join(&dir).exists()).then_some(())
    })
    .await;

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    env.finish().await;
}

#[tokio::test]
async fn class_mismatch_stays_unbound_with_a_warning_event() {
    let env = Env::start().await;
    let ns = env.ns.clone();
    let shutdown = CancellationToken::new();
    let running = env.provisioner("p1", &shutdown).await;

    let static_local = format!("{ns}-static-local");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": static_local},
        "spec": {
            "storageClassName": env.hostpath_class,
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/mnt/static"},
        },
    }))
    .unwrap();
    env.volumes()
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    env.create_claim(
        "wrong",
        &env.nfs_class,
        json!({"spec": {"volumeName": static_local}}),
    )
    .await;

    let expected = format!(
        "storage class mismatch: claim \"{ns}/wrong\" requests class \"{}\" but \
         PersistentVolume \"{static_local}\" has class \"{}\"; the claim stays unbound until \
         they match",
        env.nfs_class, env.hostpath_class
    );
    assert_eq!(
        env.our_warning("wrong", "StorageClassMismatch").await,
        expected
    );
    let claim = wait_for("binding-problem annotation", TIMEOUT, || async {
        let c = env.claims().get("wrong").await.ok()?;
        c.metadata
            .annotations
            .as_ref()?
            .contains_key("ballast.dev/binding-problem")
            .then_some(c)
    })
    .await;
    assert_eq!(
        claim.metadata.annotations.unwrap()["ballast.dev/binding-problem"],
        expected
    );
    assert_ne!(claim.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let pv = env.volumes().get(&static_local).await.unwrap();
    assert!(
        pv.spec.unwrap().claim_ref.is_none(),
        "the PV was not touched"
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    env.finish().await;
}

#[tokio::test]
async fn crash_halfway_through_fifty_claims_binds_each_once_and_leaves_no_orphan_directory() {
    const CLAIMS: usize = 50;
    // The leader is killed mid-burst (no drain, its Lease not released) and a standby takes over
    // once the Lease expires, while the PV controller keeps binding; volumes named after their
    // claim's uid and created pre-bound keep each claim to one volume.
    let env = Env::start().await;
    let ns = env.ns.clone();
    let started = Instant::now();
    let first = env.provisioner("p1", &CancellationToken::new()).await;
    // p1 leads before the standby starts (which one wins a race for a new Lease is up to the
    // API server's timing).
    let leases: Api<Lease> = env.env.api();
    wait_for("p1 holds the Lease", TIMEOUT, || async {
        let lease = leases.get_opt("provisioner").await.ok()??;
        (lease.spec?.holder_identity? == "p1").then_some(())
    })
    .await;
    // The standby: the same controller, no agent (node 1 has p1's).
    let shutdown = CancellationToken::new();
    let mut standby = env.config("p2", "provisioner");
    standby.agent = None;
    let second = env.start_one(standby, &shutdown).await;
    // the burst goes on while the leader dies
    let burst = async {
        for i in 0..CLAIMS {
            env.create_claim(&format!("c{i:02}"), &env.nfs_class, json!({}))
                .await;
        }
    };
    let bound_count = || async {
        env.claims()
            .list(&ListParams::default())
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                    .count()
            })
            .ok()
    };
    let kill = async {
        wait_for("some claims bound before the crash", TIMEOUT, || async {
            bound_count().await.filter(|&n| n >= 5)
        })
        .await;
        // A crash of the whole process, not a graceful stop: its watches and reconcile loop
        // end wherever they are (between a mkdir and a PV create, or mid-bind) and its Lease
        // stays.
        first.abort();
        let killed = jiff::Timestamp::now();
        let provisioned = env.our_volumes().await.len();
        (killed, provisioned, bound_count().await.unwrap_or(0))
    };
    let ((), (killed, provisioned_at_crash, bound_at_crash)) = tokio::join!(burst, kill);

    // What a crash between mkdir and PV create leaves for a claim deleted while we were down.
    let stale = format!("pvc-0badc0de-0000-4000-8000-000000000000_{ns}_deleted-meanwhile");
    std::fs::create_dir(env.export.path().join(&stale)).unwrap();
    // Left there a while ago: fresh unknown directories are given a minute before removal.
    std::fs::File::open(env.export.path().join(&stale))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
        .unwrap();

    assert!(
        provisioned_at_crash < CLAIMS,
        "the leader was killed mid-burst ({provisioned_at_crash} volumes made)"
    );
    // Never two leaders: the standby's first volume comes after the leader's last one — after
    // the kill, once the Lease has expired (or earlier only if the leader had already stepped
    // down, its renewals starved on a loaded machine).
    let provisioned_by = |events: &[Event], who: &str| -> Vec<jiff::Timestamp> {
        events
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("ProvisioningSucceeded")
                    && e.reporting_instance.as_deref() == Some(who)
            })
            .filter_map(|e| e.event_time.as_ref().map(|t| t.0))
            .collect()
    };
    let by_standby = wait_for("the standby's first volume", TIMEOUT, || async {
        provisioned_by(&env.events().await, "p2").into_iter().min()
    })
    .await;
    let took_over = killed.duration_until(by_standby);
    eprintln!(
        "the standby provisioned its first volume {took_over:?} after the leader was killed (Lease 2s)"
    );
    let by_leader = provisioned_by(&env.events().await, "p1").into_iter().max();
    assert!(
        by_leader.is_some_and(|last| last < by_standby),
        "the leader's last volume ({by_leader:?}) came before the standby's first ({by_standby}); \
         {provisioned_at_crash} volumes at the crash"
    );
    for i in 0..CLAIMS {
        env.bound(&format!("c{i:02}")).await;
    }
    let all_bound = started.elapsed();
    // Let the new leader finish a sweep after the last bind before looking at the directories.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let claims = env
        .claims()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let volumes = env.our_volumes().await;
    assert_eq!(claims.len(), CLAIMS);
    assert_eq!(volumes.len(), CLAIMS, "one PV per claim, no duplicate");
    let mut expected_dirs = BTreeSet::new();
    for c in &claims {
        let uid = c.metadata.uid.clone().unwrap();
        let name = c.metadata.name.clone().unwrap();
        let volume = c.spec.as_ref().unwrap().volume_name.clone().unwrap();
        assert_eq!(
            volume,
            format!("pvc-{uid}"),
            "claim {name} bound to its own volume"
        );
        let pv = volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
            .unwrap();
        let claim_ref = pv.spec.as_ref().unwrap().claim_ref.clone().unwrap();
        assert_eq!(
            claim_ref.uid.as_deref(),
            Some(uid.as_str()),
            "PV {volume} bound to {name} once"
        );
        expected_dirs.insert(format!("{volume}_{ns}_{name}"));
    }
    assert_eq!(
        dirs(env.export.path()),
        expected_dirs,
        "exactly one directory per volume, no orphan"
    );
    eprintln!(
        "claims bound at the crash: {bound_at_crash}/{CLAIMS} ({provisioned_at_crash} volumes); \
         all bound after {all_bound:?}"
    );
    env.report_other_warnings().await;

    shutdown.cancel();
    second.wait().await.expect("clean shutdown");
    env.finish().await;
}

#[tokio::test]
async fn hostpath_on_a_node_the_control_service_reports_notready_is_rescheduled() {
    use ballast_control::{InterceptionState, MemoryState, NodeHealth, NodeHealthSnapshot};
    let env = Env::start().await;
    let (node1, node2) = (env.node(1), env.node(2));
    let shutdown = CancellationToken::new();
    // The control service says node 1 is NotReady, although its Node object is Ready.
    let state = std::sync::Arc::new(MemoryState::new(InterceptionState::default()));
    let health = |name: &str, ready: bool| NodeHealth {
        name: name.into(),
        ready,
        reason: if ready {
            "KubeletReady"
        } else {
            "NodeStatusUnknown"
        }
        .into(),
        ..Default::default()
    };
    state.set_nodes(NodeHealthSnapshot::synced([
        health(&node1, false),
        health(&node2, true),
    ]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(ballast_control::serve(
        listener,
        state.clone(),
        ballast_control::ServerOptions::local(),
        shutdown.clone(),
    ));
    let running = env.provisioner_with("p1", &shutdown, Some(endpoint)).await;

    env.create_claim("db", &env.hostpath_class, Env::selected(&node1))
        .await;
    let message = env.our_warning("db", "ProvisioningFailed").await;
    assert_eq!(
        message,
        format!(
            "cannot provision on the selected node: node \"{node1}\" is NotReady; hostPath \
             volumes are never placed on a NotReady node; {RESCHEDULE}"
        )
    );
    assert!(
        dirs(env.hostpath.path()).is_empty(),
        "no directory on the NotReady node"
    );
    env.selected_node_removed("db").await;
    // Nor does the scheduler hear of node 1's space while the control service says NotReady,
    // although its agent reports.
    env.reported_free(&node1).await;
    // Time for the controller to take the report in (a sync follows every report write).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        env.published().await.is_empty(),
        "no capacity published for a NotReady node"
    );

    // The node recovers (the control service's watch brings the news); playing the scheduler,
    // select it again whenever the selection is gone, until the claim is served.
    state.upsert_node(health(&node1, true));
    let patch = Env::selected(&node1);
    wait_for("claim db Bound on the recovered node", TIMEOUT, || async {
        let c = env.claims().get("db").await.ok()?;
        if c.status.as_ref()?.phase.as_deref() == Some("Bound") {
            return Some(());
        }
        let selected = c
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("volume.kubernetes.io/selected-node");
        if !selected {
            env.claims()
                .patch(
                    "db",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .ok()?;
        }
        None
    })
    .await;
    let (_, pv) = env.bound("db").await;
    assert_eq!(pinned_node(&pv), pinned_to(&node1));
    env.published_on(&env.hostpath_class, std::slice::from_ref(&node1))
        .await;

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    server.await.unwrap().expect("control server stops cleanly");
    env.finish().await;
}

#[tokio::test]
async fn nfs_deployment_and_hostpath_daemonset_side_by_side_each_serve_their_own_claims() {
    let env = Env::start().await;
    let node1 = env.node(1);
    let shutdown = CancellationToken::new();
    // As packaged: an NFS Deployment (no node name) and a hostPath DaemonSet (no NFS), each
    // electing its own leader.
    let mut nfs_only = env.config("nfs-0", "provisioner-nfs");
    nfs_only.agent = None;
    nfs_only.controller.as_mut().unwrap().hostpath = None;
    let mut hostpath_only = env.config("hostpath-node-1", "provisioner-hostpath");
    hostpath_only.controller.as_mut().unwrap().nfs = None;
    let nfs = env.start_one(nfs_only, &shutdown).await;
    let hostpath = env.start_one(hostpath_only, &shutdown).await;

    // The hostPath agent reports node 1's free space first, as a running DaemonSet pod has by
    // the time a consumer lands there; a claim selected onto a node with no report yet is
    // (rightly) rescheduled with a ProvisioningFailed, which this scenario is not about.
    env.reported_free(&node1).await;
    env.create_claim("files", &env.nfs_class, json!({})).await;
    env.create_claim("cache", &env.hostpath_class, Env::selected(&node1))
        .await;
    let (_, files_pv) = env.bound("files").await;
    let (_, cache_pv) = env.bound("cache").await;
    assert!(files_pv.spec.unwrap().nfs.is_some());
    assert!(cache_pv.spec.unwrap().host_path.is_some());
    for claim in ["files", "cache"] {
        let events = env.events_for(claim).await;
        let warnings: Vec<_> = events.iter().filter(|e| e.type_ == "Warning").collect();
        assert!(warnings.is_empty(), "{claim}: {warnings:?}");
        let succeeded = events
            .iter()
            .filter(|e| e.ours() && e.reason == "ProvisioningSucceeded")
            .count();
        assert_eq!(succeeded, 1, "{claim} provisioned once: {events:?}");
    }

    shutdown.cancel();
    nfs.wait().await.expect("clean shutdown");
    hostpath.wait().await.expect("clean shutdown");
    env.finish().await;
}

#[tokio::test]
async fn two_controllers_racing_create_each_volume_once() {
    const STATIC: usize = 15;
    const CLAIMS: usize = 25;
    let env = Env::start().await;
    let (ns, node1) = (env.ns.clone(), env.node(1));
    let static_prefix = format!("{ns}-static-");
    // Existing volumes an administrator created: the PV controller binds claims to them first.
    for i in 0..STATIC {
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("{static_prefix}{i:02}")},
            "spec": {
                "storageClassName": env.nfs_class,
                "capacity": {"storage": "1Mi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "nfs": {"server": NFS_SERVER, "path": format!("/srv/static/{i}")},
            },
        }))
        .unwrap();
        env.volumes()
            .create(&PostParams::default(), &pv)
            .await
            .unwrap();
    }
    wait_for("static volumes Available", TIMEOUT, || async {
        let ours = env.our_volumes().await;
        (ours.len() == STATIC
            && ours
                .iter()
                .all(|v| v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available")))
        .then_some(())
    })
    .await;
    // Two controllers that both believe they lead (different Leases): both provision every
    // claim handed over; deterministic names and AlreadyExists keep each volume single.
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    for (identity, lease) in [("a", "race-a"), ("b", "race-b")] {
        let mut config = env.config(identity, lease);
        config.agent = None;
        running.push(env.start_one(config, &shutdown).await);
    }
    for i in 0..CLAIMS {
        env.create_claim(&format!("c{i:02}"), &env.nfs_class, json!({}))
            .await;
    }
    for i in 0..CLAIMS {
        env.bound(&format!("c{i:02}")).await;
    }
    let claims = env
        .claims()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let volumes = env.our_volumes().await;
    let mut used = BTreeSet::new();
    for c in &claims {
        let volume = c.spec.as_ref().unwrap().volume_name.clone().unwrap();
        assert!(
            used.insert(volume.clone()),
            "volume {volume} bound to two claims"
        );
        let pv = volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
            .unwrap();
        let r = pv.spec.as_ref().unwrap().claim_ref.clone().unwrap();
        assert_eq!(r.uid, c.metadata.uid, "{volume} names its claim");
    }
    let statics_bound = used
        .iter()
        .filter(|v| v.starts_with(&static_prefix))
        .count();
    eprintln!("claims bound to existing volumes: {statics_bound}/{STATIC}");
    assert!(
        statics_bound > 0,
        "existing volumes are preferred to new ones"
    );
    let provisioned: Vec<&PersistentVolume> = volumes
        .iter()
        .filter(|v| {
            !v.metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with(&static_prefix)
        })
        .collect();
    assert_eq!(
        provisioned.len(),
        CLAIMS - statics_bound,
        "one volume per claim handed over, none twice"
    );
    for c in &claims {
        let name = c.metadata.name.clone().unwrap();
        let volume = c.spec.as_ref().unwrap().volume_name.clone().unwrap();
        let succeeded = env
            .events_for(&name)
            .await
            .into_iter()
            .filter(|e| e.ours() && e.reason == "ProvisioningSucceeded")
            .count();
        let expected = usize::from(!volume.starts_with(&static_prefix));
        assert_eq!(
            succeeded, expected,
            "{name}: ProvisioningSucceeded once per created volume"
        );
    }
    // Provisioned volumes each have their directory, and nothing else is left in the export.
    let expected: BTreeSet<String> = provisioned
        .iter()
        .filter_map(|v| {
            v.metadata
                .annotations
                .as_ref()?
                .get("ballast.dev/directory")
                .cloned()
        })
        .collect();
    assert_eq!(dirs(env.export.path()), expected);

    // hostPath too: with node 1's agent reporting, both controllers place and create each
    // volume once, on the same node.
    let mut agent = env.config("agent-node-1", "unused");
    agent.controller = None;
    running.push(env.start_one(agent, &shutdown).await);
    env.reported_free(&node1).await;
    for i in 0..5 {
        env.create_claim(&format!("h{i}"), &env.hostpath_class, Env::selected(&node1))
            .await;
    }
    for i in 0..5 {
        let name = format!("h{i}");
        let (claim, pv) = env.bound(&name).await;
        assert_eq!(
            pv.metadata.name,
            Some(format!("pvc-{}", claim.metadata.uid.unwrap()))
        );
        let succeeded = env
            .events_for(&name)
            .await
            .into_iter()
            .filter(|e| e.ours() && e.reason == "ProvisioningSucceeded")
            .count();
        assert_eq!(succeeded, 1, "{name}: one volume created");
    }
    let hostpath_volumes = env
        .our_volumes()
        .await
        .into_iter()
        .filter(|v| v.spec.as_ref().is_some_and(|s| s.host_path.is_some()))
        .count();
    assert_eq!(hostpath_volumes, 5);
    env.report_other_warnings().await;

    shutdown.cancel();
    for r in running {
        r.wait().await.expect("clean shutdown");
    }
    env.finish().await;
}

#[tokio::test]
async fn fifty_claims_at_once_are_provisioned_once_each_and_bound_by_the_pv_controller() {
    const CLAIMS: usize = 50;
    let env = Env::start().await;
    // A class of its own, so the metric counts this scenario's volumes only.
    let class = env
        .create_class(
            "nfs-fifty",
            json!({"provisioner": env.nfs_name, "reclaimPolicy": "Delete",
                   "volumeBindingMode": "Immediate"}),
        )
        .await;
    let shutdown = CancellationToken::new();
    // Only the rights the manifests grant (the NFS Deployment's): no write to a claim's status
    // is even possible.
    let mut config = env.config("p1", "provisioner");
    config.agent = None;
    config.controller.as_mut().unwrap().hostpath = None;
    config.kube = KubeAccess::Client(env.controller_client().await);
    let running = env.start_one(config, &shutdown).await;

    let names: Vec<String> = (0..CLAIMS).map(|i| format!("c{i:02}")).collect();
    futures::future::join_all(
        names
            .iter()
            .map(|name| env.create_claim(name, &class, json!({}))),
    )
    .await;
    for i in 0..CLAIMS {
        let (claim, pv) = env.bound(&format!("c{i:02}")).await;
        let a = claim.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            a.get("pv.kubernetes.io/bind-completed").map(String::as_str),
            Some("yes"),
            "bound by the PV controller"
        );
        assert_eq!(
            a.get("pv.kubernetes.io/bound-by-controller")
                .map(String::as_str),
            Some("yes"),
            "volumeName set by the PV controller"
        );
        assert_eq!(
            pv.metadata.annotations.unwrap()["pv.kubernetes.io/provisioned-by"],
            env.nfs_name
        );
        assert_eq!(
            pv.spec.unwrap().claim_ref.unwrap().uid,
            claim.metadata.uid,
            "created pre-bound"
        );
    }
    let events = env.events().await;
    let ours: Vec<&Event> = events
        .iter()
        .filter(|e| reporter(e) == provisioner::events::COMPONENT)
        .collect();
    let count = |reason: &str| {
        ours.iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.count.unwrap_or(1))
            .sum::<i32>()
    };
    assert_eq!(count("ProvisioningSucceeded"), CLAIMS as i32);
    assert_eq!(
        count("ProvisioningFailed"),
        0,
        "no failure on healthy claims"
    );
    let succeeded_claims: BTreeSet<&str> = ours
        .iter()
        .filter(|e| e.reason.as_deref() == Some("ProvisioningSucceeded"))
        .filter_map(|e| e.involved_object.name.as_deref())
        .collect();
    assert_eq!(succeeded_claims.len(), CLAIMS, "one per claim");
    assert_eq!(env.our_volumes().await.len(), CLAIMS);
    let admin = running.admin_addr;
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        ballast_runtime::metrics::sample(
            &metrics,
            "provisioner_volumes_provisioned_total",
            &[("class", class.as_str())]
        ),
        Some(CLAIMS as f64),
        "{metrics}"
    );
    env.report_other_warnings().await;

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    env.finish().await;
}

#[tokio::test]
async fn hostpath_claim_on_a_node_without_an_agent_is_rescheduled_to_one_with_an_agent() {
    let env = Env::start_with(
        SimConfig::default()
            .nodes(2)
            .pv_binder(true)
            .scheduler(true)
            .kubelet(true),
    )
    .await;
    let (ns, node1, node2) = (env.ns.clone(), env.node(1), env.node(2));
    let shutdown = CancellationToken::new();
    // The agent runs on node 1 only; node 2 has none.
    let running = env.provisioner("p1", &shutdown).await;
    // The scheduler had picked node 2 for the claim's pod.
    env.create_claim("logs", &env.hostpath_class, Env::selected(&node2))
        .await;
    let message = env.our_warning("logs", "ProvisioningFailed").await;
    assert_eq!(
        message,
        format!(
            "cannot provision on the selected node: node \"{node2}\" has no provisioner agent \
             reporting free space (is the hostpath DaemonSet running there?); {RESCHEDULE}"
        )
    );
    env.selected_node_removed("logs").await;
    assert!(
        env.claims()
            .get("logs")
            .await
            .unwrap()
            .spec
            .unwrap()
            .volume_name
            .is_none()
    );

    // The scheduler picks again for the pod (which asks for node 1): provisioned and bound there.
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "writer", "namespace": ns},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node1},
                 "containers": [{"name": "app", "image": "registry.example/app:1"}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "logs"}}]}}))
    .unwrap();
    env.env
        .api::<k8s_openapi::api::core::v1::Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let (claim, pv) = env.bound("logs").await;
    assert_eq!(
        claim.metadata.annotations.unwrap()["volume.kubernetes.io/selected-node"],
        node1
    );
    assert_eq!(pinned_node(&pv), pinned_to(&node1));
    let events = env.events_for("logs").await;
    assert!(
        events.iter().any(|e| e.ours()
            && e.reason == "ProvisioningSucceeded"
            && e.message.contains(pv.metadata.name.as_deref().unwrap())),
        "{events:?}"
    );

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    env.finish().await;
}

#[tokio::test]
async fn a_volume_shown_released_while_its_claim_holds_it_keeps_its_data() {
    let env = Env::start().await;
    let ns = env.ns.clone();
    let shutdown = CancellationToken::new();
    let running = env.provisioner("p1", &shutdown).await;
    let claim = env.create_claim("held", &env.nfs_class, json!({})).await;
    let (_, pv) = env.bound("held").await;
    let dir = format!("pvc-{}_{ns}_held", claim.metadata.uid.unwrap());
    std::fs::write(env.export.path().join(&dir).join("precious"), b"data").unwrap();

    // Someone marks the volume Released although its claim is still bound to it.
    let name = pv.metadata.name.clone().unwrap();
    let mut released = env.volumes().get(&name).await.unwrap();
    released.status.as_mut().unwrap().phase = Some("Released".into());
    env.volumes()
        .replace_status(&name, &PostParams::default(), &released)
        .await
        .unwrap();
    // The PV controller puts it right; the provisioner, which saw Released, deleted nothing.
    wait_for("the volume Bound again", TIMEOUT, || async {
        let pv = env.volumes().get(&name).await.ok()?;
        (pv.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
    assert!(
        env.export.path().join(&dir).join("precious").is_file(),
        "data of a volume its claim holds is never removed"
    );
    assert!(env.volumes().get_opt(&name).await.unwrap().is_some());

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    env.finish().await;
}

#[tokio::test]
async fn an_agent_never_removes_a_directory_whose_volume_or_claim_still_exists() {
    let env = Env::start().await;
    let (ns, node1) = (env.ns.clone(), env.node(1));
    let shutdown = CancellationToken::new();
    // As packaged: the controller and node 1's agent in separate processes, each with only the
    // rights its ServiceAccount gets (the agent cannot write volumes, claims or Nodes).
    let mut controller = env.config("controller-0", "provisioner");
    controller.agent = None;
    controller.controller.as_mut().unwrap().nfs = None;
    controller.kube = KubeAccess::Client(env.hostpath_controller_client().await);
    let mut agent = env.config("agent-node-1", "unused");
    agent.controller = None;
    agent.kube = KubeAccess::Client(
        env.client_with("provisioner-agent", provisioner::AGENT_RBAC)
            .await,
    );
    let controller = env.start_one(controller, &shutdown).await;
    let agent = env.start_one(agent, &shutdown).await;
    env.reported_free(&node1).await;

    let claim = env
        .create_claim("kept", &env.hostpath_class, Env::selected(&node1))
        .await;
    let (_, pv) = env.bound("kept").await;
    let pv_name = pv.metadata.name.clone().unwrap();
    let dir = env
        .hostpath
        .path()
        .join(format!("pvc-{}_{ns}_kept", claim.metadata.uid.unwrap()));
    wait_for("the agent creates the directory", TIMEOUT, || async {
        dir.is_dir().then_some(())
    })
    .await;
    std::fs::write(dir.join("precious"), b"data").unwrap();
    let survives = |why: &'static str| {
        let file = dir.join("precious");
        async move {
            // Two resyncs of the agent (2s each) and the events before them.
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(file.is_file(), "{why}: the data is still there");
        }
    };
    let patch = |labels: serde_json::Value| {
        let volumes = env.volumes();
        let name = pv_name.clone();
        async move {
            volumes
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(json!({"metadata": {"labels": labels}})),
                )
                .await
                .unwrap();
        }
    };

    // The volume leaves the agent's watch (its node label removed): gone from the agent's
    // cache, but the API still has it. The controller labels it again (as it labels volumes
    // made before agents watched by label), and the agent sees it back.
    patch(json!({"ballast.dev/hostpath-node": null})).await;
    let label = provisioner::objects::node_label(&node1);
    wait_for(
        "the controller labels the volume again",
        TIMEOUT,
        || async {
            let pv = env.volumes().get(&pv_name).await.ok()?;
            (pv.metadata.labels?.get("ballast.dev/hostpath-node")? == &label).then_some(())
        },
    )
    .await;
    survives("the volume left the agent's cache but exists").await;

    // The volume really deleted (an administrator forcing it past its finalizer) while the
    // claim still exists.
    env.volumes()
        .delete(&pv_name, &DeleteParams::default())
        .await
        .unwrap();
    env.volumes()
        .patch(
            &pv_name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    wait_for("the volume gone", TIMEOUT, || async {
        env.volumes()
            .get_opt(&pv_name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    survives("the claim still exists").await;

    // Once the claim is gone too (reclaim policy Delete), the agent removes the directory.
    env.claims()
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the directory removed", TIMEOUT, || async {
        let gone = !dir.exists();
        let volume_gone = env.volumes().get_opt(&pv_name).await.ok()?.is_none();
        (gone && volume_gone).then_some(())
    })
    .await;

    shutdown.cancel();
    controller.wait().await.expect("clean shutdown");
    agent.wait().await.expect("clean shutdown");
    env.finish().await;
}

/// A standby replica has warm caches and reports ready, but writes nothing while another holds
/// the Lease; when the leader stops, its Lease is released once its work has ended and the
/// standby takes over. The leader serves hostPath only, so a pending NFS claim shows which
/// replica acts.
#[tokio::test]
async fn a_standby_controller_is_ready_but_writes_only_once_the_leader_has_stopped() {
    let env = Env::start().await;
    let leases: Api<Lease> = env.env.api();
    let holder = || async {
        leases
            .get_opt("provisioner")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };

    let leader_stop = CancellationToken::new();
    let mut config = env.config("p1", "provisioner");
    if let Some(c) = config.controller.as_mut() {
        c.nfs = None;
    }
    let leader = env.start_one(config, &leader_stop).await;
    wait_for("p1 holds the Lease", TIMEOUT, || async {
        (holder().await.as_deref() == Some("p1")).then_some(())
    })
    .await;

    let shutdown = CancellationToken::new();
    let mut config = env.config("p2", "provisioner");
    config.agent = None;
    let standby = env.start_one(config, &shutdown).await;
    let admin = standby.admin_addr;
    wait_for("the standby ready", TIMEOUT, || async {
        let r = reqwest::get(format!("http://{admin}/readyz")).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    env.create_claim("shared", &env.nfs_class, json!({})).await;
    // Longer than a resync (2s): the standby has passed over the claim at least once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let claim = env.claims().get("shared").await.unwrap();
    assert_eq!(
        claim.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "nobody provisions while the leader does not serve NFS"
    );
    assert!(
        env.our_volumes().await.is_empty(),
        "the standby wrote no volume"
    );
    assert_eq!(holder().await.as_deref(), Some("p1"));

    leader_stop.cancel();
    leader.wait().await.expect("the leader stops cleanly");
    assert_ne!(
        holder().await.as_deref(),
        Some("p1"),
        "the Lease is released when the leader's wait returns"
    );
    env.bound("shared").await;
    assert_eq!(holder().await.as_deref(), Some("p2"));

    shutdown.cancel();
    standby.wait().await.expect("the standby stops cleanly");
    env.finish().await;
}

/// The issue this answers: the scheduler knows nothing of our agents, so it kept choosing an
/// agentless node and the provisioner kept removing `selected-node`. With the CSIDriver and the
/// capacity objects it never chooses one. Among five nodes, three without an agent; on a real
/// control plane the scheduler picks at random among equal nodes, so eight pods leave a
/// capacity check that does not work no more than a (2/5)^8 chance to pass.
#[tokio::test]
async fn a_pod_whose_candidate_nodes_include_agentless_ones_is_scheduled_to_a_node_with_an_agent() {
    const PODS: usize = 8;
    let env = Env::start_with(
        SimConfig::default()
            .nodes(5)
            .pv_binder(true)
            .scheduler(true)
            .kubelet(true),
    )
    .await;
    let (node1, node2) = (env.node(1), env.node(2));
    let shutdown = CancellationToken::new();
    // The controller with node 1's agent, and node 2's agent on its own; nodes 3 to 5 have none.
    let running = env.provisioner("p1", &shutdown).await;
    let node2_base = tempfile::tempdir().unwrap();
    let agent2 = env
        .start_one(env.agent_config(2, node2_base.path()), &shutdown)
        .await;
    let with_agents = [node1.clone(), node2.clone()];
    let published = env.published_on(&env.hostpath_class, &with_agents).await;
    for node in &with_agents {
        let reported = env.reported_free(node).await;
        let capacity = published[node];
        assert!(
            capacity.abs_diff(reported) * 20 <= reported,
            "{node}: capacity {capacity} is the reported {reported} (within 5%)"
        );
    }

    for i in 0..PODS {
        env.pod_with_claim(
            &format!("app-{i}"),
            &format!("data-{i}"),
            &env.hostpath_class,
        )
        .await;
    }
    let mut placed: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..PODS {
        let (claim, pv) = env.bound(&format!("data-{i}")).await;
        let node = env.scheduled(&format!("app-{i}")).await;
        assert!(
            with_agents.contains(&node),
            "pod app-{i} went to {node}, which has no agent"
        );
        assert_eq!(pinned_node(&pv), pinned_to(&node), "data-{i}");
        let base = if node == node1 {
            env.hostpath.path()
        } else {
            node2_base.path()
        };
        let dir = format!("pvc-{}_{}_data-{i}", claim.metadata.uid.unwrap(), env.ns);
        wait_for(
            &format!("{node}'s agent creates {dir}"),
            TIMEOUT,
            || async { base.join(&dir).is_dir().then_some(()) },
        )
        .await;
        *placed.entry(node).or_default() += 1;
    }
    for i in 0..PODS {
        let failures = env.failures(&format!("data-{i}")).await;
        assert!(
            failures.is_empty(),
            "the scheduler chose a node the provisioner refused for data-{i}: {failures:?}"
        );
    }
    eprintln!("pods per node with an agent: {placed:?}");
    env.report_other_warnings().await;

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    agent2.wait().await.expect("clean shutdown");
    env.finish().await;
}

/// The issue this answers: a stopped agent was trusted for ten minutes, and a volume was placed
/// on its node with no directory made. Its report now expires (here after 6s instead of the 40s
/// of a kubelet's node Lease, to keep the scenario short), and then its node gets no new volume:
/// the scheduler no longer chooses it (WaitForFirstConsumer), nor does the provisioner
/// (Immediate binding).
#[tokio::test]
async fn an_agent_stopped_for_longer_than_its_report_lifetime_gets_no_new_volumes() {
    const LIFETIME: Duration = Duration::from_secs(6);
    const PODS: usize = 6;
    let env = Env::start_with(
        SimConfig::default()
            .nodes(2)
            .pv_binder(true)
            .scheduler(true)
            .kubelet(true),
    )
    .await;
    let (node1, node2) = (env.node(1), env.node(2));
    let options = Options {
        report_lifetime: LIFETIME,
        ..env.options()
    };
    let shutdown = CancellationToken::new();
    let running = env
        .start_with_options(env.config("p1", "provisioner"), options.clone(), &shutdown)
        .await;
    let agent2_stop = CancellationToken::new();
    let node2_base = tempfile::tempdir().unwrap();
    let agent2 = env
        .start_with_options(
            env.agent_config(2, node2_base.path()),
            options.clone(),
            &agent2_stop,
        )
        .await;
    env.published_on(&env.hostpath_class, &[node1.clone(), node2.clone()])
        .await;
    let leases: Api<Lease> = env.env.api();
    let report = provisioner::capacity::name(&node2);
    let duration = leases
        .get(&report)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.lease_duration_seconds);
    assert_eq!(duration, Some(6), "the report says how long it is valid");

    // Node 2's agent stops (its pod gone, its node otherwise fine): nothing is written, the
    // report expires, and its capacity is withdrawn.
    agent2_stop.cancel();
    agent2.wait().await.expect("the agent stops cleanly");
    let stopped = Instant::now();
    env.published_on(&env.hostpath_class, std::slice::from_ref(&node1))
        .await;
    let withdrawn = stopped.elapsed();
    eprintln!("capacity withdrawn {withdrawn:?} after the agent stopped");
    assert!(
        withdrawn <= LIFETIME + Duration::from_secs(5),
        "withdrawn when the report expires, not at some later pass: {withdrawn:?}"
    );
    assert!(
        leases.get_opt(&report).await.unwrap().is_some(),
        "the report is still there, expired"
    );

    // WaitForFirstConsumer: every pod goes to node 1.
    for i in 0..PODS {
        env.pod_with_claim(
            &format!("app-{i}"),
            &format!("data-{i}"),
            &env.hostpath_class,
        )
        .await;
    }
    for i in 0..PODS {
        let (_, pv) = env.bound(&format!("data-{i}")).await;
        assert_eq!(env.scheduled(&format!("app-{i}")).await, node1, "app-{i}");
        assert_eq!(pinned_node(&pv), pinned_to(&node1), "data-{i}");
        let failures = env.failures(&format!("data-{i}")).await;
        assert!(failures.is_empty(), "data-{i}: {failures:?}");
    }

    // Immediate binding: the provisioner places the claims itself, on node 1 only. Claims are
    // made until three of them would have gone to node 2 were its agent alive (placement hashes
    // the claim's uid), so that this part can fail.
    let immediate = env
        .create_class(
            "hostpath-now",
            json!({"provisioner": env.hostpath_name, "volumeBindingMode": "Immediate"}),
        )
        .await;
    let alive: provisioner::plan::Nodes = [&node1, &node2]
        .into_iter()
        .map(|n| {
            let facts = provisioner::plan::NodeFacts {
                ready: true,
                free_bytes: Some(u64::MAX),
            };
            (n.clone(), facts)
        })
        .collect();
    let mut would_have_gone_to_node2 = 0;
    let mut claims = Vec::new();
    while would_have_gone_to_node2 < 3 {
        assert!(claims.len() < 40, "placement never prefers node 2");
        let name = format!("now-{}", claims.len());
        let claim = env.create_claim(&name, &immediate, json!({})).await;
        // Placement reads the claim as the controller caches it.
        let cached: provisioner::objects::CachedClaim =
            serde_json::from_value(serde_json::to_value(&claim).unwrap()).unwrap();
        let choice = provisioner::plan::placement::place(&cached, &alive, 1 << 20);
        if choice.as_deref() == Ok(node2.as_str()) {
            would_have_gone_to_node2 += 1;
        }
        claims.push(name);
    }
    for name in &claims {
        let (_, pv) = env.bound(name).await;
        assert_eq!(pinned_node(&pv), pinned_to(&node1), "{name}");
        let failures = env.failures(name).await;
        assert!(failures.is_empty(), "{name}: {failures:?}");
    }

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    env.finish().await;
}

/// Fault: etcd stalled (SIGSTOP) for 20s in the middle of a burst of 500 claims, then resumed
/// (SIGCONT). Every claim ends Bound to a volume of its own, one directory each, none left over;
/// no volume is made twice although writes hung and the controller lost its Lease meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_stalled_for_20s_mid_burst_of_500_claims_leaves_each_bound_once_and_no_orphan() {
    use futures::StreamExt;
    use kube_sim::control_plane::Component;
    use rustix::process::Signal;
    const CLAIMS: usize = 500;
    const STALL: Duration = Duration::from_secs(20);
    let Some(env) = Env::start_private(SimConfig::default().nodes(2).pv_binder(true)).await else {
        return;
    };
    let ns = env.ns.clone();
    let shutdown = CancellationToken::new();
    let mut config = env.config("p1", "provisioner");
    config.agent = None;
    config.controller.as_mut().unwrap().hostpath = None;
    let running = env.start_one(config, &shutdown).await;
    let started = Instant::now();

    // The burst: 20 creates at a time, each retried until the API server takes it (a user's
    // script would); one that timed out but was stored answers AlreadyExists.
    let created = std::sync::atomic::AtomicUsize::new(0);
    let create = |i: usize| {
        let (env, created) = (&env, &created);
        async move {
            let claim: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": {"name": format!("c{i:03}"), "namespace": env.ns},
                "spec": {"storageClassName": env.nfs_class, "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Mi"}}},
            }))
            .unwrap();
            loop {
                match env.claims().create(&PostParams::default(), &claim).await {
                    Ok(_) => break,
                    Err(kube::Error::Api(s)) if s.code == 409 => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
            created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    let burst = futures::stream::iter(0..CLAIMS)
        .map(create)
        .buffer_unordered(20)
        .collect::<Vec<()>>();
    let stall = async {
        wait_for("a fifth of the burst created", TIMEOUT, || async {
            (created.load(std::sync::atomic::Ordering::Relaxed) >= CLAIMS / 5).then_some(())
        })
        .await;
        let cp = env
            .env
            .control_plane_ref()
            .expect("a control plane of its own");
        assert!(cp.signal(Component::Etcd, Signal::STOP), "etcd stalled");
        let stalled = Instant::now();
        // the fault is real: a write waits on etcd
        let write = tokio::time::timeout(
            Duration::from_secs(2),
            env.claims().create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "probe", "namespace": ns},
                    "spec": {"storageClassName": "none", "accessModes": ["ReadWriteOnce"],
                             "resources": {"requests": {"storage": "1Mi"}}},
                }))
                .unwrap(),
            ),
        )
        .await;
        assert!(
            write.is_err(),
            "a write waited on the stalled etcd: {write:?}"
        );
        let at_stall = created.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(STALL.saturating_sub(stalled.elapsed())).await;
        let cp = env
            .env
            .control_plane_ref()
            .expect("a control plane of its own");
        assert!(cp.signal(Component::Etcd, Signal::CONT), "etcd resumed");
        at_stall
    };
    let (_, at_stall) = tokio::join!(burst, stall);
    let resumed = Instant::now();
    // the probe may or may not have been stored; it is no claim of the burst
    let _ = env
        .claims()
        .delete("probe", &kube::api::DeleteParams::default())
        .await;

    let bound = |c: &PersistentVolumeClaim| {
        c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    };
    wait_for("every claim Bound", Duration::from_secs(300), || async {
        let list = env.claims().list(&ListParams::default()).await.ok()?;
        (list.items.iter().filter(|c| bound(c)).count() == CLAIMS).then_some(())
    })
    .await;
    eprintln!(
        "{at_stall} of {CLAIMS} claims created when etcd stalled for {STALL:?}; all bound \
         {:?} after it resumed ({:?} in all)",
        resumed.elapsed(),
        started.elapsed()
    );
    // a last sweep after the last bind before counting directories
    tokio::time::sleep(Duration::from_secs(3)).await;
    let claims = env
        .claims()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let volumes = env.our_volumes().await;
    assert_eq!(claims.len(), CLAIMS);
    assert_eq!(volumes.len(), CLAIMS, "one PV per claim, no duplicate");
    let mut expected_dirs = BTreeSet::new();
    for c in &claims {
        let uid = c.metadata.uid.clone().unwrap();
        let name = c.metadata.name.clone().unwrap();
        let volume = c.spec.as_ref().unwrap().volume_name.clone().unwrap();
        assert_eq!(
            volume,
            format!("pvc-{uid}"),
            "claim {name} bound to its own volume"
        );
        expected_dirs.insert(format!("{volume}_{ns}_{name}"));
    }
    assert_eq!(
        dirs(env.export.path()),
        expected_dirs,
        "exactly one directory per volume, no orphan"
    );
    let events = env.events().await;
    let succeeded: i32 = events
        .iter()
        .filter(|e| {
            reporter(e) == provisioner::events::COMPONENT
                && e.reason.as_deref() == Some("ProvisioningSucceeded")
        })
        .map(|e| e.count.unwrap_or(1))
        .sum();
    assert_eq!(succeeded, CLAIMS as i32, "each claim provisioned once");

    shutdown.cancel();
    running.wait().await.expect("clean shutdown");
    env.finish().await;
}
