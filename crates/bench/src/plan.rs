//! How big each run is: the full suite, `--quick` (a minute or two, for a look), `--smoke` (the
//! transport floor only, seconds, for the test that keeps this crate from rotting).

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Plan {
    pub name: &'static str,
    /// Only what needs no other binary (the null webhook).
    pub smoke: bool,
    /// Length of each saturation and fixed-rate run.
    pub load: Duration,
    pub rates: Vec<f64>,
    pub serial: usize,
    /// Concurrent streams at saturation, over `connections` connections.
    pub streams: usize,
    pub connections: usize,
    /// Saturation rounds of the admission area (each: the floor and the webhook back to back,
    /// for every review).
    pub rounds: usize,
    pub storm_reps: usize,
    pub claims: Vec<usize>,
    pub timing_claims: usize,
    pub podmanagers: usize,
    pub guard_nodes: Vec<usize>,
    pub kubectl_objects: usize,
    /// Longest wait for a controller run to converge.
    pub converge_limit: Duration,
    /// Bound claims pvc-timing finds when it starts (the backfill), then deleted.
    pub backfill_claims: usize,
    /// The environments the backfill runs in: a label and the variables set.
    pub backfill_variants: Vec<(&'static str, Vec<(&'static str, &'static str)>)>,
    /// How long pvc-timing is left idle after the deletions before a last reading (zero: none).
    pub backfill_linger: Duration,
    /// Claims of each run on the real control plane.
    pub real_claims: usize,
    /// Longest wait for a run on the real control plane to converge.
    pub real_limit: Duration,
    /// Client QPS of the real controller manager and scheduler (burst twice that).
    pub real_kube_api_qps: u32,
    /// The runs of the control-plane area (`--real-run`; all by default).
    pub real_runs: Vec<RealRun>,
}

/// One run of the control-plane area.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RealRun {
    /// NFS claims to Bound through the real PV controller and the provisioner.
    Claims,
    /// The same with pvc-timing.
    Timing,
    /// PodManagers × 3 pods converged.
    Podmanagers,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            name: "full",
            smoke: false,
            load: Duration::from_secs(4),
            rates: vec![1000.0, 5000.0, 10000.0],
            serial: 2000,
            streams: 128,
            connections: 4,
            rounds: 5,
            storm_reps: 100,
            claims: vec![1000, 10000],
            timing_claims: 10000,
            podmanagers: 1000,
            guard_nodes: vec![1000, 5000],
            kubectl_objects: 5000,
            converge_limit: Duration::from_secs(120),
            backfill_claims: 1000,
            backfill_variants: vec![("default", vec![])],
            backfill_linger: Duration::from_secs(30),
            real_claims: 10000,
            real_limit: Duration::from_secs(900),
            real_kube_api_qps: 200,
            real_runs: vec![RealRun::Claims, RealRun::Timing, RealRun::Podmanagers],
        }
    }

    pub fn quick() -> Plan {
        Plan {
            name: "quick",
            load: Duration::from_millis(700),
            rounds: 2,
            serial: 300,
            storm_reps: 5,
            claims: vec![200],
            timing_claims: 200,
            podmanagers: 50,
            guard_nodes: vec![200],
            kubectl_objects: 200,
            converge_limit: Duration::from_secs(60),
            backfill_claims: 200,
            real_claims: 200,
            real_limit: Duration::from_secs(180),
            ..Plan::full()
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            name: "smoke",
            smoke: true,
            load: Duration::from_millis(300),
            rates: vec![1000.0],
            serial: 100,
            streams: 16,
            connections: 2,
            rounds: 1,
            ..Plan::quick()
        }
    }
}
