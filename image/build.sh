#!/usr/bin/env bash
# Build the shardscore image (`make image`).
#
# Env (all optional):
#   BASE_IMAGE     base image (default: shardscore-base:bookworm, built locally with debootstrap when missing;
#                  python:3.11-slim-bookworm or any other Debian-like python 3.11 image works where it can be pulled)
#   TORCH_VARIANT  cpu (default) | cu128 (GPU image) | none (no torch) | any other PyTorch wheel index name
#   TORCH_VERSION  default 2.13.0
#   TORCH_INDEX_URL  default https://download.pytorch.org/whl/$TORCH_VARIANT
#   IMAGE_NAME     default shardscore
#   IMAGE_TAG      default <version from job/pyproject.toml>, plus -<variant> for variants other than cpu
#   WHEELHOUSE     1 (default): download all wheels on the host first (image/wheelhouse.sh), so the build needs no
#                  network; 0: let pip inside the build use the package index
#   DOCKER_BUILD_ARGS  more `docker build` arguments
# The image is tagged IMAGE_NAME:IMAGE_TAG and, for the cpu variant, IMAGE_NAME:latest. Progress goes to stderr;
# the only line on stdout is the tag built.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[image] $*" >&2; }
start=$SECONDS

BASE_IMAGE="${BASE_IMAGE:-shardscore-base:bookworm}"
TORCH_VARIANT="${TORCH_VARIANT:-cpu}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-}"
IMAGE_NAME="${IMAGE_NAME:-shardscore}"
WHEELHOUSE="${WHEELHOUSE:-1}"
VERSION="$(sed -n 's/^version *= *"\(.*\)"/\1/p' job/pyproject.toml | head -n1)"
if [[ -z "${IMAGE_TAG:-}" ]]; then
  IMAGE_TAG="$VERSION"
  [[ "$TORCH_VARIANT" == cpu ]] || IMAGE_TAG="$VERSION-$TORCH_VARIANT"
fi

# 1. An engine.
bash scripts/docker-engine.sh

# 2. The base image: built locally when it is ours, pulled (by docker build) otherwise.
if [[ "$BASE_IMAGE" == shardscore-base:* ]]; then
  bash scripts/base-image.sh "$BASE_IMAGE"
fi

# 3. The wheels, downloaded on the host (the build container may not reach the package index or trust its TLS).
if [[ "$WHEELHOUSE" == 1 ]]; then
  TORCH_VARIANT="$TORCH_VARIANT" TORCH_VERSION="$TORCH_VERSION" TORCH_INDEX_URL="$TORCH_INDEX_URL" \
    bash image/wheelhouse.sh image/.wheelhouse
fi

# 4. The image. The legacy builder works with every engine and client version here (no buildx plugin needed).
revision="$(git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)"
if [[ "$revision" != unknown ]] && [[ -n "$(git status --porcelain 2>/dev/null | head -n1)" ]]; then
  revision="$revision-dirty"
fi
# created: SOURCE_DATE_EPOCH, else the commit time of a clean checkout (so an unchanged rebuild is the same image),
# else now.
if [[ -n "${SOURCE_DATE_EPOCH:-}" ]]; then
  created="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)"
elif [[ "$revision" != unknown && "$revision" != *-dirty ]]; then
  created="$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ)"
else
  created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fi
tags=(-t "$IMAGE_NAME:$IMAGE_TAG")
[[ "$TORCH_VARIANT" == cpu ]] && tags+=(-t "$IMAGE_NAME:latest")

log "building $IMAGE_NAME:$IMAGE_TAG (base $BASE_IMAGE, torch $TORCH_VARIANT)"
set +e
# shellcheck disable=SC2086
DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}" docker build \
  -f image/Dockerfile "${tags[@]}" \
  --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg TORCH_VARIANT="$TORCH_VARIANT" \
  --build-arg TORCH_VERSION="$TORCH_VERSION" \
  --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
  --build-arg WHEELHOUSE="$([[ "$WHEELHOUSE" == 1 ]] && echo auto || echo 0)" \
  --build-arg VERSION="$VERSION" \
  --build-arg REVISION="$revision" \
  --build-arg CREATED="$created" \
  ${DOCKER_BUILD_ARGS:-} \
  . 2>&1 | grep --line-buffered -v -e 'legacy builder is deprecated' -e 'BuildKit is currently disabled' \
              -e 'Install the buildx component' -e 'docs.docker.com/go/buildx' -e '^ *environment-variable\.$' >&2
status="${PIPESTATUS[0]}"
set -e
if [[ "$status" != 0 ]]; then
  log "docker build failed ($status)"
  exit "$status"
fi

docker image ls "$IMAGE_NAME" >&2
log "built $IMAGE_NAME:$IMAGE_TAG in $((SECONDS - start))s"
echo "$IMAGE_NAME:$IMAGE_TAG"
