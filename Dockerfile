# syntax=docker/dockerfile:1.7
# One multi-stage build for every Ballast service, for builders with a Docker engine and
# registry access:
#   docker build --build-arg SERVICE=eviction-guard --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/ballast-dev/eviction-guard:0.1.0 .
# SERVICE: eviction-guard, pvc-timing, provisioner or podmanager. Without a Docker engine or
# registry, `scripts/image SERVICE` builds the same image with buildah: the same static binary,
# the same root (both run `scripts/image rootfs`), entrypoint, user, ports and labels.
#
# The build image is pinned by tag only; pin it by digest for reproducible builds
# (`docker buildx imagetools inspect rust:1.95-slim-bookworm` prints it). The runtime stage is
# `scratch`: the binary is static and the image holds nothing else to patch.

ARG RUST_VERSION=1.95
ARG SERVICE

FROM rust:${RUST_VERSION}-slim-bookworm AS build
ARG SERVICE
WORKDIR /src
# The registry and target/ are BuildKit cache mounts: after a code change only the workspace's
# own crates recompile; dependencies come from the cache.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY crates crates
COPY tests tests
COPY proto proto
COPY scripts/image scripts/image
# Static glibc (crt-static): the binary needs no shared library, so the image needs no libc.
# --target keeps build scripts and proc macros dynamic.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    test -n "${SERVICE}" || { echo "set --build-arg SERVICE=<service>" >&2; exit 1; } \
    && triple="$(uname -m)-unknown-linux-gnu" \
    && RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
       cargo build --profile dist --locked --target "$triple" -p "${SERVICE}" --bin "${SERVICE}" \
    && scripts/image rootfs "${SERVICE}" "target/$triple/dist/${SERVICE}" /rootfs

# Empty root: the binary, CA certificates, passwd/group with the non-root user 65532,
# nsswitch.conf, /tmp.
FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=build /rootfs/ /
COPY --from=build --chown=65532:65532 /rootfs/home/nonroot /home/nonroot
USER 65532:65532
WORKDIR /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
LABEL org.opencontainers.image.source="https://github.com/ballast-dev/ballast" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# One stage per service: its ports (admin 8080, webhook HTTPS 8443, gRPC 9090) and entrypoint.
FROM runtime AS eviction-guard
LABEL org.opencontainers.image.title="eviction-guard"
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/eviction-guard"]

FROM runtime AS pvc-timing
LABEL org.opencontainers.image.title="pvc-timing"
EXPOSE 8080 8443
ENTRYPOINT ["/usr/local/bin/pvc-timing"]

FROM runtime AS provisioner
LABEL org.opencontainers.image.title="provisioner"
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/provisioner"]

FROM runtime AS podmanager
LABEL org.opencontainers.image.title="podmanager"
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/podmanager"]

FROM ${SERVICE}
