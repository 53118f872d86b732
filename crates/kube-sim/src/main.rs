//! `kube-sim serve` runs the simulator until Ctrl-C; `kube-sim node fail|restore` stops or
//! resumes a simulated node's heartbeats in a running simulator.

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
    /// Act on a simulated node of a running simulator.
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
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
