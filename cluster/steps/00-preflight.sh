# shellcheck shell=bash
# Preflight: can this machine host the cluster? Runs before anything is changed and fails within seconds with
# what is missing. Checks only; installing packages is the next step.

PREFLIGHT_MIN_DISK_GB="${SHARDSCORE_CLUSTER_MIN_DISK_GB:-15}"
PREFLIGHT_MIN_MEM_GB="${SHARDSCORE_CLUSTER_MIN_MEM_GB:-6}"

preflight() {
  local missing=()
  [[ "$(id -u)" == 0 ]] || missing+=("root (the kubelet, containerd and the network setup need it; run as root)")
  [[ "$(uname -s)" == Linux ]] || missing+=("Linux")
  command -v go >/dev/null 2>&1 || all_components_built || missing+=("go on PATH (Go >= 1.26, to build the components)")
  command -v apt-get >/dev/null 2>&1 || preflight_have_packages || missing+=("apt-get, or these already installed: $DEBIAN_PACKAGES")
  command -v python3 >/dev/null 2>&1 || missing+=("python3 (cluster/lib/oci_image.py writes the pause and CoreDNS images)")
  # cgroups: the kubelet needs the memory and cpu controllers (cgroup v1 or v2) and cgroupfs mounted.
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    grep -qw memory /sys/fs/cgroup/cgroup.controllers || missing+=("the memory cgroup controller (cgroup v2: not enabled)")
  else
    [[ -d /sys/fs/cgroup/memory ]] || missing+=("the memory cgroup controller (no /sys/fs/cgroup/memory)")
    [[ -d /sys/fs/cgroup/cpu ]] || [[ -d /sys/fs/cgroup/cpu,cpuacct ]] || missing+=("the cpu cgroup controller")
  fi
  grep -qw overlay /proc/filesystems || missing+=("the overlay filesystem (containerd's overlayfs snapshotter)")
  [[ -e /proc/sys/net/bridge ]] || missing+=("br_netfilter (net.bridge.bridge-nf-call-iptables, for kube-proxy)")
  [[ -e /proc/self/ns/net ]] || missing+=("network namespaces")
  if [[ -r /proc/swaps ]] && (($(wc -l </proc/swaps) > 1)); then
    missing+=("no swap (the kubelet refuses to start with swap on: swapoff -a)")
  fi
  local avail_gb mem_gb disk_dir="$STATE_DIR"
  while [[ ! -d "$disk_dir" ]]; do disk_dir="$(dirname "$disk_dir")"; done
  avail_gb="$(df -Pk "$disk_dir" 2>/dev/null | awk 'NR==2 {print int($4/1024/1024)}')"
  ((${avail_gb:-0} >= PREFLIGHT_MIN_DISK_GB)) || \
    missing+=("${PREFLIGHT_MIN_DISK_GB} GB free disk under $STATE_DIR (has ${avail_gb:-?} GB; images are unpacked once per node)")
  mem_gb="$(awk '/MemAvailable/ {print int($2/1024/1024)}' /proc/meminfo)"
  ((mem_gb >= PREFLIGHT_MIN_MEM_GB)) || missing+=("${PREFLIGHT_MIN_MEM_GB} GB available memory (has $mem_gb GB)")
  preflight_ports || missing+=("$PREFLIGHT_PORT_PROBLEM")
  preflight_addresses || missing+=("$PREFLIGHT_NET_PROBLEM")
  if ((${#missing[@]})); then
    log "this machine cannot host the local cluster; missing:"
    local m
    for m in "${missing[@]}"; do log "  - $m"; done
    exit 1
  fi
}

preflight_have_packages() {
  [[ -x "$RUNC_BIN" && -x "$CNI_BIN_DIR/bridge" ]] && command -v iptables conntrack openssl >/dev/null 2>&1
}

# A port is a problem only when something that is not ours listens there (a second `make cluster` finds its own
# etcd and API server on them).
PREFLIGHT_PORT_PROBLEM=""
preflight_ports() {
  local spec port owner problems=()
  for spec in "etcd:$ETCD_CLIENT_PORT" "etcd:$ETCD_PEER_PORT" "kube-apiserver:$APISERVER_PORT" \
              "kube-controller-manager:$KCM_PORT" "kube-scheduler:$SCHEDULER_PORT" \
              "kuberay-operator:$OPERATOR_METRICS_PORT" "kuberay-operator:$OPERATOR_PROBE_PORT"; do
    owner="${spec%%:*}" port="${spec##*:}"
    daemon_running "$owner" && continue
    if port_in_use "$port"; then
      problems+=("port $port ($owner) is already taken: $(ss -Htlnp "sport = :$port" 2>/dev/null | awk '{print $6}' | head -n1)")
    fi
  done
  ((${#problems[@]} == 0)) && return 0
  PREFLIGHT_PORT_PROBLEM="free ports: ${problems[*]} (or set SHARDSCORE_CLUSTER_*_PORT)"
  return 1
}

port_in_use() {
  if command -v ss >/dev/null 2>&1; then
    [[ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]]
  else
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

# The node network must not overlap a network the host already routes, unless it is ours.
PREFLIGHT_NET_PROBLEM=""
preflight_addresses() {
  command -v ip >/dev/null 2>&1 || { PREFLIGHT_NET_PROBLEM="the ip command (iproute2)"; return 1; }
  local dev
  dev="$(ip -o route get "$HOST_IP" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p')"
  if [[ -n "$dev" && "$dev" != "$NODE_BRIDGE" && "$dev" != lo ]] && ip -o route show "$NODE_NET_PREFIX.0/24" | grep -q .; then
    PREFLIGHT_NET_PROBLEM="a free node network: $NODE_NET_PREFIX.0/24 is already routed via $dev (set SHARDSCORE_CLUSTER_NODE_NET)"
    return 1
  fi
  return 0
}
