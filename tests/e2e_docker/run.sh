#!/usr/bin/env bash
# `make e2e-docker`: the shardscore image as Ray head, workers and RayJob submitter on a real Docker engine.
#
# 1. a Docker engine (scripts/docker-engine.sh installs and starts one on a bare Debian machine),
# 2. the image (image/build.sh: local debootstrap base + host wheelhouse, no registry needed),
# 3. a small S3 server image (moto) on the same base image,
# 4. pytest -m docker tests/e2e_docker: the containers, the sample data, the submitter, the assertions.
#
# The Ray containers run the image the chart renders (image.repository:tag, i.e. shardscore:<appVersion>), which
# image/build.sh tags. Env: SHARDSCORE_IMAGE - test this image instead (passed to the chart with --set);
# SHARDSCORE_E2E_SKIP_BUILD=1 - do not (re)build the image (it must exist). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "[e2e-docker] $*" >&2; }
# pip download, without the warnings a machine's pip.conf may add about local index folders it lacks.
pip_download() {
  "$PYTHON" -m pip download "$@" 2> >(grep -v -e 'is ignored: it is neither a file nor a directory' >&2)
}
start=$SECONDS
PYTHON="${PYTHON:-python3}"
export SHARDSCORE_S3_IMAGE="${SHARDSCORE_S3_IMAGE:-shardscore-s3:test}"

bash scripts/docker-engine.sh

if [[ "${SHARDSCORE_E2E_SKIP_BUILD:-0}" == 1 ]]; then
  image="${SHARDSCORE_IMAGE:-shardscore:$(sed -n 's/^version *= *"\(.*\)"/\1/p' job/pyproject.toml | head -n1)}"
  docker image inspect "$image" >/dev/null
else
  # Test images need no torch (TORCH_VARIANT=none): PyTorch's own CPU index cannot be reached from every machine,
  # and nothing here runs torch inside a container. The chart is told to render the tag that was built.
  image="$(TORCH_VARIANT="${TORCH_VARIANT:-none}" bash image/build.sh | tail -n1)"
  [[ -z "${SHARDSCORE_IMAGE:-}" ]] || image="$SHARDSCORE_IMAGE"
  export SHARDSCORE_IMAGE="$image"
fi
log "image $image ready after $((SECONDS - start))s"

# The S3 server image: moto[server] at the version pinned in requirements-dev.lock, from a host wheelhouse.
moto_pin="$(grep -E '^moto(\[[a-z,]*\])?==' requirements-dev.lock | head -n1)"
moto_pin="${moto_pin:-moto[server]}"
[[ "$moto_pin" == *"[server]"* ]] || moto_pin="moto[server]${moto_pin#moto}"
wh=.tools/wheelhouse-s3
base="${BASE_IMAGE:-shardscore-base:bookworm}"
[[ "$base" != shardscore-base:* ]] || bash scripts/base-image.sh "$base"
base_id="$(docker image inspect --format '{{.Id}}' "$base" 2>/dev/null || echo "$base")"
want="$moto_pin $base_id"
have="$(docker image inspect --format '{{index .Config.Labels "io.shardscore.e2e.key"}}' "$SHARDSCORE_S3_IMAGE" 2>/dev/null || true)"
if [[ "$have" != "$want" ]]; then
  log "building $SHARDSCORE_S3_IMAGE ($moto_pin)"
  mkdir -p "$wh"
  echo "$moto_pin" > "$wh/requirements.txt"
  platforms=()
  for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
  pip_download -q --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$wh" -r "$wh/requirements.txt"
  if ! DOCKER_BUILDKIT=0 docker build -q -f tests/e2e_docker/s3.Dockerfile --build-arg BASE_IMAGE="$base" \
      --label "io.shardscore.e2e.key=$want" -t "$SHARDSCORE_S3_IMAGE" "$wh" > .tools/s3-image-build.log 2>&1; then
    cat .tools/s3-image-build.log >&2
    log "building $SHARDSCORE_S3_IMAGE failed"
    exit 1
  fi
fi
log "images ready after $((SECONDS - start))s; running the tests"

# pytest's summary line is the last line of the output (CI reads it).
exec "$PYTHON" -m pytest tests/e2e_docker -m docker -p no:cacheprovider "$@"
