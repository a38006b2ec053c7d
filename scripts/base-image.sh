#!/usr/bin/env bash
# Build a local Debian bookworm base image with debootstrap, for machines that cannot pull from any registry.
#
#   bash scripts/base-image.sh [TAG]        # default tag: shardscore-base:bookworm
#
# Idempotent: does nothing when the tag already exists (delete it with `docker rmi` to rebuild).
# Needs root (debootstrap) and a running engine (scripts/docker-engine.sh). The image has Debian's python3 (3.11),
# python3-venv, pip, ca-certificates, bash and wget: the same things image/Dockerfile expects of python:3.11-slim.
set -euo pipefail

TAG="${1:-${BASE_IMAGE:-shardscore-base:bookworm}}"
SUITE="${BASE_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,python3-pip,ca-certificates,bash,wget"

log() { echo "[base-image] $*" >&2; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
  log "$TAG exists ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
  exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
  log "building $TAG needs root (debootstrap); or pass BASE_IMAGE=python:3.11-slim-bookworm where a registry is reachable"
  exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  bash "$(dirname "$0")/apt-install.sh" debootstrap
fi

work="$(mktemp -d /var/tmp/shardscore-rootfs.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

log "debootstrap $SUITE into $rootfs (about a minute)"
start=$SECONDS
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
  tail -n 40 "$work/debootstrap.log" >&2
  [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 40 "$rootfs/debootstrap/debootstrap.log" >&2
  exit 1
fi

# Trim what an image does not need (apt lists and caches, docs, man pages).
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/tmp/* "$rootfs"/var/log/*.log
# Same apt source as the public Debian images, so `apt-get update` works inside builds.
echo "deb $MIRROR $SUITE main" > "$rootfs/etc/apt/sources.list"

log "importing $TAG"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  - "$TAG" >/dev/null
log "$TAG built in $((SECONDS - start))s ($(docker image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
