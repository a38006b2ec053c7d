# shellcheck shell=bash
# Steps "kubelet-<node>" and "node-<node>": each node's kubelet, in the node's network namespace, with its own
# root directory, cgroup root, pod log folder and containerd; then the node's labels, taint and (GPU pool) fake
# GPU capacity, checked on the API.
#
# What this VM needs of the kubelet configuration (KubeletConfiguration v1beta1 of the pinned release):
#   failCgroupV1: false, cgroupDriver: cgroupfs  - cgroup v1 and no systemd
#   oomScoreAdj: 0                               - root lacks CAP_SYS_RESOURCE (no negative scores)
#   imageGCHighThresholdPercent: 100             - image GC runs only at usage >= the high threshold
#                                                  (ImageGCManager.GarbageCollect): never; nothing can be pulled
#                                                  again once collected
#   evictionHard disk signals "0%"               - ParseThresholdConfig ignores 0% thresholds: a full-ish disk
#                                                  never evicts the test pods (nor collects images to reclaim)
# Two kubelets on one host must not share anything host-wide: cgroupRoot (/ssc-<node>), rootDir, podLogsDir
# (container GC deletes pod log folders it does not know), volumePluginDir, and the ports (separate namespaces).

node_kubelet_dir() { echo "$(node_dir "$1")/kubelet"; }

kubelet_ok() {
  local node="$1"
  daemon_running "kubelet-$node" || return 1
  [[ "$(in_node "$node" curl -sS --max-time 5 "http://127.0.0.1:10248/healthz")" == ok ]] || return 1
  [[ "$(kctl get node "${NODE_NAME[$node]}" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

kubelet_up() {
  local node="$1" dir config
  daemon_running "kubelet-$node" && return 0
  dir="$(node_dir "$node")"
  mkdir -p "$dir/kubelet" "$dir/pod-logs" "$dir/volume-plugins"
  save_kernel_tunables
  node_cgroups_up "$node"
  config="$dir/kubelet-config.yaml"
  cat >"$config" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE_DIR/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $STATE_DIR/pki/kubelet-$node-serving.crt
tlsPrivateKeyFile: $STATE_DIR/pki/kubelet-$node-serving.key
address: ${NODE_IP[$node]}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$DNS_SVC_IP]
# No upstream resolver: the nodes have no outside network. Pods resolve cluster names only.
resolvConf: ""
containerRuntimeEndpoint: unix://$(containerd_sock "$node")
cgroupDriver: cgroupfs
cgroupRoot: /ssc-$node
failCgroupV1: false
oomScoreAdj: 0
podLogsDir: $dir/pod-logs
volumePluginDir: $dir/volume-plugins
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
$(node_taints_yaml "$node")
EOF
  # --hostname-override and the client certificate's CN (system:node:<name>) must agree for the Node
  # authorizer. --node-labels sets the pool labels at registration, as kind's kubeadm config does.
  start_daemon "kubelet-$node" "$(netns_of "$node")" "$K8S_BIN/kubelet" \
    --config="$config" --kubeconfig="$STATE_DIR/kubeconfigs/kubelet-$node.kubeconfig" \
    --root-dir="$dir/kubelet" --hostname-override="${NODE_NAME[$node]}" --node-ip="${NODE_IP[$node]}" \
    --node-labels="${NODE_LABELS[$node]}"
}

# node_cgroups_up NODE: the kubelet's cgroupRoot must exist in every hierarchy before it starts
# (ContainerManager's validation: "cgroup-root ... doesn't exist"); it creates kubepods/ under it itself. A new
# v1 cpuset cgroup starts with no CPUs or memory nodes, so copy the parent's.
node_cgroups_up() {
  local node="$1" hier
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    mkdir -p "/sys/fs/cgroup/ssc-$node"
    return 0
  fi
  for hier in /sys/fs/cgroup/*/; do
    [[ -f "$hier/cgroup.procs" ]] || continue
    mkdir -p "$hier/ssc-$node"
  done
  if [[ -d /sys/fs/cgroup/cpuset/ssc-$node ]]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/ssc-$node/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/ssc-$node/cpuset.mems"
  fi
}

node_taints_yaml() {
  [[ "$1" == gpu ]] || return 0
  echo "registerWithTaints:"
  echo "- {key: nvidia.com/gpu, value: present, effect: NoSchedule}"
}

# The kubelet sets six kernel tunables host-wide (container_manager_linux.go, setupKernelTunables with
# protectKernelDefaults false): vm.overcommit_memory, vm.panic_on_oom, kernel.panic, kernel.panic_on_oops,
# kernel.keys.root_maxkeys, kernel.keys.root_maxbytes. Their values from before the first kubelet are kept and
# cluster-down puts them back.
KERNEL_TUNABLES=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
                 kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
save_kernel_tunables() {
  local saved="$STATE_DIR/kernel-tunables.before" t
  [[ -f "$saved" ]] && return 0
  for t in "${KERNEL_TUNABLES[@]}"; do echo "$t=$(sysctl -n "$t")"; done >"$saved.tmp"
  mv "$saved.tmp" "$saved"
}

restore_kernel_tunables() {
  local saved="$STATE_DIR/kernel-tunables.before"
  [[ -f "$saved" ]] || return 0
  sysctl -q -p "$saved" || true
}

# --- node-<node>: labels, taints, fake GPUs ---------------------------------------------------------------------
node_ok() {
  local node="$1" name="${NODE_NAME[$1]}"
  [[ "$(kctl get node "$name" -o jsonpath='{.metadata.labels.shardscore\.io/pool}')" == "$node" ]] || return 1
  if [[ "$node" == gpu ]]; then
    [[ "$(kctl get node "$name" -o jsonpath='{.spec.taints[?(@.key=="nvidia.com/gpu")].effect}')" == NoSchedule ]] &&
      [[ "$(kctl get node "$name" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" == "$FAKE_GPUS" ]]
  fi
}

node_up() {
  local node="$1" name="${NODE_NAME[$1]}"
  [[ "$node" == gpu ]] || return 0
  # "Advertise Extended Resources for a Node": a JSON patch of the node's status capacity; the kubelet copies
  # capacity it does not manage into allocatable on its next status update (nodeStatusUpdateFrequency, 10s).
  kctl patch node "$name" --subresource=status --type=json \
    -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$FAKE_GPUS\"}]"
}
