# Everyday commands. `just` lists them. Each recipe is a plain cargo/kubectl command underneath.

default:
    @just --list

# Format the workspace.
fmt:
    cargo fmt --all

# Lint like CI does.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Every test: unit, in-process servers, end-to-end on kube-sim.
test *ARGS:
    ./scripts/test {{ARGS}}

# The end-to-end scenarios only (on kube-sim, or the cluster E2E_KUBECONFIG points at).
e2e *ARGS:
    cargo test -p ballast-e2e {{ARGS}}
    cargo test -p kubectl-pvc --test kubectl_plugin {{ARGS}}

# The end-to-end scenarios on a real control plane from E2E_K8S_BINARIES (or target/k8s).
e2e-real *ARGS:
    cargo build -p kube-sim --bin kube-sim
    ./target/debug/kube-sim control-plane --binaries "${E2E_K8S_BINARIES:-target/k8s}" -- cargo nextest run --test-threads 6 -p ballast-e2e -p kubectl-pvc {{ARGS}}

# What CI runs.
ci:
    bash .ci/run

# Build every binary in release mode.
build:
    cargo build --workspace --release

# Run the demo: a simulated cluster, every service, a narrated tour (then stays up).
demo *ARGS:
    cargo run --release -p ballast-demo -- {{ARGS}}

# Property tests with a large budget: `just fuzz` runs 10^6 cases per target, `just fuzz 1000`
# fewer; extra arguments go to cargo (`just fuzz 1000000 --release`).
fuzz *ARGS:
    ./scripts/fuzz {{ARGS}}

# The benchmark suite: the binaries that ship (static, `dist` profile, each crate built alone, as
# `scripts/image` builds them) run as black boxes, results into BENCHMARKS.md (about 17 min on 2
# cores, 13 more for the control-plane area when target/k8s holds Kubernetes binaries).
# `just bench --quick` for a look, `just bench --area memory` for one area.
bench *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --profile dist -p kube-sim -p ballast-bench --bin kube-sim --bin ballast-bench
    shipped=$(scripts/image --binaries-only eviction-guard pvc-timing provisioner podmanager kubectl-pvc)
    mkdir -p target/bench-dist
    ln -sf "$PWD/target/dist/kube-sim" target/bench-dist/
    for b in eviction-guard pvc-timing provisioner podmanager kubectl-pvc; do ln -sf "$shipped/$b" target/bench-dist/; done
    ./target/dist/ballast-bench --bin-dir target/bench-dist {{ARGS}}

# eviction-guard admission latency in-process over TLS and HTTP/2 (dist profile).
bench-admission-inproc *ARGS:
    cargo run --profile dist -p eviction-guard --example admission_bench -- {{ARGS}}

# Provisioner benchmark: CLAIMS NFS claims at once on kube-sim, last create to last Bound, and
# the provisioner's RSS (run as its own process).
bench-provisioner CLAIMS="10000":
    cargo build --profile dist -p provisioner --bin provisioner --example provision_bench
    ./target/dist/examples/provision_bench {{CLAIMS}} ./target/dist/provisioner

# Print the PodManager CRD (deploy/crds/podmanager.yaml holds this output).
crds:
    cargo run -q -p podmanager -- crd

# Re-render deploy/ from kustomize/ (a test fails when deploy/ is stale).
render:
    ./scripts/render

# Rewrite the Grafana dashboards (kustomize/*/monitoring/*.json) from tests/dashboards.rs (a
# test fails when they are stale).
dashboards:
    DASHBOARDS_WRITE=1 cargo test -p ballast-e2e --test manifests dashboard_files_equal_a_fresh_generation

# Install what the dashboards' schema check needs (Grafana's published types and TypeScript)
# into target/grafana-schema, as CI does.
grafana-schema:
    npm install --prefix target/grafana-schema --no-audit --no-fund typescript@5.9.3 @grafana/schema@13.2.3

# The krew archive of kubectl-pvc (static build, with its completion helper) and the krew
# manifest with that archive's sha256.
krew:
    ./scripts/image --oci-archive target/krew kubectl-pvc
    ARCHIVES=target/krew deploy/krew/package.sh manifest

# Install one component into the current cluster, e.g. `just deploy eviction-guard`.
deploy COMPONENT:
    kubectl apply -k kustomize/{{COMPONENT}}

# Build service images with buildah, offline (static binaries, no base image), e.g.
# `just image eviction-guard`, `just image --oci-archive target/images podmanager`.
image +ARGS:
    ./scripts/image {{ARGS}}

# Build every service image and kubectl-pvc's krew archive, with OCI archives in target/images.
images:
    ./scripts/image --oci-archive target/images all kubectl-pvc
