# shellcheck shell=bash
# Shared helpers of cluster/cluster.sh and cluster/build.sh: settings, logging, the step runner, daemons under
# pidfiles. Sourced, not run.

CLUSTER_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_ROOT="$(cd "$CLUSTER_SRC/.." && pwd)"
# shellcheck source=../versions.env
source "$CLUSTER_SRC/versions.env"

# --- Settings (each can be overridden from the environment) --------------------------------------------------
# The build cache (binaries keyed by version, GOMODCACHE, GOCACHE): outside the checkout, kept by cluster-down.
CACHE_DIR="${SHARDSCORE_CLUSTER_CACHE:-$HOME/.cache/shardscore-cluster}"
# The running cluster's state (PKI, configs, data, logs, pidfiles): removed by cluster-down.
STATE_DIR="${SHARDSCORE_CLUSTER_DIR:-/var/lib/shardscore-cluster}"
LOG_DIR="$STATE_DIR/logs"
RUN_DIR="$STATE_DIR/run"
KUBECONFIG_PATH="$STATE_DIR/admin.kubeconfig"

# Names start with "ssc" so that everything this cluster makes on the host (links, namespaces, cgroups, iptables
# comments) is recognisable and can be removed without touching Docker's or anyone else's.
NODE_BRIDGE="${SHARDSCORE_CLUSTER_BRIDGE:-sscbr0}"
# The node network: the host's end of the bridge and one address per node. Pods reach the host at HOST_IP
# (an S3 server listening there, or on 0.0.0.0, is reachable from every pod).
NODE_NET_PREFIX="${SHARDSCORE_CLUSTER_NODE_NET:-10.99.0}"
HOST_IP="$NODE_NET_PREFIX.1"
CLUSTER_CIDR="10.244.0.0/16"
SERVICE_CIDR="10.96.0.0/16"
KUBERNETES_SVC_IP="10.96.0.1"
DNS_SVC_IP="10.96.0.10"
CLUSTER_DOMAIN="cluster.local"

# The nodes: name, pool, address, pod CIDR. The GPU pool's node is tainted and advertises fake GPUs.
NODES=(cpu gpu)
declare -A NODE_NAME=([cpu]=shardscore-cpu [gpu]=shardscore-gpu)
declare -A NODE_IP=([cpu]="$NODE_NET_PREFIX.11" [gpu]="$NODE_NET_PREFIX.12")
declare -A NODE_POD_CIDR=([cpu]=10.244.1.0/24 [gpu]=10.244.2.0/24)
declare -A NODE_LABELS=([cpu]="shardscore.io/pool=cpu"
                        [gpu]="shardscore.io/pool=gpu,nvidia.com/gpu.present=true")
FAKE_GPUS="${SHARDSCORE_CLUSTER_FAKE_GPUS:-2}"

# Host ports (all on loopback or the bridge address; each node has its own network namespace, so the kubelet,
# kube-proxy and containerd ports there do not collide with the host's or each other's).
ETCD_CLIENT_PORT="${SHARDSCORE_CLUSTER_ETCD_PORT:-12379}"
ETCD_PEER_PORT="$((ETCD_CLIENT_PORT + 1))"
APISERVER_PORT="${SHARDSCORE_CLUSTER_APISERVER_PORT:-16443}"
KCM_PORT="${SHARDSCORE_CLUSTER_KCM_PORT:-20257}"
SCHEDULER_PORT="${SHARDSCORE_CLUSTER_SCHEDULER_PORT:-20259}"
OPERATOR_METRICS_PORT="${SHARDSCORE_CLUSTER_OPERATOR_METRICS_PORT:-18080}"
OPERATOR_PROBE_PORT="$((OPERATOR_METRICS_PORT + 2))"
APISERVER_URL="https://$HOST_IP:$APISERVER_PORT"

# Images made here and imported into every node (nothing can be pulled).
PAUSE_IMAGE="localhost/shardscore-cluster/pause:$PAUSE_VERSION"
COREDNS_IMAGE="localhost/shardscore-cluster/coredns:$COREDNS_VERSION"

# Where each built component lives in the cache (cluster/build.sh writes them, nothing else does). The key is the
# version plus, for our wrapper modules, a hash of the wrapper's sources (go.mod, go.sum, *.go), so an edit there
# rebuilds that component and nothing else.
src_hash() { (cd "$CLUSTER_SRC/src/$1" && cat go.mod ./*.go && { cat go.sum 2>/dev/null || true; }) | sha256sum | cut -c1-8; }
BIN_ROOT="$CACHE_DIR/bin"
K8S_BIN="$BIN_ROOT/kubernetes-$KUBERNETES_VERSION-$(src_hash kubernetes)"
ETCD_BIN="$BIN_ROOT/etcd-$ETCD_VERSION-$(src_hash etcd)/etcd"
COREDNS_BIN="$BIN_ROOT/coredns-$COREDNS_VERSION-$(src_hash coredns)/coredns"
CONTAINERD_BIN="$BIN_ROOT/containerd-$CONTAINERD_VERSION"
# SHARDSCORE_CLUSTER_KUBERAY_VERSION runs another operator release than the pinned one (one the module proxy serves,
# e.g. v1.6.2, the operator of this cluster's past: docs/local-cluster.md).
KUBERAY_VERSION="${SHARDSCORE_CLUSTER_KUBERAY_VERSION:-$KUBERAY_VERSION}"
KUBERAY_BIN="$BIN_ROOT/kuberay-$KUBERAY_VERSION/ray-operator"
KUBE_ROUTER_BIN="$BIN_ROOT/kube-router-$KUBE_ROUTER_VERSION/kube-router"
PAUSE_BIN="$BIN_ROOT/pause-$PAUSE_VERSION-$(src_hash pause)/pause"
KUBECTL="$K8S_BIN/kubectl"
CNI_BIN_DIR="/usr/lib/cni"
RUNC_BIN="/usr/sbin/runc"

# --- Logging -------------------------------------------------------------------------------------------------
# Everything goes to stderr: `make cluster` keeps stdout for the final KUBECONFIG= line.
log() { echo "[cluster] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- Steps ---------------------------------------------------------------------------------------------------
# run_step NAME [TIMEOUT]: runs step_NAME_ok; if it fails, runs step_NAME_up with its output in
# $LOG_DIR/step-NAME.log, then step_NAME_ok again until it passes (TIMEOUT seconds). A failure names the step and
# shows the tail of its log and of the log of the daemon of the same name ($LOG_DIR/NAME.log), if any.
STEP_TIMEOUT_DEFAULT=60
run_step() {
  local name="$1" timeout="${2:-$STEP_TIMEOUT_DEFAULT}" start=$SECONDS log_file="$LOG_DIR/step-$1.log"
  if "step_${name//-/_}_ok" >/dev/null 2>&1; then
    log "step $name: up (reused)"
    return 0
  fi
  mkdir -p "$LOG_DIR"
  echo "=== $(date -u +%FT%TZ) step $name" >>"$log_file"
  # A subshell run as a plain command, with errexit and xtrace: bash ignores `set -e` inside anything called
  # from an `if` or `||`, so the first failing command would not stop the step. The trace shows it in the log.
  local rc=0
  set +e
  (set -eE -o pipefail -x; "step_${name//-/_}_up") >>"$log_file" 2>&1
  rc=$?
  set -e
  ((rc == 0)) || step_failed "$name" "its setup failed (exit $rc)"
  if ! wait_until "$timeout" "step_${name//-/_}_ok" >>"$log_file" 2>&1; then
    step_failed "$name" "not healthy after ${timeout}s"
  fi
  log "step $name: up ($((SECONDS - start))s)"
}

step_failed() {
  local name="$1" why="$2" log_file="$LOG_DIR/step-$1.log" f
  log "FAILED at step '$name': $why. Its log: $log_file"
  for f in "$log_file" "$LOG_DIR/$name.log"; do
    [[ -f "$f" ]] || continue
    log "--- last lines of $f"
    tail -n 25 "$f" | sed 's/^/    /' >&2
  done
  exit 1
}

# wait_until SECONDS CMD...: retries CMD every half second; the last failure's output is printed.
wait_until() {
  local timeout="$1"; shift
  local deadline=$((SECONDS + timeout)) out
  while true; do
    if out="$("$@" 2>&1)"; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      echo "still failing after ${timeout}s: $*"
      echo "$out"
      return 1
    fi
    sleep 0.5
  done
}

# --- Daemons under pidfiles ----------------------------------------------------------------------------------
# start_daemon NAME NETNS CMD...: starts CMD in its own session (setsid: it outlives make), in the network
# namespace NETNS ("-" for the host's), with stdout and stderr in $LOG_DIR/NAME.log, and records its PID in
# $RUN_DIR/NAME.pid. nsenter --net switches the network namespace only, unlike `ip netns exec`, which also makes a
# private mount namespace: the kubelet and containerd must share the host's mounts (volumes, rootfs, netns files).
start_daemon() {
  local name="$1" netns="$2"; shift 2
  local prefix=()
  [[ "$netns" == - ]] || prefix=(nsenter "--net=/run/netns/$netns" --)
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  echo "=== $(date -u +%FT%TZ) starting: $*" >>"$LOG_DIR/$name.log"
  # Without job control a background job is not a process-group leader, so setsid(1) calls setsid() and execs
  # (no fork), and nsenter execs too: $! is the daemon's own PID.
  # 9>&-: the daemon must not inherit the lock of cluster.sh (fd 9), or it would hold it for its lifetime.
  setsid "${prefix[@]}" "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 9>&- &
  echo "$!" >"$RUN_DIR/$name.pid"
  echo "$1" >"$RUN_DIR/$name.exe"
}

# daemon_pid NAME: the recorded PID, if that process is still the program we started (guards against PID reuse).
daemon_pid() {
  local name="$1" pid exe
  [[ -f "$RUN_DIR/$name.pid" ]] || return 1
  pid="$(cat "$RUN_DIR/$name.pid")"
  exe="$(cat "$RUN_DIR/$name.exe" 2>/dev/null || true)"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  if [[ -n "$exe" ]]; then
    local real
    real="$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)"
    [[ "$real" == "$(readlink -f "$exe")" ]] || return 1
  fi
  echo "$pid"
}

daemon_running() { daemon_pid "$1" >/dev/null; }

# stop_daemon NAME [GRACE]: SIGTERM, then SIGKILL after GRACE seconds; only the PID from our pidfile.
stop_daemon() {
  local name="$1" grace="${2:-15}" pid
  if pid="$(daemon_pid "$name")"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + grace))
    while [[ -d "/proc/$pid" ]] && ((SECONDS < deadline)); do sleep 0.2; done
    if [[ -d "/proc/$pid" ]]; then
      log "$name did not stop in ${grace}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.exe"
}

# kctl ARGS...: kubectl (our build, the cluster's own version) with the admin kubeconfig.
kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# in_node NODE CMD...: run CMD in that node's network namespace.
in_node() { local node="$1"; shift; nsenter "--net=/run/netns/ssc-$node" -- "$@"; }

# all_components_built: every binary cluster/build.sh makes is in the cache.
all_components_built() {
  local f
  for f in "$K8S_BIN/k8s" "$ETCD_BIN" "$COREDNS_BIN" "$CONTAINERD_BIN/containerd" "$CONTAINERD_BIN/ctr" \
           "$CONTAINERD_BIN/containerd-shim-runc-v2" "$KUBERAY_BIN" "$KUBE_ROUTER_BIN" "$PAUSE_BIN"; do
    [[ -x "$f" ]] || return 1
  done
}

# --- The KubeRay operator's source ---------------------------------------------------------------------------
# kuberay_source_dir: the ray-operator/ folder of the operator release (built by cluster/build.sh; its CRDs and
# ClusterRole installed by the steps), on stdout. Where SHARDSCORE_KUBERAY_ARCHIVE names the pinned release's
# archive (an unmodified `git archive --prefix=ray-operator/` of the tag, as the module proxy refuses v1.7.0's zip
# here) it is checked against KUBERAY_RELEASE_ARCHIVE_SHA256 and unpacked once into the cache; otherwise the Go
# module proxy's module goes into the module cache. Fails naming what to set when neither gives it.
kuberay_source_dir() {
  local unpacked="$CACHE_DIR/src/kuberay-$KUBERAY_VERSION/ray-operator"
  local module="$CACHE_DIR/gomod/github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION"
  local archive="${SHARDSCORE_KUBERAY_ARCHIVE:-}"
  if [[ -n "$archive" && "$KUBERAY_VERSION" == "$KUBERAY_RELEASE" ]]; then
    [[ -d "$unpacked" ]] || unpack_kuberay_archive "$archive" "$(dirname "$unpacked")" || return 1
    echo "$unpacked"
    return 0
  fi
  if [[ ! -d "$module" ]] && ! GOMODCACHE="$CACHE_DIR/gomod" GOFLAGS=-modcacherw go mod download \
      "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" >&2; then
    log "ERROR: the Go module proxy does not serve github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION;" \
      "set SHARDSCORE_KUBERAY_ARCHIVE to the release's archive (an unmodified git archive of ray-operator/ at the" \
      "tag, sha256 $KUBERAY_RELEASE_ARCHIVE_SHA256: cluster/versions.env)"
    return 1
  fi
  echo "$module"
}

# unpack_kuberay_archive ARCHIVE DIR: ARCHIVE into DIR (renamed into place whole) once its SHA-256 is the pinned one.
unpack_kuberay_archive() {
  local archive="$1" dir="$2" actual
  actual="$(sha256sum "$archive" | cut -d' ' -f1)" || return 1
  if [[ "$actual" != "$KUBERAY_RELEASE_ARCHIVE_SHA256" ]]; then
    log "ERROR: SHARDSCORE_KUBERAY_ARCHIVE=$archive has sha256 $actual, not the pinned" \
      "$KUBERAY_RELEASE_ARCHIVE_SHA256 (cluster/versions.env): not KubeRay $KUBERAY_RELEASE's archive"
    return 1
  fi
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" && tar -xzf "$archive" -C "$dir.tmp" && rm -rf "$dir" && mv "$dir.tmp" "$dir"
}
