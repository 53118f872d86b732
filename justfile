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

# What CI runs.
ci:
    bash .ci/run

# Build every binary in release mode.
build:
    cargo build --workspace --release

# Run the demo: a simulated cluster, every service, a narrated tour (then stays up).
demo *ARGS:
    cargo run --release -p ballast-demo -- {{ARGS}}

# Benchmarks: eviction-guard admission latency over TLS and HTTP/2 (release build).
bench *ARGS:
    cargo run --release -p eviction-guard --example admission_bench -- {{ARGS}}

# Print the PodManager CRD (deploy/crds/podmanager.yaml holds this output).
crds:
    cargo run -q -p podmanager -- crd

# Re-render deploy/ from kustomize/ (a test fails when deploy/ is stale).
render:
    ./scripts/render

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
