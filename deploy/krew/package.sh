#!/usr/bin/env bash
# Builds the kubectl-pvc release archives and writes the krew manifest (deploy/krew/pvc.yaml)
# with each archive's URL and sha256. Run it for every release; upload the archives under
# target/krew/ to BASE_URL/VERSION/. `scripts/image --oci-archive target/krew kubectl-pvc`
# builds the linux archive of this machine the same way (`just krew`: that, then `manifest`).
#
# Usage: deploy/krew/package.sh build [RUST_TARGET...]  archive each target (default: all four
#                                                       below) into $ARCHIVES
#        deploy/krew/package.sh manifest                write the manifest from every archive
#                                                       in $ARCHIVES
#        deploy/krew/package.sh [RUST_TARGET...]        both
# Targets and the krew platforms they become:
#   x86_64-unknown-linux-musl   linux/amd64      aarch64-unknown-linux-musl  linux/arm64
#   x86_64-apple-darwin         darwin/amd64     aarch64-apple-darwin        darwin/arm64
# (the -gnu Linux targets work too; musl gives a static binary that runs on any distribution).
# Env:   VERSION   release tag (default: v<crate version>)
#        BASE_URL  where release archives are downloaded from
#                  (default: https://github.com/ballast-dev/ballast/releases/download)
#        BUILD     the build command (default: cargo build); e.g. BUILD="cargo zigbuild" to
#                  cross-compile every target from one Linux machine (cargo-zigbuild and zig
#                  installed, `rustup target add` for each target); or build the darwin
#                  archives natively on macOS, copy all four into $ARCHIVES, then run `manifest`.
#        ARCHIVES  archive directory (default: target/krew)
#        MANIFEST  manifest path (default: deploy/krew/pvc.yaml)
#
# The release profile strips the binaries (Cargo.toml), so no host `strip` is needed, which
# could not read every target's format anyway.
#
# Try the result locally without publishing anything:
#   kubectl krew install --manifest=deploy/krew/pvc.yaml \
#     --archive=target/krew/kubectl-pvc-linux-amd64.tar.gz
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${ARCHIVES:-target/krew}
manifest=${MANIFEST:-deploy/krew/pvc.yaml}
base_url=${BASE_URL:-https://github.com/ballast-dev/ballast/releases/download}
build=${BUILD:-cargo build}
all_targets=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-apple-darwin aarch64-apple-darwin)
all_platforms=("linux amd64" "linux arm64" "darwin amd64" "darwin arm64")

mode=all
case "${1:-}" in
  build|manifest) mode=$1; shift ;;
esac
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")

if [ -z "${VERSION:-}" ]; then
  VERSION=v$(cargo pkgid -p kubectl-pvc | sed 's/.*[#@]//')
fi
version=$VERSION

platform() {
  case "$1" in
    x86_64-unknown-linux-*) echo "linux amd64" ;;
    aarch64-unknown-linux-*) echo "linux arm64" ;;
    x86_64-apple-darwin) echo "darwin amd64" ;;
    aarch64-apple-darwin) echo "darwin arm64" ;;
    *) echo "unsupported target: $1" >&2; exit 2 ;;
  esac
}

mkdir -p "$out"
if [ "$mode" != manifest ]; then
  for target in "${targets[@]}"; do
    read -r os arch < <(platform "$target")
    $build --profile dist --locked -p kubectl-pvc --target "$target"
    stage=$(mktemp -d)
    install -m 0755 "target/$target/dist/kubectl-pvc" "$stage/kubectl-pvc"
    install -m 0644 LICENSE "$stage/LICENSE"
    install -m 0755 deploy/krew/kubectl_complete-pvc "$stage/kubectl_complete-pvc"
    archive="kubectl-pvc-$os-$arch.tar.gz"
    # Fixed owner, order, modes and times so the same binary always gives the same sha256
    # (scripts/image writes the linux archive of this machine the same way).
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" \
      -cf - LICENSE kubectl-pvc kubectl_complete-pvc \
      | gzip -n -9 > "$out/$archive"
    rm -rf "$stage"
    echo "archived $out/$archive"
  done
fi
[ "$mode" = build ] && exit 0

# One platform entry per archive present, in a fixed order.
platforms=""
count=0
for p in "${all_platforms[@]}"; do
  read -r os arch <<< "$p"
  archive="kubectl-pvc-$os-$arch.tar.gz"
  if [ ! -f "$out/$archive" ]; then
    echo "note: no $out/$archive: the manifest leaves $os/$arch out" >&2
    continue
  fi
  sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
  count=$((count + 1))
  platforms+="  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $base_url/$version/$archive
    sha256: $sha
    bin: kubectl-pvc
"
done
[ "$count" -gt 0 ] || { echo "no archives in $out" >&2; exit 1; }

cat > "$manifest" <<MANIFEST
# Written by deploy/krew/package.sh for $version; do not edit by hand.
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: pvc
spec:
  version: $version
  homepage: https://github.com/ballast-dev/ballast/tree/main/crates/kubectl-pvc
  shortDescription: Show where a PersistentVolumeClaim is stuck
  description: |
    Shows how far a PersistentVolumeClaim got through Provision, Bind, Attach and
    Mount, from the evidence in the cluster: its PersistentVolume and the
    provisioner's events, the claim's phase and binding events, VolumeAttachments
    for volumes that need attaching, and the state and mount events of every pod
    that uses it. Durations come from the pvc-timing annotation when present.

      kubectl pvc inspect data -n shop     # desired pods and nodes, then each phase
      kubectl pvc ls -n shop -o wide       # claims with status, class, capacity, age
      kubectl pvc ls -p web-0 -n shop      # the claims one pod mounts

      kubectl pvc timing data -n shop      # the claim's phase history as a timeline
      kubectl pvc timing -A                # time to Bound per storage class

    Exit code 0 means every phase succeeded, 3 that one is still pending, 4 that
    one failed, so scripts can wait on a claim.
  caveats: |
    Shell completion of claim names, pods and namespaces (kubectl 1.26+, with
    \`kubectl completion bash|zsh|fish\` set up): link the completion helper
    next to the plugin,

      ln -sf kubectl-pvc "\${KREW_ROOT:-\$HOME/.krew}/bin/kubectl_complete-pvc"
  platforms:
$platforms
MANIFEST
sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$manifest"
echo "wrote $manifest for $version ($count platform(s)); archives in $out/"
