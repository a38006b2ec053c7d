# shellcheck shell=bash
# Step "image": the project's image in every node's containerd (nothing can be pulled, so a pod can only use an
# image imported here; use imagePullPolicy IfNotPresent or Never).
#
# The image comes from the local Docker engine: `TORCH_VARIANT=none bash image/build.sh` builds
# shardscore:<version>-none (no torch, the test image), which is also tagged shardscore:<chart appVersion>, the
# chart's default image; both tags are imported (containerd names them docker.io/library/shardscore:...).
# Settings:
#   SHARDSCORE_CLUSTER_IMAGES="ref ..."   Docker images to import (default: the two tags above)
#   SHARDSCORE_CLUSTER_BUILD_IMAGE=0      do not build the image (the step loads what Docker has)
# `bash cluster/cluster.sh load-image REF...` imports freshly rebuilt images into a running cluster.

chart_app_version() { sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}/\1/p' "$REPO_ROOT/helm/shardscore/Chart.yaml"; }
project_version() { sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO_ROOT/job/pyproject.toml" | head -n1; }
IMAGE_BUILD_PID_FILE="$RUN_DIR/image-build.pid"

default_images() {
  if [[ -n "${SHARDSCORE_CLUSTER_IMAGES:-}" ]]; then
    echo "$SHARDSCORE_CLUSTER_IMAGES"
  else
    echo "shardscore:$(chart_app_version) shardscore:$(project_version)-none"
  fi
}

# containerd's name for a Docker reference (docker.io/library/ for single-name images, docker.io/ for others).
containerd_ref() {
  local ref="$1" first="${1%%/*}"
  if [[ "$ref" != */* ]]; then
    echo "docker.io/library/$ref"
  elif [[ "$first" == *.* || "$first" == *:* || "$first" == localhost ]]; then
    echo "$ref"
  else
    echo "docker.io/$ref"
  fi
}

docker_has() { command -v docker >/dev/null 2>&1 && docker image inspect "$1" >/dev/null 2>&1; }

# image_build_start: builds the test image from the checkout in the background while the Go components compile,
# unless the nodes already hold it (a reused cluster). Always, not only when the tag is missing from Docker: a
# tag left by an earlier build would run old code of job/ (seen: an e2e of a changed job ran the image of two
# hours before). Docker's layer cache keeps an unchanged rebuild short. The "image" step waits for it.
image_build_start() {
  [[ -z "${SHARDSCORE_CLUSTER_IMAGES:-}" && "${SHARDSCORE_CLUSTER_BUILD_IMAGE:-1}" == 1 ]] || return 0
  step_image_ok 2>/dev/null && return 0
  if [[ -f "$IMAGE_BUILD_PID_FILE" ]] && [[ -d "/proc/$(cat "$IMAGE_BUILD_PID_FILE")" ]]; then
    return 0  # still building, from an earlier `up`
  fi
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  log "building the project's test image in the background (log: $LOG_DIR/image-build.log)"
  (image_build) >>"$LOG_DIR/image-build.log" 2>&1 9>&- &
  echo $! >"$IMAGE_BUILD_PID_FILE"
}

# image_build: the test image (TORCH_VARIANT=none) from the checkout, also tagged as the chart's default image.
image_build() {
  local tag
  tag="$(cd "$REPO_ROOT" && TORCH_VARIANT=none bash image/build.sh)"
  docker tag "$tag" "shardscore:$(chart_app_version)"
}

# image_build_wait: until the background build is over (it may have been started by an earlier `up` that
# failed later: then it is not our child and `wait` cannot be used, so poll its PID).
image_build_wait() {
  [[ -f "$IMAGE_BUILD_PID_FILE" ]] || return 0
  local pid; pid="$(cat "$IMAGE_BUILD_PID_FILE")"
  if [[ -d "/proc/$pid" ]]; then
    log "waiting for the image build (log: $LOG_DIR/image-build.log)"
    while [[ -d "/proc/$pid" ]]; do sleep 2; done
  fi
  rm -f "$IMAGE_BUILD_PID_FILE"
}

step_image_ok() {
  local node ref
  for node in "${NODES[@]}"; do
    for ref in $(default_images); do
      node_has_image "$node" "$(containerd_ref "$ref")" || return 1
    done
  done
}

step_image_up() {
  image_build_wait
  local refs=() ref
  for ref in $(default_images); do
    if docker_has "$ref"; then
      refs+=("$ref")
    else
      echo "image $ref is not in Docker"
    fi
  done
  if ((${#refs[@]} == 0)); then
    echo "no image to load: build it (TORCH_VARIANT=none bash image/build.sh); build log: $LOG_DIR/image-build.log"
    [[ -f "$LOG_DIR/image-build.log" ]] && tail -n 20 "$LOG_DIR/image-build.log"
    return 1
  fi
  load_images "${refs[@]}"
}

# load_images REF...: one `docker save`, streamed into every node's containerd at once (tee into a FIFO per
# extra node), so a rebuilt image is loaded in about the time of one import.
load_images() {
  local fifo_dir node pids=() fifos=() start=$SECONDS status=0
  fifo_dir="$(mktemp -d)"
  echo "importing $* into ${NODES[*]}"
  for node in "${NODES[@]:1}"; do
    mkfifo "$fifo_dir/$node"
    node_ctr "$node" images import --local - <"$fifo_dir/$node" &
    pids+=($!)
    fifos+=("$fifo_dir/$node")
  done
  docker save "$@" | tee "${fifos[@]}" | node_ctr "${NODES[0]}" images import --local - || status=1
  local pid
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  rm -rf "$fifo_dir"
  ((status == 0)) || { echo "import failed"; return 1; }
  echo "imported in $((SECONDS - start))s"
}
