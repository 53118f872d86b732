//! Steps 1 and 2: claims bound and timed by pvc-timing and the provisioner, then read back
//! with kubectl-pvc (`inspect`, `timing`).

use super::*;

impl Tour<'_, '_> {
    /// Step 1.
    pub(super) async fn claims_step(&mut self) -> Result<Vec<ClaimReport>> {
        self.n.step(
            1,
            "PVCs provisioned on hostpath and NFS, with their pvc-timing history",
            "two claims go from Pending to Bound: the provisioner makes a directory and a PV for each, \
             and the pvc-timing webhook records when each phase began in the claim's annotation.",
            "the mutating webhook (called by the API server over TLS) and the provisioner work together \
             with no manual step; the annotation is the per-claim phase history no other tool keeps.",
        )?;
        let claims = self.claims();
        let nfs: PersistentVolumeClaim = object(
            "a claim",
            json!({"metadata": {"name": "shared"},
                   "spec": {"storageClassName": "nfs", "accessModes": ["ReadWriteMany"],
                            "resources": {"requests": {"storage": "1Gi"}}}}),
        )?;
        // hostpath is WaitForFirstConsumer: kube-scheduler writes the selected node on the claim
        // when it places the first pod using it. kube-sim's scheduler does not place volumes, so
        // the demo writes that annotation itself.
        let hostpath: PersistentVolumeClaim = object(
            "a claim",
            json!({"metadata": {"name": "data",
                                "annotations": {"volume.kubernetes.io/selected-node": AGENT_NODE}},
                   "spec": {"storageClassName": "hostpath", "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "64Mi"}}}}),
        )?;
        self.n.say(&format!(
            "hostpath is WaitForFirstConsumer; playing kube-scheduler's part, the claim names \
             {AGENT_NODE} in volume.kubernetes.io/selected-node."
        ))?;
        for (claim, size) in [(&nfs, "1Gi"), (&hostpath, "64Mi")] {
            let created = claims
                .create(&PostParams::default(), claim)
                .await
                .map_err(kube_err(format!("create claim {}", claim.name_any())))?;
            let class = created
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let timing = created
                .annotations()
                .get("pvc-timing")
                .cloned()
                .unwrap_or_else(|| "<none>".to_owned());
            self.n.say(&format!(
                "created claim {DEMO_NAMESPACE}/{} ({class}, {size}); as the API server stored it:",
                created.name_any()
            ))?;
            self.n.block(&format!("pvc-timing: {timing}"))?;
        }

        let bound = self
            .n
            .wait_for(
                "both claims Bound, with Bound recorded in pvc-timing",
                || async {
                    let mut out = Vec::new();
                    for name in ["shared", "data"] {
                        let c = claims.get(name).await.ok()?;
                        let timing = PvcTiming::parse(c.annotations().get("pvc-timing")?).ok()?;
                        if phase_of_claim(&c) != "Bound" || timing.current_phase != "Bound" {
                            return None;
                        }
                        out.push(c);
                    }
                    Some(out)
                },
            )
            .await?;

        let volumes: Api<PersistentVolume> = Api::all(self.c.client.clone());
        let mut reports = Vec::new();
        for claim in bound {
            let name = claim.name_any();
            let class = claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            let volume = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            let raw = claim
                .annotations()
                .get("pvc-timing")
                .cloned()
                .unwrap_or_default();
            let pv = volumes
                .get(&volume)
                .await
                .map_err(kube_err(format!("get PersistentVolume {volume}")))?;
            let spec = pv.spec.unwrap_or_default();
            let (source, directory) = if let Some(nfs) = &spec.nfs {
                let sub = Path::new(&nfs.path)
                    .strip_prefix(NFS_EXPORT)
                    .unwrap_or(Path::new(&nfs.path))
                    .to_path_buf();
                (
                    format!("nfs {}:{}", nfs.server, nfs.path),
                    self.c.nfs_mount.join(sub),
                )
            } else if let Some(hp) = &spec.host_path {
                (
                    format!("hostPath {} pinned to node {AGENT_NODE}", hp.path),
                    PathBuf::from(&hp.path),
                )
            } else {
                return Err(Error::Unexpected {
                    what: "the provisioned volume",
                    detail: format!("PersistentVolume {volume} has neither nfs nor hostPath"),
                });
            };
            if !directory.is_dir() {
                return Err(Error::Unexpected {
                    what: "the volume's directory",
                    detail: format!("{} does not exist", directory.display()),
                });
            }
            self.n.say(&format!(
                "claim {DEMO_NAMESPACE}/{name} ({class}) Bound to {volume}"
            ))?;
            let mut lines = vec![format!("pvc-timing: {raw}")];
            if let Ok(timing) = PvcTiming::parse(&raw) {
                let first = timing.timings.first().and_then(|t| parse_time(&t.time));
                for t in &timing.timings {
                    let after = match (first, parse_time(&t.time)) {
                        (Some(a), Some(b)) => {
                            format!("  ({} after creation)", format::offset(a, b))
                        }
                        _ => String::new(),
                    };
                    lines.push(format!("  {:<8} {}{after}", t.phase, t.time));
                }
            }
            lines.push(format!("volume:     {source}"));
            lines.push(format!("on disk:    {}", directory.display()));
            self.n.block(&lines.join("\n"))?;
            reports.push(ClaimReport {
                name,
                class,
                volume,
                timing: raw,
                directory,
            });
        }
        for (what, base) in [
            ("hostPath base (node-1's agent)", &self.c.hostpath_base),
            ("NFS export (mounted here)", &self.c.nfs_mount),
        ] {
            let entries = std::fs::read_dir(base).map_err(|source| Error::ReadDir {
                path: base.display().to_string(),
                source,
            })?;
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            self.n
                .command(&format!("ls {}    # {what}", base.display()))?;
            self.n.block(&names.join("\n"))?;
        }
        self.n.step_done()?;
        Ok(reports)
    }

    /// Step 2.
    pub(super) async fn inspect_step(&mut self) -> Result<(String, u8, String)> {
        self.n.step(
            2,
            "kubectl pvc inspect and kubectl pvc timing",
            "the kubectl-pvc plugin's view of claim `data` once a pod mounts it: \
             Provision / Bind / Attach / Mount, each with its status and evidence; then the \
             claims' phase history and time to Bound from their pvc-timing annotations.",
            "the plugin reads only what the cluster records (PV, class, events, pod state); \
             its exit code tells scripts whether every phase succeeded.",
        )?;
        let pods = self.pods();
        pods.create(
            &PostParams::default(),
            &mk_pod("data-reader", Some(AGENT_NODE), Some("data"))?,
        )
        .await
        .map_err(kube_err("create pod data-reader"))?;
        self.n.say(&format!(
            "created pod {DEMO_NAMESPACE}/data-reader on {AGENT_NODE}, mounting claim data at /data"
        ))?;
        self.wait_running("data-reader Running and Ready", &["data-reader".to_owned()])
            .await?;
        let kubeconfig = self.c.kubeconfig().display().to_string();
        let args = kubectl_pvc::Args::try_parse_from([
            "kubectl-pvc",
            "inspect",
            "data",
            "-n",
            DEMO_NAMESPACE,
            "--kubeconfig",
            &kubeconfig,
        ])
        .map_err(|e| Error::Unexpected {
            what: "the kubectl pvc command line",
            detail: e.to_string(),
        })?;
        let mut table = Vec::new();
        let outcome = kubectl_pvc::run(args, &mut table)
            .await
            .map_err(Error::KubectlPvc)?;
        let code = kubectl_pvc::exit_code(outcome);
        let table = String::from_utf8_lossy(&table).into_owned();
        self.n.command(&format!(
            "kubectl pvc inspect data -n {DEMO_NAMESPACE} --kubeconfig {kubeconfig}"
        ))?;
        self.n.block(&table)?;
        let meaning = match code {
            0 => "every phase succeeded or does not apply",
            3 => "nothing failed, but a phase is still pending",
            4 => "a phase failed or partly failed",
            _ => "see kubectl pvc --help",
        };
        self.n.say(&format!("exit code {code}: {meaning}"))?;

        self.n.say(
            "and the pvc-timing history read back: one claim's phases as a timeline, then the \
             time to Bound of every claim of the namespace, per storage class:",
        )?;
        let mut timing = String::new();
        for words in [
            vec!["timing", "data", "-n", DEMO_NAMESPACE],
            vec!["timing", "-n", DEMO_NAMESPACE],
        ] {
            let text = self.kubectl_pvc(&words, &kubeconfig).await?;
            self.n
                .command(&format!("kubectl pvc {}", words.join(" ")))?;
            self.n.block(&text)?;
            timing.push_str(&text);
        }
        self.n.step_done()?;
        Ok((table, code, timing))
    }

    /// Runs `kubectl pvc WORDS --kubeconfig KUBECONFIG` in-process and returns its output.
    async fn kubectl_pvc(&self, words: &[&str], kubeconfig: &str) -> Result<String> {
        let argv = std::iter::once("kubectl-pvc")
            .chain(words.iter().copied())
            .chain(["--kubeconfig", kubeconfig]);
        let args = kubectl_pvc::Args::try_parse_from(argv).map_err(|e| Error::Unexpected {
            what: "the kubectl pvc command line",
            detail: e.to_string(),
        })?;
        let mut out = Vec::new();
        kubectl_pvc::run(args, &mut out)
            .await
            .map_err(Error::KubectlPvc)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
