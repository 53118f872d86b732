//! Step 3: a PodManager scaled up and down, followed as podmanager reconciles it.

use super::*;

impl Tour<'_, '_> {
    pub(super) async fn follow_podmanager(
        &mut self,
        pms: &Api<PodManager>,
        target: i32,
        seen: &mut Vec<PodManagerRow>,
    ) -> Result<()> {
        let timeout = self.n.timeout;
        self.n.say(&format!(
            "... following my-pod-manager until {target}/{target} ready (up to {}s):",
            timeout.as_secs()
        ))?;
        self.n.block(&format::podmanager_header())?;
        let start = Instant::now();
        let mut last = None;
        let pods = self.pods();
        loop {
            if let Ok(pm) = pms.get("my-pod-manager").await {
                let status = pm.status.clone().unwrap_or_default();
                let row = (
                    pm.spec.replicas,
                    status.current_replicas,
                    status.ready_replicas,
                );
                if last != Some(row) {
                    self.n.block(&format::podmanager_row(
                        "my-pod-manager",
                        row.0,
                        row.1,
                        row.2,
                        &pm.spec.image,
                    ))?;
                    seen.push(row);
                    last = Some(row);
                }
                let live = pods
                    .list(&ListParams::default().labels("podmanager=my-pod-manager"))
                    .await
                    .map(|l| {
                        l.items
                            .iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .count()
                    })
                    .unwrap_or(0);
                if row == (target, target, target) && live == target as usize {
                    self.n.say(&format!(
                        "settled at {target}/{target} in {:.1}s",
                        start.elapsed().as_secs_f64()
                    ))?;
                    return Ok(());
                }
            }
            if start.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!("my-pod-manager to settle at {target}/{target} ready"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Step 3.
    pub(super) async fn podmanager_step(&mut self) -> Result<Vec<PodManagerRow>> {
        self.n.step(
            3,
            "A PodManager scaling 3 -> 5 -> 2",
            "the sample PodManager (crates/podmanager/config/samples/) creating its pods, then scaled \
             to 5 through the scale subresource and down to 2; lines as `kubectl get podmanager` prints them.",
            "the operator reconciles to the desired count, reports current and ready pods in status, \
             and removes the highest ordinals first when scaling down.",
        )?;
        let mut pm: PodManager =
            serde_yaml::from_str(SAMPLE).map_err(|source| Error::Manifest {
                what: "crates/podmanager/config/samples/apps_v1_podmanager.yaml",
                source,
            })?;
        pm.metadata.namespace = Some(DEMO_NAMESPACE.to_owned());
        let pms: Api<PodManager> = Api::namespaced(self.c.client.clone(), DEMO_NAMESPACE);
        pms.create(&PostParams::default(), &pm)
            .await
            .map_err(kube_err("create PodManager my-pod-manager"))?;
        self.n.command(&format!(
            "kubectl apply -n {DEMO_NAMESPACE} -f crates/podmanager/config/samples/apps_v1_podmanager.yaml"
        ))?;
        let mut seen = Vec::new();
        self.follow_podmanager(&pms, 3, &mut seen).await?;
        for replicas in [5, 2] {
            self.n.command(&format!(
                "kubectl scale podmanager/my-pod-manager -n {DEMO_NAMESPACE} --replicas={replicas}"
            ))?;
            pms.patch_scale(
                "my-pod-manager",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": replicas}})),
            )
            .await
            .map_err(kube_err(format!("scale my-pod-manager to {replicas}")))?;
            self.follow_podmanager(&pms, replicas, &mut seen).await?;
        }
        let list = self
            .pods()
            .list(&ListParams::default().labels("podmanager=my-pod-manager"))
            .await
            .map_err(kube_err("list my-pod-manager's pods"))?;
        let placed: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| format!("{} on {}", p.name_any(), pod_node(p)))
            .collect();
        self.n.say(&format!("pods left: {}", placed.join(", ")))?;
        self.n.step_done()?;
        Ok(seen)
    }
}
