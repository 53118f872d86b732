//! `kube-sim serve` runs the simulator until Ctrl-C; `kube-sim node fail|restore` stops or
//! resumes a simulated node's heartbeats (in the simulator, or of `kube-sim nodes` on any
//! cluster); `kube-sim nodes` runs simulated kubelets against any API server;
//! `kube-sim control-plane` starts a real control plane from Kubernetes binaries, for a command
//! or until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kube-sim",
    version,
    about = "A Kubernetes API simulator for tests and demos"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the simulated API on 127.0.0.1 over HTTPS until Ctrl-C.
    Serve(ServeArgs),
    /// Act on a simulated node of a running simulator or of `kube-sim nodes`.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Run simulated kubelets against any API server until Ctrl-C: register nodes, renew their
    /// Leases, post Ready, run the pods bound to them; the nodes are removed at exit.
    Nodes(NodesArgs),
    /// Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback;
    /// run COMMAND against them (E2E_KUBECONFIG and the suite's variables set) or, without
    /// one, print the kubeconfig and wait for Ctrl-C. Everything stops at the end.
    ControlPlane(ControlPlaneArgs),
}

#[derive(clap::Args)]
struct NodesArgs {
    /// Kubeconfig of the cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// Node names: PREFIX1..PREFIXN.
    #[arg(long, default_value = "sim-node-")]
    prefix: String,
    /// Number of zones (`topology.kubernetes.io/zone` = ZONE_PREFIXa, b, ...), in turn.
    #[arg(long, default_value_t = 3)]
    zones: usize,
    /// Zone names' prefix.
    #[arg(long, default_value = "sim-zone-")]
    zone_prefix: String,
    /// How often each node renews its Lease (10s on a real kubelet).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat: std::time::Duration,
    /// Leave the nodes registered at exit.
    #[arg(long)]
    keep: bool,
}

#[derive(clap::Args)]
struct ControlPlaneArgs {
    /// Directory with etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
    #[arg(long, env = kube_sim::control_plane::BINARIES_ENV)]
    binaries: PathBuf,
    /// Also write the kubeconfig here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// How long after its last heartbeat a node goes NotReady.
    #[arg(long, default_value = "6s", value_parser = humantime::parse_duration)]
    node_monitor_grace: std::time::Duration,
    /// Client QPS of the controller manager and the scheduler (burst twice that). Kubernetes
    /// defaults to 20 and 50, which throttle the PV controller in bulk; clusters raise them.
    #[arg(long, env = "KUBE_SIM_KUBE_API_QPS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    kube_api_qps: u32,
    /// Copy the components' logs here when stopping (for a failed CI run).
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// The command to run against the control plane, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where to write the kubeconfig for clients (kubectl, the services, the tests).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Port to listen on (0: any free port; the kubeconfig has the real one).
    #[arg(long, env = "KUBE_SIM_PORT", default_value_t = 0)]
    port: u16,
    /// Number of simulated worker nodes (node-1..node-N).
    #[arg(long, env = "KUBE_SIM_NODES", default_value_t = 3)]
    nodes: usize,
    /// Also simulate a control-plane node (tainted NoSchedule).
    #[arg(long, env = "KUBE_SIM_CONTROL_PLANE_NODE")]
    control_plane_node: bool,
    /// Bind pending pods to Ready nodes.
    #[arg(long, env = "KUBE_SIM_SCHEDULER")]
    scheduler: bool,
    /// Mark scheduled pods Running and Ready.
    #[arg(long, env = "KUBE_SIM_KUBELET")]
    kubelet: bool,
    /// Run the taint eviction controller: pods on NoExecute-tainted nodes are deleted after
    /// their toleration; five refused attempts and a pod stays until the node's taints change.
    #[arg(long, env = "KUBE_SIM_TAINT_EVICTION")]
    taint_eviction: bool,
    /// Run the PV controller: binding, hand-over to external provisioners, protection.
    #[arg(long, env = "KUBE_SIM_PV_BINDER")]
    pv_binder: bool,
    /// How long after heartbeats stop a node goes NotReady (e.g. 1s, 40s).
    #[arg(long, env = "KUBE_SIM_NODE_GRACE", default_value = "1s", value_parser = humantime::parse_duration)]
    node_grace: std::time::Duration,
    /// tolerationSeconds of the default unreachable/not-ready tolerations added to pods.
    #[arg(long, env = "KUBE_SIM_DEFAULT_TOLERATION_SECONDS", default_value_t = 2)]
    default_toleration_seconds: u64,
    /// Pause between two nodes tainted in one zone (10s in Kubernetes).
    #[arg(long, env = "KUBE_SIM_TAINT_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    taint_interval: std::time::Duration,
}

#[derive(Subcommand)]
enum NodeAction {
    /// Stop a node's heartbeats (it goes Ready=Unknown and gets the unreachable taints).
    Fail(NodeArgs),
    /// Resume a node's heartbeats.
    Restore(NodeArgs),
}

#[derive(clap::Args)]
struct NodeArgs {
    /// The node's name.
    name: String,
    /// Kubeconfig of the running simulator.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ballast_runtime::tls::install_crypto_provider();
    ballast_runtime::telemetry::init();
    match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Node { action } => node(action).await,
        Command::Nodes(args) => nodes(args).await,
        Command::ControlPlane(args) => control_plane(args).await,
    }
}

async fn nodes(args: NodesArgs) -> anyhow::Result<()> {
    let NodesArgs {
        kubeconfig,
        count,
        prefix,
        zones,
        zone_prefix,
        heartbeat,
        keep,
    } = args;
    let shutdown = ballast_runtime::shutdown::on_signals();
    let client = ballast_runtime::kubeclient::client(Some(&kubeconfig), None)
        .await
        .with_context(|| format!("failed to connect with {}", kubeconfig.display()))?;
    let opts = kube_sim::kubelets::KubeletOptions {
        heartbeat,
        ..Default::default()
    };
    let kubelets = kube_sim::kubelets::Kubelets::start(client, opts);
    for node in kube_sim::kubelets::workers(&prefix, count, &zone_prefix, zones) {
        kubelets
            .add_node(&node)
            .await
            .with_context(|| format!("failed to register {}", node.name))?;
    }
    println!("{count} simulated kubelets running ({prefix}1..{prefix}{count}); Ctrl-C stops them");
    shutdown.cancelled().await;
    if !keep {
        kubelets
            .remove_all()
            .await
            .context("failed to remove the nodes")?;
    }
    kubelets.stop().await;
    Ok(())
}

async fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let ControlPlaneArgs {
        binaries,
        kubeconfig,
        node_monitor_grace,
        kube_api_qps,
        keep_logs,
        command,
    } = args;
    let signals = ballast_runtime::shutdown::on_signals();
    let mut config = kube_sim::control_plane::ControlPlaneConfig::new(binaries);
    config.node_monitor_grace = node_monitor_grace;
    config.kube_api_qps = kube_api_qps;
    let cp = kube_sim::control_plane::ControlPlane::start(config)
        .await
        .context("failed to start the control plane")?;
    if let Some(path) = &kubeconfig {
        std::fs::copy(cp.kubeconfig_path(), path)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let outcome: anyhow::Result<i32> = match command.split_first() {
        None => {
            println!(
                "control plane at {}; kubeconfig: {}; Ctrl-C stops it",
                cp.url(),
                cp.kubeconfig_path().display()
            );
            signals.cancelled().await;
            Ok(0)
        }
        Some((program, rest)) => {
            let mut child = tokio::process::Command::new(program);
            child.args(rest).envs(cp.env()).kill_on_drop(true);
            let status = tokio::select! {
                s = child.status() => s.with_context(|| format!("failed to run {program}"))?,
                _ = signals.cancelled() => {
                    anyhow::bail!("interrupted")
                }
            };
            Ok(status.code().unwrap_or(1))
        }
    };
    if let Some(dir) = keep_logs {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        for c in kube_sim::control_plane::Component::ALL {
            let name = format!("{}.log", c.binary());
            let _ = std::fs::copy(cp.log_dir().join(&name), dir.join(&name));
        }
    }
    cp.stop();
    // The command's own exit code, so a test run that failed fails this command too.
    match outcome? {
        0 => Ok(()),
        code => std::process::exit(code),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        kubeconfig,
        port,
        nodes,
        control_plane_node,
        scheduler,
        kubelet,
        taint_eviction,
        pv_binder,
        node_grace,
        default_toleration_seconds,
        taint_interval,
    } = args;
    let shutdown = ballast_runtime::shutdown::on_signals();
    let cfg = kube_sim::SimConfig::default()
        .kubeconfig_path(kubeconfig)
        .port(port)
        .nodes(nodes)
        .control_plane_node(control_plane_node)
        .scheduler(scheduler)
        .kubelet(kubelet)
        .taint_eviction(taint_eviction)
        .pv_binder(pv_binder)
        .node_grace(node_grace)
        .default_toleration_seconds(default_toleration_seconds)
        .taint_interval(taint_interval);
    let sim = kube_sim::KubeSim::start(cfg)
        .await
        .context("failed to start kube-sim")?;
    println!(
        "kube-sim serving at {}; kubeconfig: {}",
        sim.url(),
        sim.kubeconfig_path().display()
    );
    shutdown.cancelled().await;
    sim.shutdown().await;
    Ok(())
}

async fn node(action: NodeAction) -> anyhow::Result<()> {
    let (args, value) = match action {
        NodeAction::Fail(a) => (a, serde_json::Value::from("stopped")),
        NodeAction::Restore(a) => (a, serde_json::Value::Null),
    };
    let client = ballast_runtime::kubeclient::client(Some(&args.kubeconfig), None)
        .await
        .context("failed to connect to kube-sim")?;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let patch =
        serde_json::json!({"metadata": {"annotations": {kube_sim::HEARTBEAT_ANNOTATION: value}}});
    nodes
        .patch(
            &args.name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("failed to update node {}", args.name))?;
    println!(
        "node {}: heartbeats {}",
        args.name,
        if value.is_null() {
            "resumed"
        } else {
            "stopped"
        }
    );
    Ok(())
}
