#!/usr/bin/env bash
# The local Kubernetes cluster with the KubeRay operator (`make cluster`, `make cluster-down`).
#
#   bash cluster/cluster.sh up            # build (cached) and start everything; last stdout line: KUBECONFIG=<path>
#   bash cluster/cluster.sh build         # only what `up` builds and caches (packages, components, test image)
#   bash cluster/cluster.sh down          # stop what `up` started, unmount, remove its network and state
#   bash cluster/cluster.sh status        # each step's health
#   bash cluster/cluster.sh load-image REF...   # import Docker images into every node (after a rebuild)
#   bash cluster/cluster.sh env           # KUBECONFIG=... and KUBECTL=... (the cluster's own kubectl) of a running
#                                         # cluster, as shell assignments: eval "$(bash cluster/cluster.sh env)"
#
# One step per component, in dependency order (Kubernetes the Hard Way): each step is skipped when its health
# check passes (so a second `up` reuses a running cluster within seconds), logs to $STATE_DIR/logs/step-NAME.log,
# and must pass its health check before the next one starts. docs/local-cluster.md has the whole story.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
for f in "$CLUSTER_SRC"/steps/*.sh; do
  # shellcheck source=/dev/null
  source "$f"
done

# Per-node steps: step_<kind>_<node>_{ok,up} call the <kind>_{ok,up} functions with the node.
for node in "${NODES[@]}"; do
  for kind in containerd images kubelet node kube_proxy network_policy; do
    eval "step_${kind}_${node}_ok() { ${kind}_ok $node; }; step_${kind}_${node}_up() { ${kind}_up $node; }"
  done
done

cmd_up() {
  local start=$SECONDS node
  preflight
  clear_stale_state
  mkdir -p "$STATE_DIR" "$LOG_DIR" "$RUN_DIR"
  run_step packages 600
  image_build_start
  run_step build 3600
  run_step pki
  run_step network
  run_step etcd
  run_step kube-apiserver 120
  run_step rbac
  run_step kube-controller-manager
  run_step kube-scheduler
  for node in "${NODES[@]}"; do run_step "containerd-$node"; done
  for node in "${NODES[@]}"; do run_step "images-$node"; done
  for node in "${NODES[@]}"; do run_step "kubelet-$node" 120; done
  for node in "${NODES[@]}"; do run_step "node-$node"; done
  for node in "${NODES[@]}"; do run_step "kube-proxy-$node"; done
  for node in "${NODES[@]}"; do run_step "network-policy-$node" 120; done
  run_step dns 180
  run_step kuberay-crds
  run_step kuberay-operator
  run_step image 1800
  log "cluster up in $((SECONDS - start))s: nodes $(kctl get nodes -o name | sed 's|node/||' | tr '\n' ' ')"
  log "host address reachable from pods: $HOST_IP; logs: $LOG_DIR"
  echo "KUBECONFIG=$KUBECONFIG_PATH"
}

# cmd_build: what `up` builds and keeps (the Debian packages, the components in the build cache, the test image in
# Docker), without starting anything, so that a later `up` takes a minute. The components compile at the lowest CPU
# priority: CI runs this beside `make test`, whose idle time it fills (.ci/run).
cmd_build() {
  [[ "$(id -u)" == 0 ]] || die "cluster.sh build needs root (apt-get, the Docker engine)"
  local start=$SECONDS image_pid rc=0
  run_step packages 600
  if [[ -z "${SHARDSCORE_CLUSTER_IMAGES:-}" && "${SHARDSCORE_CLUSTER_BUILD_IMAGE:-1}" == 1 ]]; then
    mkdir -p "$LOG_DIR"
    log "building the project's test image in the background (log: $LOG_DIR/image-build.log)"
    (image_build) >>"$LOG_DIR/image-build.log" 2>&1 9>&- &
    image_pid=$!
  fi
  nice -n 19 bash "$CLUSTER_SRC/build.sh" all || rc=$?
  if [[ -n "${image_pid:-}" ]] && ! wait "$image_pid"; then
    log "the image build failed; last lines of $LOG_DIR/image-build.log:"
    tail -n 25 "$LOG_DIR/image-build.log" >&2
    rc=1
  fi
  ((rc == 0)) || die "cluster.sh build failed after $((SECONDS - start))s"
  log "built in $((SECONDS - start))s: the components ($CACHE_DIR/bin)${image_pid:+ and the test image}"
}

cmd_down() {
  local node
  [[ "$(id -u)" == 0 ]] || die "cluster-down needs root"
  stop_daemon kuberay-operator
  for node in "${NODES[@]}"; do
    stop_daemon "kube-router-$node"
    stop_daemon "kube-proxy-$node"
    stop_daemon "kubelet-$node"
  done
  for node in "${NODES[@]}"; do containerd_node_down "$node"; done
  stop_daemon kube-scheduler
  stop_daemon kube-controller-manager
  stop_daemon kube-apiserver
  stop_daemon etcd
  image_build_stop
  for node in "${NODES[@]}"; do node_cgroups_down "$node"; done
  unmount_state
  network_down
  restore_kernel_tunables
  remove_container_log_links
  rm -rf "$STATE_DIR"
  log "cluster down (build cache kept: $CACHE_DIR)"
}

# clear_stale_state: state of a cluster none of whose daemons runs any more (the machine's processes were ended,
# as between a session and its CI run) is removed with `down` first, so `up` starts clean instead of reviving
# old pods from etcd. A cluster with some daemons still up is resumed instead: the steps restart what is down.
clear_stale_state() {
  [[ -d "$RUN_DIR" ]] || return 0
  local f
  for f in "$RUN_DIR"/*.pid; do
    [[ -f "$f" ]] || continue
    daemon_running "$(basename "$f" .pid)" && return 0
  done
  log "found the state of a cluster that no longer runs ($STATE_DIR); removing it first"
  cmd_down
}

cmd_status() {
  local s node all_ok=0
  local steps=(pki network etcd kube-apiserver rbac kube-controller-manager kube-scheduler)
  for node in "${NODES[@]}"; do steps+=("containerd-$node" "images-$node" "kubelet-$node" "node-$node" "kube-proxy-$node" "network-policy-$node"); done
  steps+=(dns kuberay-crds kuberay-operator image)
  for s in "${steps[@]}"; do
    if "step_${s//-/_}_ok" >/dev/null 2>&1; then
      echo "ok    $s"
    else
      echo "DOWN  $s   (log: $LOG_DIR/step-$s.log)"
      all_ok=1
    fi
  done
  return "$all_ok"
}

cmd_env() {
  step_kube_apiserver_ok >/dev/null 2>&1 || die "no local cluster is up (start one with: make cluster)"
  echo "KUBECONFIG=$KUBECONFIG_PATH"
  echo "KUBECTL=$KUBECTL"
}

cmd_load_image() {
  (($#)) || die "usage: cluster.sh load-image DOCKER_IMAGE..."
  local node
  for node in "${NODES[@]}"; do containerd_ok "$node" || die "containerd of node $node is not up (make cluster)"; done
  load_images "$@" >&2
}

# image_build_stop: a background image build started by `up` (only ours, by its pidfile).
image_build_stop() {
  [[ -f "$IMAGE_BUILD_PID_FILE" ]] || return 0
  local pid; pid="$(cat "$IMAGE_BUILD_PID_FILE")"
  [[ -d "/proc/$pid" ]] && kill "$pid" 2>/dev/null || true
  rm -f "$IMAGE_BUILD_PID_FILE"
}

# node_cgroups_down NODE: what is left under the kubelet's cgroup root /ssc-NODE (in every v1 hierarchy, or in
# the v2 tree): processes are killed (only ours: they are in our cgroups), then the cgroups removed deepest first.
node_cgroups_down() {
  local node="$1" root
  for root in /sys/fs/cgroup/*/"ssc-$node" /sys/fs/cgroup/"ssc-$node"; do
    [[ -d "$root" ]] || continue
    local procs
    procs="$(find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)"
    [[ -n "$procs" ]] && kill -KILL $procs 2>/dev/null || true
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

# unmount_state: every mount under the state folder (overlay rootfs, /dev/shm of pods, secret and token tmpfs,
# pod netns files, the kubelet root's rshared bind mount), deepest first.
unmount_state() {
  local m
  # /proc/self/mountinfo field 5 is the mount point (octal-escaped spaces do not occur under our paths).
  for m in $(awk -v d="$STATE_DIR" 'index($5, d "/") == 1 || $5 == d {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
}

# remove_container_log_links: the kubelet links /var/log/containers/<pod>_<ns>_<container>-<id>.log (a fixed
# path) to the pod logs; remove the links that point into our state.
remove_container_log_links() {
  local l
  for l in /var/log/containers/*.log; do
    [[ -L "$l" ]] || continue
    [[ "$(readlink "$l")" == "$STATE_DIR"/* ]] && rm -f "$l"
  done
  return 0
}

# lock: one `up` or `down` at a time (a second one waits up to 10 minutes, then gives up). The lock file sits
# beside the state folder, which `down` removes.
lock() {
  [[ "$(id -u)" == 0 ]] || return 0  # preflight says why it cannot run
  exec 9>"$STATE_DIR.lock"
  if ! flock -n 9; then
    log "another make cluster / cluster-down is running; waiting for it"
    flock -w 600 9 || die "gave up waiting for the other make cluster / cluster-down ($STATE_DIR.lock)"
  fi
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    up) lock; cmd_up "$@" ;;
    build) lock; cmd_build "$@" ;;
    down) lock; cmd_down "$@"; rm -f "$STATE_DIR.lock" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    load-image) cmd_load_image "$@" ;;
    *) die "usage: cluster.sh up|build|down|status|env|load-image REF..." ;;
  esac
}

main "$@"
