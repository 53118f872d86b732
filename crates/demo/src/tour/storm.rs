//! Steps 4 to 6: a node failure storm refused by eviction-guard, the control API over gRPC,
//! and the recovery once the nodes return.

use super::*;

impl Tour<'_, '_> {
    /// Step 4.
    pub(super) async fn storm_step(&mut self) -> Result<StormEvidence> {
        self.n.step(
            4,
            "Three of five worker nodes fail",
            "node-1..3 stop heartbeating; eviction-guard sees a storm and turns protection on; the \
             taint-based eviction of their pods is refused; a drain's eviction of a pod on a \
             failed node gets 429, while a pod on a healthy node is evicted normally.",
            "a network partition or control-plane hiccup that makes many nodes NotReady at once does not \
             empty them: their pods stay until the nodes return or an operator lifts protection.",
        )?;
        let pods = self.pods();
        let names: Vec<String> = (1..=crate::cluster::NODES)
            .map(|i| format!("app-{i}"))
            .collect();
        for (i, name) in names.iter().enumerate() {
            let node = format!("node-{}", i + 1);
            pods.create(&PostParams::default(), &mk_pod(name, Some(&node), None)?)
                .await
                .map_err(kube_err(format!("create pod {name}")))?;
        }
        self.n
            .say("created pods app-1..app-5, one on each worker node")?;
        self.wait_running("app-1..app-5 Running and Ready", &names)
            .await?;

        for node in FAILING {
            self.c.backend.fail_node(node)?;
        }
        self.n.say(&format!(
            "{}: heartbeats of {} stopped",
            self.c.backend.kubelets(),
            FAILING.join(", ")
        ))?;
        let nodes = self.nodes();
        let notready_at = self
            .n
            .wait_for("three nodes NotReady in the API", || async {
                let list = nodes.list(&ListParams::default()).await.ok()?;
                let down = list
                    .items
                    .iter()
                    .filter(|n| node_ready(n) != "True")
                    .count();
                (down == FAILING.len()).then(Instant::now)
            })
            .await?;
        let control = &self.control;
        let state = self
            .n
            .wait_for("eviction-guard to turn protection on", || async {
                let s = control.get_status().await.ok()?;
                s.protecting.then_some(s)
            })
            .await?;
        self.n.say(&format!(
            "eviction-guard: protection ON, {:.1}s after the third node went NotReady",
            notready_at.elapsed().as_secs_f64()
        ))?;
        self.n.block(&format!("reason: {}", state.reason))?;

        // The taint eviction starts once the pods' toleration of the unreachable taint runs out.
        self.n.say(&format!(
            "the taint-eviction controller waits out the pods' tolerationSeconds ({}s here, 300s in \
             Kubernetes), then marks each pod DisruptionTarget and deletes it",
            TOLERATION.as_secs()
        ))?;
        let tainted_at = self
            .n
            .wait_for(
                "the node lifecycle controller to taint the failed nodes unreachable",
                || async {
                    let list = nodes.list(&ListParams::default()).await.ok()?;
                    let tainted = list
                        .items
                        .iter()
                        .filter(|n| node_taints(n).contains("node.kubernetes.io/unreachable"))
                        .count();
                    (tainted == FAILING.len()).then(Instant::now)
                },
            )
            .await?;
        // counted from here: the controller makes its five attempts per pod right when the
        // tolerations run out, then gives up
        let before = self.status_refusals().await?;
        self.print_nodes().await?;
        let expires = tainted_at + TOLERATION;
        self.n
            .wait_for("the tolerations to run out", || async {
                (Instant::now() >= expires).then_some(())
            })
            .await?;
        let http = self.http.clone();
        let metrics_url = format!("http://{}/metrics", self.c.addrs.guard_admin);
        let refused = self
            .n
            .wait_for(
                "the guard to refuse the taint eviction's DisruptionTarget updates",
                || async {
                    let text = get_text(&http, &metrics_url).await.ok()?;
                    let now = ballast_runtime::metrics::sample(
                        &text,
                        "eviction_intercepted_total",
                        &[("operation", "status")],
                    )?;
                    (now - before >= TAINT_REFUSALS).then_some(now - before)
                },
            )
            .await?;
        self.n.say(&format!(
            "eviction_intercepted_total{{operation=\"status\"}} rose by {refused} since the nodes were tainted"
        ))?;
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(kube_err("list pods"))?;
        let mut table = format!(
            "{:<20}{:<9}{:<9}{:<11}{}\n",
            "POD", "NODE", "PHASE", "DELETING", "DISRUPTION-TARGET"
        );
        let mut protected = Vec::new();
        for p in list.items.iter().filter(|p| FAILING.contains(&pod_node(p))) {
            let deleting = p.metadata.deletion_timestamp.is_some();
            let disrupted = pod_condition(p, "DisruptionTarget").unwrap_or_else(|| "-".into());
            table.push_str(&format!(
                "{:<20}{:<9}{:<9}{:<11}{}\n",
                p.name_any(),
                pod_node(p),
                pod_phase(p),
                if deleting { "yes" } else { "no" },
                disrupted
            ));
            if deleting || disrupted == "True" {
                return Err(Error::Unexpected {
                    what: "the protected pods",
                    detail: format!("pod {} on a failed node is being evicted", p.name_any()),
                });
            }
            protected.push(p.name_any());
        }
        self.n.say("pods on the failed nodes, still there:")?;
        self.n.block(&table)?;

        // podmanager reads node health from the control service: its pods on failed nodes no
        // longer count as ready, so it starts replacements on healthy nodes and deletes nothing.
        let pms: Api<PodManager> = Api::namespaced(self.c.client.clone(), DEMO_NAMESPACE);
        let failing_pm_pods = protected
            .iter()
            .filter(|p| p.starts_with("my-pod-manager-"))
            .count();
        if failing_pm_pods > 0 {
            let (row, placed) = self
                .n
                .wait_for(
                    "podmanager to replace its pods on failed nodes with ready pods elsewhere",
                    || async {
                        let pm = pms.get("my-pod-manager").await.ok()?;
                        let status = pm.status.clone()?;
                        if status.ready_replicas < pm.spec.replicas {
                            return None;
                        }
                        let list = pods
                            .list(&ListParams::default().labels("podmanager=my-pod-manager"))
                            .await
                            .ok()?;
                        let live: Vec<&Pod> = list
                            .items
                            .iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .collect();
                        let ready_elsewhere = live
                            .iter()
                            .filter(|p| !FAILING.contains(&pod_node(p)))
                            .filter(|p| pod_condition(p, "Ready").as_deref() == Some("True"))
                            .count();
                        if ready_elsewhere < usize::try_from(pm.spec.replicas).ok()? {
                            return None;
                        }
                        let placed: Vec<String> = live
                            .iter()
                            .map(|p| format!("{} on {}", p.name_any(), pod_node(p)))
                            .collect();
                        let row = format::podmanager_row(
                            "my-pod-manager",
                            pm.spec.replicas,
                            status.current_replicas,
                            status.ready_replicas,
                            &pm.spec.image,
                        );
                        Some((row, placed))
                    },
                )
                .await?;
            self.n
                .block(&format!("{}\n{row}", format::podmanager_header()))?;
            self.n
                .say(&format!("its pods now: {}", placed.join(", ")))?;
        }

        // A drain: the Eviction API, refused with 429 so kubectl drain retries.
        self.n.say(&format!(
            "what `kubectl drain node-1` sends for app-1: POST /api/v1/namespaces/{DEMO_NAMESPACE}/pods/app-1/eviction"
        ))?;
        let drain: Api<Pod> = Api::namespaced(self.c.no_retry_client.clone(), DEMO_NAMESPACE);
        let refusal = match drain.evict("app-1", &EvictParams::default()).await {
            Err(kube::Error::Api(status)) => Refusal {
                pod: "app-1".into(),
                node: "node-1".into(),
                code: status.code,
                message: status.message,
            },
            Err(e) => {
                return Err(Error::Kube {
                    what: "evict app-1".into(),
                    source: e,
                });
            }
            Ok(_) => {
                return Err(Error::Unexpected {
                    what: "the refused eviction",
                    detail: "the eviction of app-1 on failed node-1 was allowed".into(),
                });
            }
        };
        self.n.block(&format!(
            "HTTP {} {}\n{}",
            refusal.code,
            reason_phrase(refusal.code),
            refusal.message
        ))?;
        if refusal.code != 429 || !refusal.message.contains("node-1") {
            return Err(Error::Unexpected {
                what: "the refused eviction",
                detail: format!("got {} {}", refusal.code, refusal.message),
            });
        }

        self.n.say(&format!(
            "the same for app-4, on healthy node-4: POST /api/v1/namespaces/{DEMO_NAMESPACE}/pods/app-4/eviction"
        ))?;
        let allowed = drain
            .evict("app-4", &EvictParams::default())
            .await
            .map_err(kube_err("evict app-4 on a healthy node"))?;
        let code = if allowed.code == 0 { 201 } else { allowed.code };
        self.n
            .block(&format!("HTTP {code} {}", reason_phrase(code)))?;
        self.n
            .wait_for("app-4 gone", || async {
                pods.get_opt("app-4").await.ok()?.is_none().then_some(())
            })
            .await?;
        self.n.say(
            "app-4 on node-4 (Ready) was evicted as usual: protection never covers healthy nodes",
        )?;
        self.n.step_done()?;
        Ok(StormEvidence {
            reason: state.reason,
            protected,
            refused,
            refusal,
            evicted: "app-4".into(),
        })
    }

    /// Step 5.
    pub(super) async fn grpc_step(&mut self) -> Result<serde_json::Value> {
        self.n.step(
            5,
            "The control service over gRPC",
            "the interception state as any client of the Ballast control API sees it (GetStatus), \
             here through ballast-control's client, printed the way grpcurl prints it.",
            "other services (provisioner, podmanager) and operators read the same state the guard \
             acts on: mode, whether it protects, why, since when, and which nodes.",
        )?;
        let state = self.get_status().await?;
        let json = format::grpcurl_json(&state);
        self.n.command(&format!(
            "grpcurl -plaintext {} ballast.control.v1.ControlService/GetStatus",
            self.c.addrs.grpc
        ))?;
        self.n.block(&format::render_get_status_response(&state))?;
        self.n.step_done()?;
        Ok(json)
    }

    /// Step 6.
    pub(super) async fn recovery_step(&mut self) -> Result<RecoveryEvidence> {
        self.n.step(
            6,
            "Recovery",
            "node-1..3 heartbeat again; protection ends by itself once fewer than three nodes have \
             stayed NotReady for the settle period; the guard's counters on /metrics.",
            "protection needs no operator to end it, a healing partition is not judged on its first \
             node back, and every refusal and allowance is counted under the seed's metric names.",
        )?;
        for node in FAILING {
            self.c.backend.restore_node(node)?;
        }
        self.n.say(&format!(
            "{}: heartbeats of {} resumed",
            self.c.backend.kubelets(),
            FAILING.join(", ")
        ))?;
        let control = &self.control;
        let state = self
            .n
            .wait_for("eviction-guard to turn protection off", || async {
                let s = control.get_status().await.ok()?;
                (!s.protecting).then_some(s)
            })
            .await?;
        self.n.say(&format!(
            "eviction-guard: protection OFF, the storm under the threshold for its settle period \
             ({}s here, 60s as shipped)",
            crate::cluster::STORM_SETTLE.as_secs()
        ))?;
        self.n.block(&format!("reason: {}", state.reason))?;
        let nodes = self.nodes();
        self.n
            .wait_for("every node Ready", || async {
                let list = nodes.list(&ListParams::default()).await.ok()?;
                list.items
                    .iter()
                    .all(|n| node_ready(n) == "True")
                    .then_some(())
            })
            .await?;
        self.print_nodes().await?;
        self.n.say(
            "with the nodes back, podmanager removes the surplus and returns to the desired count:",
        )?;
        let pms: Api<PodManager> = Api::namespaced(self.c.client.clone(), DEMO_NAMESPACE);
        let mut seen = Vec::new();
        self.follow_podmanager(&pms, 2, &mut seen).await?;
        let state = self.get_status().await?;
        let metrics = self.guard_metrics().await?;
        self.n.command(&format!(
            "curl -s http://{}/metrics | grep -E '^(eviction_intercepted_total|eviction_allowed_total|node_notready_count)'",
            self.c.addrs.guard_admin
        ))?;
        let mut lines = Vec::new();
        for name in [
            "eviction_intercepted_total",
            "eviction_allowed_total",
            "node_notready_count",
        ] {
            lines.extend(format::metric_lines(&metrics, name));
        }
        self.n.block(&lines.join("\n"))?;
        self.n.step_done()?;
        Ok(RecoveryEvidence {
            reason: state.reason,
            protecting: state.protecting,
            intercepted: format::metric_sum(&metrics, "eviction_intercepted_total"),
            allowed: format::metric_sum(&metrics, "eviction_allowed_total"),
            notready: format::metric_sum(&metrics, "node_notready_count"),
        })
    }
}

pub(super) struct StormEvidence {
    pub(super) reason: String,
    pub(super) protected: Vec<String>,
    pub(super) refused: f64,
    pub(super) refusal: Refusal,
    pub(super) evicted: String,
}

pub(super) struct RecoveryEvidence {
    pub(super) reason: String,
    pub(super) protecting: bool,
    pub(super) intercepted: f64,
    pub(super) allowed: f64,
    pub(super) notready: f64,
}
