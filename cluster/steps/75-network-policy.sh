# shellcheck shell=bash
# Step "network-policy-<node>": NetworkPolicies enforced, by kube-router's network policy controller alone (no BGP
# router, no service proxy: kube-proxy keeps the Services), one process per node in the node's network namespace.
# It fills that netns's filter table and ipsets: a jump at the top of INPUT, FORWARD and OUTPUT to its chains, which
# match the node's pods by IP (pkg/controllers/netpol/pod.go interceptPodInboundTraffic at v2.1.0), so each
# instance enforces for the pods whose hostIP is its node's InternalIP (the kubelet's --node-ip).
#   --hostname-override            the Node it serves (utils.GetNodeObject tries NODE_NAME and the hostname first;
#                                  neither is a Node name here)
#   --service-cluster-ip-range     only a RETURN for Service traffic in its INPUT chain: the cluster's real range
#   --health-port                  /healthz fails once the controller's syncs stop (bound on every address of the
#                                  node netns, like the /debug/pprof handlers cmd/kube-router always registers)
#   --iptables-sync-period         the full resync; pod, namespace and policy events sync at once anyway
# Traffic from a pod's own node (the kubelet's probes) always passes (pod.go setupPodNetpolRules: `--src-type
# LOCAL`); from the host and the other node, only what a policy allows by ipBlock. The KubeRay operator runs on the
# host (10.99.0.1), so the e2e values allow it by ipBlock (docs/local-cluster.md).
KUBE_ROUTER_HEALTH_PORT=20244

network_policy_ok() {
  local node="$1"
  daemon_running "kube-router-$node" || return 1
  in_node "$node" curl -sS --max-time 5 -o /dev/null -w '%{http_code}' \
    "http://127.0.0.1:$KUBE_ROUTER_HEALTH_PORT/healthz" | grep -q 200 || return 1
  # Its first sync has run: the jump into its FORWARD chain is in place.
  in_node "$node" iptables -w -S FORWARD | grep -- '-j KUBE-ROUTER-FORWARD' >/dev/null  # no -q: see containerd_ok
}

network_policy_up() {
  local node="$1"
  daemon_running "kube-router-$node" && return 0
  start_daemon "kube-router-$node" "$(netns_of "$node")" "$KUBE_ROUTER_BIN" \
    --run-router=false --run-service-proxy=false --run-firewall=true \
    --kubeconfig="$STATE_DIR/kubeconfigs/kube-router.kubeconfig" \
    --hostname-override="${NODE_NAME[$node]}" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --health-port="$KUBE_ROUTER_HEALTH_PORT" --iptables-sync-period=1m --v=1
}
