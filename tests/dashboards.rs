//! The Grafana dashboards of the `monitoring/` Components, from one source: every panel and
//! query is written here once, and `kustomize/<component>/monitoring/<uid>.json` is this
//! module's output (`just dashboards` rewrites the files; `tests/manifests.rs` fails when they
//! are stale, and `tests/demo.rs` checks every metric a query names against the services' live
//! /metrics). Each Component turns its file into a ConfigMap labelled `grafana_dashboard: "1"`,
//! the label Grafana's dashboard sidecar (kube-prometheus-stack) loads.

use serde_json::{Value, json};

/// Grafana's dashboard JSON model version the files are written in (Grafana 11 and 12 load it
/// as is; newer ones migrate it on load).
const SCHEMA_VERSION: u32 = 39;
/// Panels per row of the 24-column grid at full width.
const GRID_WIDTH: u32 = 24;
/// The window of the quantile panels: time-to-bind and provisioning events are rare, so a
/// `$__rate_interval` window would mostly hold none.
const QUANTILE_WINDOW: &str = "1h";

/// One dashboard: a component's `monitoring/` folder, its uid and title, and its panels.
pub struct Dashboard {
    /// Folder name under `kustomize/`.
    pub component: &'static str,
    pub uid: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// A metric every replica exports, for the namespace variable's values.
    pub namespace_from: &'static str,
    pub panels: Vec<Panel>,
}

impl Dashboard {
    /// Path of the generated file, relative to the repository.
    pub fn path(&self) -> String {
        format!("kustomize/{}/monitoring/{}.json", self.component, self.uid)
    }
}

/// How a panel draws its queries.
pub enum Kind {
    /// Lines over time, in `unit` (Grafana's unit ids: `s`, `short`, `reqps`, `bytes`).
    TimeSeries { unit: &'static str, stacked: bool },
    /// One big number with value mappings (`(value, text, color)`).
    Stat {
        unit: &'static str,
        mappings: &'static [(&'static str, &'static str, &'static str)],
    },
    /// A value per series over time, mapped to named, coloured states.
    StateTimeline {
        mappings: &'static [(&'static str, &'static str, &'static str)],
    },
    /// Histogram buckets over time (queries with `format: heatmap`).
    Heatmap { unit: &'static str },
}

pub struct Panel {
    pub title: &'static str,
    pub description: &'static str,
    pub kind: Kind,
    /// Grid columns out of 24.
    pub width: u32,
    pub height: u32,
    /// `(PromQL, legend)`.
    pub queries: Vec<(String, String)>,
}

/// The label matcher every query carries: the namespace (or namespaces) picked on top.
const NS: &str = r#"namespace=~"$namespace""#;

fn q(expr: impl Into<String>, legend: &str) -> (String, String) {
    (expr.into(), legend.to_owned())
}

fn series(
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    queries: Vec<(String, String)>,
) -> Panel {
    Panel {
        title,
        description,
        kind: Kind::TimeSeries {
            unit,
            stacked: false,
        },
        width: 12,
        height: 8,
        queries,
    }
}

/// p50, p90 and p99 of a histogram `name` (without `_bucket`), by `by`, over `window`.
fn quantiles(name: &str, filter: &str, by: &str, window: &str) -> Vec<(String, String)> {
    ["0.5", "0.9", "0.99"]
        .into_iter()
        .map(|quantile| {
            let percent = quantile.trim_start_matches("0.");
            let percent = if percent.len() == 1 {
                format!("{percent}0")
            } else {
                percent.to_owned()
            };
            let (by, legend) = if by.is_empty() {
                ("le".to_owned(), format!("p{percent}"))
            } else {
                (format!("le, {by}"), format!("p{percent} {{{{{by}}}}}"))
            };
            (
                format!(
                    "histogram_quantile({quantile}, sum by ({by}) (rate({name}_bucket{{{filter}}}[{window}])))"
                ),
                legend,
            )
        })
        .collect()
}

fn eviction_guard() -> Dashboard {
    const ON_OFF: &[(&str, &str, &str)] = &[("0", "OFF", "green"), ("1", "ON", "red")];
    let admission = format!(r#"webhook="eviction-guard",{NS}"#);
    Dashboard {
        component: "eviction-guard",
        uid: "ballast-eviction-guard",
        title: "Ballast / eviction-guard",
        description: "Whether pods on NotReady nodes are protected, what was refused and let \
                      through, releases after a storm, mode changes and webhook latency.",
        namespace_from: "eviction_protection_active",
        panels: vec![
            Panel {
                title: "Protection now",
                description: "ON while at least the threshold of worker nodes is NotReady (or \
                              the mode is FORCED): evictions and deletions of pods on those \
                              nodes are refused.",
                kind: Kind::Stat {
                    unit: "none",
                    mappings: ON_OFF,
                },
                width: 6,
                height: 4,
                queries: vec![q(format!("max(eviction_protection_active{{{NS}}})"), "")],
            },
            Panel {
                title: "NotReady worker nodes now",
                description: "node_notready_count, the most any replica sees.",
                kind: Kind::Stat {
                    unit: "none",
                    mappings: &[],
                },
                width: 6,
                height: 4,
                queries: vec![q(format!("max(node_notready_count{{{NS}}})"), "")],
            },
            Panel {
                title: "Protection over time",
                description: "Each replica's protection state: ON while it refuses evictions \
                              of pods on NotReady nodes.",
                kind: Kind::StateTimeline { mappings: ON_OFF },
                width: 12,
                height: 4,
                queries: vec![q(
                    format!("max by (pod) (eviction_protection_active{{{NS}}})"),
                    "{{pod}}",
                )],
            },
            series(
                "NotReady and watched worker nodes",
                "Worker nodes whose Ready condition is False or Unknown, against the worker \
                 nodes the guard watches.",
                "short",
                vec![
                    q(format!("max(node_notready_count{{{NS}}})"), "NotReady"),
                    q(
                        format!("max(eviction_guard_worker_nodes{{{NS}}})"),
                        "watched",
                    ),
                ],
            ),
            series(
                "Refusals by operation",
                "Requests refused to protect pods on NotReady nodes: evictions (429), \
                 deletes and deletion marks (403), status updates.",
                "reqps",
                vec![q(
                    format!(
                        "sum by (operation) (rate(eviction_intercepted_total{{{NS}}}[$__rate_interval]))"
                    ),
                    "{{operation}}",
                )],
            ),
            series(
                "Let through by operation",
                "Guarded requests allowed: pods on healthy nodes, exempt callers, protection \
                 off.",
                "reqps",
                vec![q(
                    format!(
                        "sum by (operation) (rate(eviction_allowed_total{{{NS}}}[$__rate_interval]))"
                    ),
                    "{{operation}}",
                )],
            ),
            series(
                "Releases",
                "Refused evictions the guard completed once protection lifted, and failed \
                 attempts (retried).",
                "short",
                vec![
                    q(
                        format!(
                            "sum(increase(eviction_guard_released_total{{{NS}}}[$__rate_interval]))"
                        ),
                        "released",
                    ),
                    q(
                        format!(
                            "sum(increase(eviction_guard_release_errors_total{{{NS}}}[$__rate_interval]))"
                        ),
                        "errors",
                    ),
                ],
            ),
            series(
                "Mode changes",
                "SetMode calls and the disable/enable callbacks, by the mode set.",
                "short",
                vec![q(
                    format!(
                        "sum by (mode) (increase(eviction_guard_mode_changes_total{{{NS}}}[$__rate_interval]))"
                    ),
                    "{{mode}}",
                )],
            ),
            series(
                "Webhook latency",
                "Time to answer one AdmissionReview; the deletions webhook fails closed, so \
                 slow answers slow every pod deletion.",
                "s",
                quantiles(
                    "admission_duration_seconds",
                    &admission,
                    "operation",
                    "$__rate_interval",
                ),
            ),
            series(
                "Node watch and pod lookups",
                "1 while a replica's Node watch works; pod lookups of evictions that failed \
                 (the eviction is refused as retryable).",
                "short",
                vec![
                    q(
                        format!("min by (pod) (eviction_guard_node_watch_healthy{{{NS}}})"),
                        "watch healthy {{pod}}",
                    ),
                    q(
                        format!(
                            "sum(rate(eviction_guard_pod_lookup_errors_total{{{NS}}}[$__rate_interval]))"
                        ),
                        "pod lookup errors/s",
                    ),
                ],
            ),
        ],
    }
}

fn pvc_timing() -> Dashboard {
    let class = format!(r#"storage_class=~"$storage_class",{NS}"#);
    Dashboard {
        component: "pvc-timing",
        uid: "ballast-pvc-timing",
        title: "Ballast / pvc-timing",
        description: "How long claims take from creation to Bound, per storage class, and the \
                      phase transitions pvc-timing recorded. `kubectl pvc timing` shows the \
                      same figures per claim.",
        namespace_from: "pvc_timing_build_info",
        panels: vec![
            Panel {
                title: "Time to Bound",
                description: "Claims that became Bound, by how long they took from creation \
                              (a claim bound while pvc-timing was down is not counted).",
                kind: Kind::Heatmap { unit: "s" },
                width: 12,
                height: 8,
                queries: vec![q(
                    format!(
                        "sum by (le) (increase(pvc_time_to_bound_seconds_bucket{{{class}}}[$__rate_interval]))"
                    ),
                    "{{le}}",
                )],
            },
            series(
                "Time to Bound quantiles by storage class",
                "Over the last hour; the BallastPVCSlowToBind alert fires on the 90th.",
                "s",
                quantiles(
                    "pvc_time_to_bound_seconds",
                    &class,
                    "storage_class",
                    QUANTILE_WINDOW,
                ),
            ),
            series(
                "Claims bound by storage class",
                "Claims whose first Bound was recorded.",
                "short",
                vec![q(
                    format!(
                        "sum by (storage_class) (increase(pvc_time_to_bound_seconds_count{{{class}}}[$__rate_interval]))"
                    ),
                    "{{storage_class}}",
                )],
            ),
            series(
                "Phase transitions",
                "History entries stored, by the phase entered (Pending, Bound, Lost).",
                "short",
                vec![q(
                    format!(
                        "sum by (phase) (increase(pvc_phase_transitions_total{{{NS}}}[$__rate_interval]))"
                    ),
                    "{{phase}}",
                )],
            ),
            series(
                "Errors and repairs",
                "Admission requests let through unchanged, controller errors, and annotations \
                 repaired.",
                "short",
                vec![
                    q(
                        format!(
                            "sum by (reason) (increase(pvc_timing_webhook_errors_total{{{NS}}}[$__rate_interval]))"
                        ),
                        "webhook {{reason}}",
                    ),
                    q(
                        format!(
                            "sum by (error) (increase(pvc_timing_controller_errors_total{{{NS}}}[$__rate_interval]))"
                        ),
                        "controller {{error}}",
                    ),
                    q(
                        format!(
                            "sum by (kind) (increase(pvc_timing_annotation_repairs_total{{{NS}}}[$__rate_interval]))"
                        ),
                        "repair {{kind}}",
                    ),
                ],
            ),
            series(
                "Webhook latency",
                "Time to answer one AdmissionReview (the webhook fails open).",
                "s",
                quantiles(
                    "admission_duration_seconds",
                    &format!(r#"webhook="pvc-timing",{NS}"#),
                    "operation",
                    "$__rate_interval",
                ),
            ),
        ],
    }
}

fn provisioner(component: &'static str, uid: &'static str, title: &'static str) -> Dashboard {
    let class = format!(r#"class=~"$class",{NS}"#);
    let hostpath = component == "provisioner-hostpath";
    let mut d = Dashboard {
        component,
        uid,
        title,
        description: if hostpath {
            "Volumes the provisioner created and deleted, its failures by reason, how long \
             provisioning takes, and each node's free space as its agent reports it."
        } else {
            "Volumes the provisioner created and deleted, its failures by reason, and how \
             long provisioning takes."
        },
        namespace_from: "provisioner_build_info",
        panels: vec![
            series(
                "Volumes created and deleted",
                "PersistentVolumes created for claims, and volumes whose directory was removed \
                 (or archived) and PV deleted.",
                "short",
                vec![
                    q(
                        format!(
                            "sum by (class) (increase(provisioner_volumes_provisioned_total{{{class}}}[$__rate_interval]))"
                        ),
                        "created {{class}}",
                    ),
                    q(
                        format!(
                            "sum by (class) (increase(provisioner_volumes_deleted_total{{{class}}}[$__rate_interval]))"
                        ),
                        "deleted {{class}}",
                    ),
                ],
            ),
            Panel {
                kind: Kind::TimeSeries {
                    unit: "short",
                    stacked: true,
                },
                ..series(
                    "Failures by operation and reason",
                    "Every failure is also a ProvisioningFailed (or binding) warning event on \
                     the claim.",
                    "short",
                    vec![q(
                        format!(
                            "sum by (operation, reason) (increase(provisioner_failures_total{{{class}}}[$__rate_interval]))"
                        ),
                        "{{operation}} {{reason}}",
                    )],
                )
            },
            series(
                "Provisioning time",
                "From starting to provision a claim until its volume exists, over the last \
                 hour; the BallastProvisioningSlow alert fires on the 90th.",
                "s",
                quantiles(
                    "provisioner_provision_duration_seconds",
                    &class,
                    "class",
                    QUANTILE_WINDOW,
                ),
            ),
            series(
                "Volumes created per class (total)",
                "Since the controller started.",
                "short",
                vec![q(
                    format!("sum by (class) (provisioner_volumes_provisioned_total{{{class}}})"),
                    "{{class}}",
                )],
            ),
        ],
    };
    if hostpath {
        d.panels.extend(hostpath_nodes());
    }
    d
}

/// The hostPath nodes' free space, from the agents' capacity reports as the controller reads
/// them (every controller replica reads them: `max` over replicas).
fn hostpath_nodes() -> [Panel; 2] {
    [
        series(
            "Free space by node",
            "Free bytes under the hostPath base directory, from each node agent's capacity \
             report while it is fresh (placement reads the same figure). A gap: the report \
             expired or was deleted (agent stopped, node removed), and the node takes no new \
             hostPath volumes.",
            "bytes",
            vec![q(
                format!("max by (node) (provisioner_hostpath_free_bytes{{{NS}}})"),
                "{{node}}",
            )],
        ),
        series(
            "Capacity report age by node",
            "Seconds since each node agent last renewed its report: agents renew every 10s, \
             and a report not renewed for 40s expires.",
            "s",
            vec![q(
                format!(
                    "time() - max by (node) (provisioner_hostpath_report_renewed_timestamp_seconds{{{NS}}})"
                ),
                "{{node}}",
            )],
        ),
    ]
}

fn podmanager() -> Dashboard {
    Dashboard {
        component: "podmanager",
        uid: "ballast-podmanager",
        title: "Ballast / podmanager",
        description: "Desired against ready replicas, PodManager reconciles, their outcome \
                      and duration, the pods the operator created and deleted, and the \
                      conversion webhook's calls.",
        namespace_from: "podmanager_build_info",
        panels: vec![
            series(
                "Desired, current and ready replicas",
                "Totals over every PodManager (spec.replicas, status.currentReplicas, \
                 status.readyReplicas), from the leader's cache; `kubectl get podmanagers -A` \
                 shows them per PodManager.",
                "short",
                vec![
                    q(
                        format!("sum(podmanager_replicas_desired{{{NS}}})"),
                        "desired",
                    ),
                    q(
                        format!("sum(podmanager_replicas_current{{{NS}}})"),
                        "current",
                    ),
                    q(format!("sum(podmanager_replicas_ready{{{NS}}})"), "ready"),
                ],
            ),
            series(
                "PodManagers",
                "PodManagers reconciled, and those whose status shows fewer ready pods than \
                 spec.replicas.",
                "short",
                vec![
                    q(format!("sum(podmanager_podmanagers{{{NS}}})"), "all"),
                    q(
                        format!("sum(podmanager_podmanagers_unready{{{NS}}})"),
                        "short of ready pods",
                    ),
                ],
            ),
            Panel {
                kind: Kind::TimeSeries {
                    unit: "reqps",
                    stacked: true,
                },
                ..series(
                    "Reconciles by result",
                    "`success`, or the error's label; the BallastPodManagerReconcileErrors \
                     alert fires on errors.",
                    "reqps",
                    vec![q(
                        format!(
                            "sum by (result) (rate(podmanager_reconcile_total{{{NS}}}[$__rate_interval]))"
                        ),
                        "{{result}}",
                    )],
                )
            },
            series(
                "Reconcile duration",
                "Time per reconcile, API calls included.",
                "s",
                quantiles(
                    "podmanager_reconcile_duration_seconds",
                    NS,
                    "",
                    "$__rate_interval",
                ),
            ),
            series(
                "Pod creates and deletes",
                "Pods the operator created or deleted, by outcome.",
                "short",
                vec![q(
                    format!(
                        "sum by (operation, result) (increase(podmanager_pod_operations_total{{{NS}}}[$__rate_interval]))"
                    ),
                    "{{operation}} {{result}}",
                )],
            ),
            series(
                "Conversion webhook requests",
                "ConversionReviews the API server sent (reads and writes of PodManagers in a \
                 version other than v1, the stored one), by the objects' version, the version \
                 asked for and result; a failure fails the API request that needed it.",
                "reqps",
                vec![q(
                    format!(
                        "sum by (from, to, result) (rate(podmanager_conversion_requests_total{{{NS}}}[$__rate_interval]))"
                    ),
                    "{{from}} to {{to}} {{result}}",
                )],
            ),
        ],
    }
}

/// Every dashboard, one per `monitoring/` Component.
pub fn all() -> Vec<Dashboard> {
    vec![
        eviction_guard(),
        pvc_timing(),
        provisioner(
            "provisioner-hostpath",
            "ballast-provisioner-hostpath",
            "Ballast / provisioner (hostPath)",
        ),
        provisioner(
            "provisioner-nfs",
            "ballast-provisioner-nfs",
            "Ballast / provisioner (NFS)",
        ),
        podmanager(),
    ]
}

const DATASOURCE: &str = "${datasource}";

fn datasource() -> Value {
    json!({"type": "prometheus", "uid": DATASOURCE})
}

fn mappings(values: &[(&str, &str, &str)]) -> Value {
    if values.is_empty() {
        return json!([]);
    }
    let mut options = serde_json::Map::new();
    for (i, (value, text, color)) in values.iter().enumerate() {
        options.insert(
            (*value).to_owned(),
            json!({"index": i, "text": text, "color": color}),
        );
    }
    json!([{"type": "value", "options": options}])
}

fn panel_json(id: usize, p: &Panel, x: u32, y: u32) -> Value {
    let targets: Vec<Value> = p
        .queries
        .iter()
        .enumerate()
        .map(|(i, (expr, legend))| {
            let mut t = json!({
                "datasource": datasource(),
                "expr": expr,
                "legendFormat": legend,
                "refId": ((b'A' + i as u8) as char).to_string(),
            });
            if matches!(p.kind, Kind::Heatmap { .. }) {
                t["format"] = json!("heatmap");
            }
            t
        })
        .collect();
    let legend =
        json!({"displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": []});
    let tooltip = json!({"mode": "multi", "sort": "none"});
    let (kind, field_defaults, options) = match &p.kind {
        Kind::TimeSeries { unit, stacked } => (
            "timeseries",
            json!({
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": if *stacked { 30 } else { 10 },
                    "showPoints": "never",
                    "spanNulls": false,
                    "stacking": {"mode": if *stacked { "normal" } else { "none" }, "group": "A"}
                }
            }),
            json!({"legend": legend, "tooltip": tooltip}),
        ),
        Kind::Stat { unit, mappings: m } => (
            "stat",
            json!({
                "unit": unit,
                "color": {"mode": "thresholds"},
                "mappings": mappings(m),
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]}
            }),
            json!({
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                "orientation": "auto",
                "colorMode": if m.is_empty() { "value" } else { "background" },
                "graphMode": "none",
                "justifyMode": "auto",
                "textMode": "auto",
                "wideLayout": true,
                "showPercentChange": false,
                "percentChangeColorMode": "standard"
            }),
        ),
        Kind::StateTimeline { mappings: m } => (
            "state-timeline",
            json!({
                "color": {"mode": "thresholds"},
                "mappings": mappings(m),
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}]},
                "custom": {"fillOpacity": 80, "lineWidth": 0}
            }),
            json!({
                "showValue": "auto",
                "rowHeight": 0.9,
                "mergeValues": true,
                "alignValue": "left",
                "legend": legend,
                "tooltip": tooltip
            }),
        ),
        Kind::Heatmap { unit } => (
            "heatmap",
            json!({}),
            json!({
                "calculate": false,
                "yAxis": {"unit": unit, "axisPlacement": "left"},
                "rowsFrame": {"layout": "le"},
                "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                          "scale": "exponential", "exponent": 0.5, "steps": 64, "reverse": false},
                "cellGap": 1,
                "showValue": "auto",
                "filterValues": {"le": 1e-9},
                "legend": {"show": true},
                "tooltip": {"mode": "single", "yHistogram": true},
                "exemplars": {"color": "rgba(255,0,255,0.7)"}
            }),
        ),
    };
    json!({
        "id": id,
        "type": kind,
        "title": p.title,
        "description": p.description,
        "datasource": datasource(),
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": field_defaults, "overrides": []},
        "options": options,
        "targets": targets,
    })
}

/// The dashboard's JSON model.
pub fn render(d: &Dashboard) -> Value {
    let (mut x, mut y, mut row_height) = (0, 0, 0);
    let mut panels = Vec::new();
    for (i, p) in d.panels.iter().enumerate() {
        if x + p.width > GRID_WIDTH {
            x = 0;
            y += row_height;
            row_height = 0;
        }
        panels.push(panel_json(i + 1, p, x, y));
        x += p.width;
        row_height = row_height.max(p.height);
    }
    let mut variables = vec![
        json!({
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "hide": 0,
            "refresh": 1,
            "includeAll": false,
            "multi": false
        }),
        json!({
            "name": "namespace",
            "label": "Namespace",
            "type": "query",
            "datasource": datasource(),
            "query": {"query": format!("label_values({}, namespace)", d.namespace_from),
                      "refId": "namespace"},
            "hide": 0,
            "refresh": 2,
            "includeAll": true,
            "multi": true,
            "sort": 1
        }),
    ];
    let class_variable = |name: &str, label: &str, metric: &str| {
        json!({
            "name": name,
            "label": label,
            "type": "query",
            "datasource": datasource(),
            "query": {"query": format!("label_values({metric}, {name})"), "refId": name},
            "hide": 0,
            "refresh": 2,
            "includeAll": true,
            "allValue": ".*",
            "multi": true,
            "sort": 1
        })
    };
    match d.component {
        "pvc-timing" => variables.push(class_variable(
            "storage_class",
            "Storage class",
            "pvc_time_to_bound_seconds_count",
        )),
        "provisioner-hostpath" | "provisioner-nfs" => variables.push(class_variable(
            "class",
            "Storage class",
            "provisioner_volumes_provisioned_total",
        )),
        _ => {}
    }
    json!({
        "uid": d.uid,
        "title": d.title,
        "description": d.description,
        "tags": ["ballast", d.component],
        "editable": true,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": false,
        "links": [{
            "title": "Runbooks",
            "type": "link",
            "url": "https://github.com/ballast-dev/ballast/tree/main/docs/runbooks",
            "targetBlank": true,
            "icon": "doc",
            "tooltip": "What each Ballast alert means and what to do",
            "tags": [],
            "asDropdown": false,
            "includeVars": false,
            "keepTime": false
        }],
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": true,
            "hide": true,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard"
        }]},
        "templating": {"list": variables},
        "panels": panels,
        "version": 1
    })
}

/// The file's text: the JSON model, pretty-printed, with a final newline.
pub fn text(d: &Dashboard) -> String {
    let mut s = serde_json::to_string_pretty(&render(d)).expect("a JSON value serializes");
    s.push('\n');
    s
}

/// Every PromQL expression of a dashboard file: panel targets and query variables.
pub fn expressions(model: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in model["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_owned());
            }
        }
    }
    for v in model["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// The metric names a PromQL expression (or a `label_values(metric, label)` variable query)
/// reads: identifiers that are not functions, aggregations, keywords, label names in
/// `by (...)`-style lists, or anything inside `{...}`, `[...]` or quotes.
pub fn metric_names(expr: &str) -> Vec<String> {
    // Aggregations may put `by (...)` before their parenthesis: `sum by (le) (...)`.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
        "limit_ratio",
    ];
    const LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| {
        let mut j = from;
        while j < chars.len() && chars[j] != close {
            if chars[j] == '"' || chars[j] == '\'' {
                let quote = chars[j];
                j += 1;
                while j < chars.len() && chars[j] != quote {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        j + 1
    };
    // `label_values(metric, label)`: the label is no metric
    let label_values = expr.trim_start().starts_with("label_values(");
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_to(i + 1, '}'),
            '[' => i = skip_to(i + 1, ']'),
            '"' | '\'' | '`' => i = skip_to(i + 1, c),
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if LISTS.contains(&word.as_str()) {
                    if call {
                        i = skip_to(next + 1, ')');
                    }
                } else if !call && !KEYWORDS.contains(&word.as_str()) {
                    names.push(word);
                    if label_values {
                        break;
                    }
                }
            }
            _ => i += 1,
        }
    }
    names.sort();
    names.dedup();
    names
}
