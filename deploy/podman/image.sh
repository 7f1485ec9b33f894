#!/usr/bin/env bash
# Builds the CPU image with podman, from a Debian 12 base made here: no registry is needed.
#   deploy/podman/image.sh [TAG]      (default localhost/seqboat-server:cpu; make image)
# The base is debootstrapped from the Debian mirror this machine's apt uses, imported once as
# localhost/seqboat-base:bookworm and tagged as the debian:12 and debian:12-slim that
# deploy/Dockerfile.cpu starts from.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tag="${1:-localhost/seqboat-server:cpu}"
export CONTAINERS_CONF="$root/deploy/podman/containers.conf"
base=localhost/seqboat-base:bookworm

# The mirror of the host's own Debian sources (deb822 or one-line format).
mirror() {
  local uri
  uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -v -e security -e '-updates' | head -n 1 || true)
  if [ -z "$uri" ]; then
    uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\)[[:space:]]\+bookworm[[:space:]].*/\2/p' \
          /etc/apt/sources.list 2>/dev/null | head -n 1 || true)
  fi
  [ -n "$uri" ] || { echo "image.sh: no Debian mirror found in /etc/apt/sources.list(.d)" >&2; exit 1; }
  echo "$uri"
}

if ! podman image exists "$base"; then
  rootfs=$(mktemp -d /tmp/seqboat-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  url=$(mirror)
  echo "image.sh: debootstrap bookworm (minbase) from $url"
  debootstrap --variant=minbase bookworm "$rootfs" "$url" > "$rootfs.log" 2>&1 ||
    { tail -n 20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # Leave out what a container needs not: apt's downloaded lists and packages.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$base"
fi
podman tag "$base" docker.io/library/debian:12 docker.io/library/debian:12-slim
podman build --pull=never -f "$root/deploy/Dockerfile.cpu" -t "$tag" "$root"
podman image inspect "$tag" --format 'image.sh: built {{.Id}} ({{.Size}} bytes)'
