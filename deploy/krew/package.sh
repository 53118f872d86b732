#!/usr/bin/env bash
# Builds the kubectl-pvc release archives and writes deploy/krew/pvc.yaml, the krew manifest,
# with each archive's URL and sha256. Run it for every release; upload the archives under
# target/krew/ to BASE_URL/VERSION/.
#
# Usage: deploy/krew/package.sh [RUST_TARGET...]      (default: the host's target)
# Env:   VERSION   release tag (default: v<crate version>)
#        BASE_URL  where release archives are downloaded from
#                  (default: https://github.com/ballast-dev/ballast/releases/download)
#
# Try the result locally without publishing anything:
#   kubectl krew install --manifest=deploy/krew/pvc.yaml \
#     --archive=target/krew/kubectl-pvc-linux-amd64.tar.gz
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
crate_version=$(cargo pkgid -p kubectl-pvc | sed 's/.*[#@]//')
version=${VERSION:-v$crate_version}
base_url=${BASE_URL:-https://github.com/ballast-dev/ballast/releases/download}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=("$(rustc -vV | sed -n 's/^host: //p')")
fi

platform() {
  case "$1" in
    x86_64-unknown-linux-*) echo "linux amd64" ;;
    aarch64-unknown-linux-*) echo "linux arm64" ;;
    x86_64-apple-darwin) echo "darwin amd64" ;;
    aarch64-apple-darwin) echo "darwin arm64" ;;
    *) echo "unsupported target: $1" >&2; exit 2 ;;
  esac
}

out=target/krew
mkdir -p "$out"
platforms=""
for target in "${targets[@]}"; do
  read -r os arch < <(platform "$target")
  cargo build --release --locked -p kubectl-pvc --target "$target"
  stage=$(mktemp -d)
  cp "target/$target/release/kubectl-pvc" "$stage/"
  # Debug symbols are two thirds of the file; a host strip cannot read every target's format.
  strip "$stage/kubectl-pvc" 2>/dev/null || echo "note: kubectl-pvc for $target left unstripped" >&2
  archive="kubectl-pvc-$os-$arch.tar.gz"
  # Fixed owner, order and times so the same binary always gives the same sha256.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -cf - kubectl-pvc \
    | gzip -n -9 > "$out/$archive"
  rm -rf "$stage"
  sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
  platforms+="  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $base_url/$version/$archive
    sha256: $sha
    bin: kubectl-pvc
"
done

cat > deploy/krew/pvc.yaml <<MANIFEST
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

    Exit code 0 means every phase succeeded, 3 that one is still pending, 4 that
    one failed, so scripts can wait on a claim.
  platforms:
$platforms
MANIFEST
sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' deploy/krew/pvc.yaml
echo "wrote deploy/krew/pvc.yaml for $version (${#targets[@]} platform(s)); archives in $out/"
