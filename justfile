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
