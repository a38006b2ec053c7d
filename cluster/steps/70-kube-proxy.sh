# shellcheck shell=bash
# Step "kube-proxy-<node>": Services on each node (iptables mode, in the node's network namespace, so its rules
# never mix with the host's or Docker's).
#   oomScoreAdj: 0   - its default is -999, which needs CAP_SYS_RESOURCE
#   conntrack: 0s/0  - leave the host-wide conntrack table size and timeouts alone (kube-proxy's
#                      conntracker skips a setting whose value is 0)
#   clusterCIDR      - traffic to a ClusterIP from outside the pod network (the host, via the CPU node) is
#                      masqueraded, so replies come back through the node that translated it

kube_proxy_ok() {
  local node="$1"
  daemon_running "kube-proxy-$node" || return 1
  in_node "$node" curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:10256/healthz" | grep -q 200
}

kube_proxy_up() {
  local node="$1" config
  daemon_running "kube-proxy-$node" && return 0
  config="$(node_dir "$node")/kube-proxy-config.yaml"
  cat >"$config" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $STATE_DIR/kubeconfigs/kube-proxy.kubeconfig
hostnameOverride: ${NODE_NAME[$node]}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  start_daemon "kube-proxy-$node" "$(netns_of "$node")" "$K8S_BIN/kube-proxy" --config="$config"
}
