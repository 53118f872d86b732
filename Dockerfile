# syntax=docker/dockerfile:1.7
# One multi-stage build for every Ballast service:
#   docker build --build-arg SERVICE=eviction-guard -t ballast/eviction-guard .
# SERVICE is a crate folder under crates/: eviction-guard, pvc-timing, provisioner, podmanager,
# kubectl-pvc, kube-sim.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG SERVICE
WORKDIR /src
# The registry and target/ are BuildKit cache mounts: after a code change only the workspace's
# own crates recompile; dependencies come from the cache.
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY tests tests
COPY proto proto
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    test -n "${SERVICE}" || { echo "set --build-arg SERVICE=<crate>" >&2; exit 1; } \
    && cargo build --release --locked -p "${SERVICE}" --bin "${SERVICE}" \
    && install -D "target/release/${SERVICE}" "/out/${SERVICE}"

# Minimal runtime: no shell, no package manager, non-root (uid 65532).
FROM gcr.io/distroless/cc-debian12:nonroot
ARG SERVICE
COPY --from=build /out/${SERVICE} /usr/local/bin/service
USER 65532:65532
# admin (/healthz, /readyz, /metrics), webhook HTTPS, gRPC control service
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/service"]
