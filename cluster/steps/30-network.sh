# shellcheck shell=bash
# Step "network": the node network. Each node is a network namespace (ssc-cpu, ssc-gpu) with its own address,
# loopback, iptables, ports and CNI bridge; all of them hang off one bridge on the host ($NODE_BRIDGE), which also
# carries the host's address $HOST_IP. The control plane stays in the host's namespace and listens on $HOST_IP.
#
#   host:     $NODE_BRIDGE $HOST_IP/24; routes to each node's pod CIDR via that node; the service CIDR via the
#             CPU node (whose kube-proxy translates ClusterIPs for host processes too)
#   node N:   eth0 NODE_IP/24, default route via the host; the other nodes' pod CIDRs via those nodes;
#             pods on its own CNI bridge cni0 (cluster/steps/50-containerd.sh)
#
# Pod traffic between nodes is routed (no overlay, no NAT): a pod's address is the same everywhere, as Ray
# expects. The host's FORWARD chain is Docker's (policy DROP once dockerd runs, and br_netfilter makes bridged
# frames traverse it), so two rules tagged "shardscore-cluster" accept frames between our nodes and drop anything
# from them to other interfaces: pods reach each other and the host, never the outside network.

IPT_TAG="shardscore-cluster"

netns_of() { echo "ssc-$1"; }
veth_host_of() { echo "ssc-$1"; }

step_network_ok() {
  ip -o addr show dev "$NODE_BRIDGE" 2>/dev/null | grep -q "inet $HOST_IP/" || return 1
  local node
  for node in "${NODES[@]}"; do
    [[ -e "/run/netns/$(netns_of "$node")" ]] || return 1
    in_node "$node" ip -o addr show dev eth0 | grep -q "inet ${NODE_IP[$node]}/" || return 1
    ip route show "${NODE_POD_CIDR[$node]}" | grep -q "via ${NODE_IP[$node]}" || return 1
  done
  host_iptables_rules check
}

step_network_up() {
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge
  fi
  ip addr replace "$HOST_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  local node other
  for node in "${NODES[@]}"; do
    local ns veth
    ns="$(netns_of "$node")" veth="$(veth_host_of "$node")"
    [[ -e "/run/netns/$ns" ]] || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$veth" master "$NODE_BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "${NODE_IP[$node]}/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$HOST_IP"
    for other in "${NODES[@]}"; do
      [[ "$other" == "$node" ]] && continue
      ip -n "$ns" route replace "${NODE_POD_CIDR[$other]}" via "${NODE_IP[$other]}"
    done
    # Per-namespace sysctls: the node forwards between its pods and eth0; kube-proxy needs bridged pod traffic
    # to pass through iptables (br_netfilter) for hairpin and same-node service traffic.
    in_node "$node" sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
    ip route replace "${NODE_POD_CIDR[$node]}" via "${NODE_IP[$node]}"
  done
  ip route replace "$SERVICE_CIDR" via "${NODE_IP[cpu]}"
  host_iptables_rules add
}

# host_iptables_rules check|add|delete: the two FORWARD rules on the host (tagged with a comment).
host_iptables_rules() {
  local action="$1" rule
  local -a rules=(
    "-i $NODE_BRIDGE -o $NODE_BRIDGE -m comment --comment $IPT_TAG -j ACCEPT"
    "-i $NODE_BRIDGE -m comment --comment $IPT_TAG -j DROP"
  )
  local pos=1
  for rule in "${rules[@]}"; do
    # shellcheck disable=SC2086
    case "$action" in
      check) iptables -w -C FORWARD $rule 2>/dev/null || return 1 ;;
      add)
        # At the top, before the policy. A dockerd started later puts its own jumps above them; those only
        # match Docker's bridges, so our frames still reach these rules.
        if iptables -w -C FORWARD $rule 2>/dev/null; then iptables -w -D FORWARD $rule; fi
        iptables -w -I FORWARD "$pos" $rule
        pos=$((pos + 1))
        ;;
      delete) while iptables -w -D FORWARD $rule 2>/dev/null; do :; done ;;
    esac
  done
}

network_down() {
  host_iptables_rules delete || true
  ip route del "$SERVICE_CIDR" via "${NODE_IP[cpu]}" 2>/dev/null || true
  local node
  for node in "${NODES[@]}"; do
    ip route del "${NODE_POD_CIDR[$node]}" 2>/dev/null || true
    ip link del "$(veth_host_of "$node")" 2>/dev/null || true
    [[ -e "/run/netns/$(netns_of "$node")" ]] && ip netns del "$(netns_of "$node")"
  done
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
}
