# shellcheck shell=bash
# Steps "containerd-<node>" and "images-<node>": each node's own container runtime (containerd v2 with Debian's
# runc and CNI plugins) inside the node's network namespace, and the images made here (pause, CoreDNS) imported
# into it.
#
# Two containerds (and Docker's own containerd 1.6, if dockerd runs) share this host, so nothing host-wide is
# left at its default: each has its own socket, root, state, runc root, CNI config and IPAM store, and NRI
# (whose socket, /var/run/nri/nri.sock, is one per host) is disabled. Pod network namespaces are mounted under
# the node's state (netns_mounts_under_state_dir), not /var/run/netns. containerd runs in the node's network
# namespace because the CNI bridge plugin creates cni0 and the pod veths in the namespace it is started in.

node_dir() { echo "$STATE_DIR/nodes/$1"; }
containerd_sock() { echo "$(node_dir "$1")/containerd/containerd.sock"; }
node_ctr() { local node="$1"; shift; "$CONTAINERD_BIN/ctr" --address "$(containerd_sock "$node")" -n k8s.io "$@"; }

containerd_ok() {
  local node="$1"
  daemon_running "containerd-$node" || return 1
  # grep reads all of ctr's output (no -q): `grep -q` exits at the first match, ctr, still writing, dies of SIGPIPE,
  # and pipefail fails the check; `cluster.sh load-image` once refused a running containerd so, under load.
  node_ctr "$node" version >/dev/null && node_ctr "$node" plugins ls | grep 'io.containerd.cri.v1.*runtime.*ok' >/dev/null
}

containerd_up() {
  local node="$1" dir
  daemon_running "containerd-$node" && return 0
  dir="$(node_dir "$node")"
  mkdir -p "$dir/containerd" "$dir/cni/net.d" "$dir/cni/ipam"
  # The CNI network of this node: a bridge with a gateway on it, addresses from the node's pod CIDR. No
  # masquerade (ipMasq false): pod addresses are routed between nodes and to the host as they are.
  cat >"$dir/cni/net.d/10-shardscore.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "shardscore",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${NODE_POD_CIDR[$node]}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$dir/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # Config version 3 (containerd 2.x; docs/cri/config.md of the pinned release for each key).
  cat >"$dir/containerd/config.toml" <<EOF
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
# Leave containerd's own oom_score_adj alone (lowering it needs CAP_SYS_RESOURCE).
oom_score = 0
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "$dir/containerd/containerd.sock"
[ttrpc]
  address = "$dir/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins.'io.containerd.internal.v1.opt']
  path = "$dir/containerd/opt"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  # The pause image is made and imported here; a pinned image is never garbage-collected by the kubelet.
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  # The kubelet asks for negative OOM scores (-997 for Guaranteed pods, -998 for sandboxes): clamp them to
  # containerd's own, because root here lacks CAP_SYS_RESOURCE and runc would fail to create the container.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC_BIN"
        Root = "$dir/containerd/runc"
        # cgroupfs, like the kubelet (cgroupDriver: cgroupfs): there is no systemd here.
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$dir/cni/net.d"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  # The kubelet proxies exec/attach/port-forward to this server; loopback of the node's namespace.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
  # PATH: containerd starts containerd-shim-runc-v2 by that name from its PATH.
  start_daemon "containerd-$node" "$(netns_of "$node")" \
    env PATH="$CONTAINERD_BIN:/usr/sbin:/usr/bin:/sbin:/bin" "$CONTAINERD_BIN/containerd" \
    --config "$dir/containerd/config.toml"
  # env execs containerd: record containerd as the program to check the PID against.
  echo "$CONTAINERD_BIN/containerd" >"$RUN_DIR/containerd-$node.exe"
}

# --- images made here ------------------------------------------------------------------------------------------
IMAGE_DIR="$STATE_DIR/images"

local_image_archives() {
  mkdir -p "$IMAGE_DIR"
  [[ -f "$IMAGE_DIR/pause.tar" ]] || python3 "$CLUSTER_SRC/lib/oci_image.py" --name "$PAUSE_IMAGE" \
    --out "$IMAGE_DIR/pause.tar" --file "$PAUSE_BIN:/pause" --entrypoint /pause --user 65535:65535 >/dev/null
  [[ -f "$IMAGE_DIR/coredns.tar" ]] || python3 "$CLUSTER_SRC/lib/oci_image.py" --name "$COREDNS_IMAGE" \
    --out "$IMAGE_DIR/coredns.tar" --file "$COREDNS_BIN:/coredns" --entrypoint /coredns >/dev/null
}

node_has_image() { node_ctr "$1" images ls -q | grep -x "$2" >/dev/null; }  # no -q: as in containerd_ok

images_ok() {
  node_has_image "$1" "$PAUSE_IMAGE" && node_has_image "$1" "$COREDNS_IMAGE"
}

images_up() {
  local node="$1"
  local_image_archives
  node_ctr "$node" images import --local "$IMAGE_DIR/pause.tar"
  node_ctr "$node" images import --local "$IMAGE_DIR/coredns.tar"
}

# containerd_node_down NODE (after the node's kubelet has stopped): every pod process and shim of this node
# goes, then containerd. Each pod has one shim (containerd-shim-runc-v2, started by this node's containerd and
# reparented to init), which exits only when its sandbox is shut down.
containerd_node_down() {
  local node="$1" id sockets=() state
  state="$(node_dir "$node")/containerd/state"
  # The shims' sockets (under the host-wide /run/containerd/s/), from the bootstrap.json of each task.
  local f
  for f in "$state"/io.containerd.runtime.v2.task/*/*/bootstrap.json; do
    [[ -f "$f" ]] && sockets+=("$(sed -n 's|.*"address":"unix://\([^"]*\)".*|\1|p' "$f")")
  done
  if daemon_running "containerd-$node"; then
    # The tasks (containers' processes), the containers, then the sandboxes: ctr sandboxes rm --force stops the
    # sandbox and calls Shutdown on its shim (cmd/ctr/commands/sandboxes), which makes the shim exit.
    for id in $(node_ctr "$node" tasks ls -q 2>/dev/null); do
      node_ctr "$node" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(node_ctr "$node" tasks ls -q 2>/dev/null); do
      timeout 10 "$CONTAINERD_BIN/ctr" --address "$(containerd_sock "$node")" -n k8s.io tasks delete -f "$id" \
        >/dev/null 2>&1 || true
    done
    for id in $(node_ctr "$node" containers ls -q 2>/dev/null); do
      node_ctr "$node" containers delete "$id" >/dev/null 2>&1 || true
    done
    # (sandboxes ls has no --quiet: the first column of each line after the header)
    for id in $(node_ctr "$node" sandboxes ls 2>/dev/null | awk 'NR > 1 {print $1}'); do
      timeout 10 "$CONTAINERD_BIN/ctr" --address "$(containerd_sock "$node")" -n k8s.io sandboxes rm -f "$id" \
        >/dev/null 2>&1 || true
    done
  fi
  stop_daemon "containerd-$node"
  # A shim that is still there (its sandbox was gone from containerd's store, or containerd did not answer) is
  # found by its -address argument, the socket path of this node's containerd, which is ours alone. Its own
  # socket is /run/containerd/s/sha256(<address>/<namespace>/<id>) (pkg/shim SocketAddress).
  local pid cmdline sock address id
  address="$(containerd_sock "$node")"
  local proc
  for proc in /proc/[0-9]*; do
    pid="${proc#/proc/}"
    cmdline="$({ tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null)" || continue
    [[ "$cmdline" == *containerd-shim-runc-v2*"-address $address"* ]] || continue
    log "stopping a shim of node $node that containerd left running (pid $pid)"
    kill -KILL "$pid" 2>/dev/null || true
    id="$(sed -n 's/.* -id \([^ ]*\) .*/\1/p' <<<"$cmdline")"
    [[ -n "$id" ]] && sockets+=("/run/containerd/s/$(printf '%s' "$address/k8s.io/$id" | sha256sum | cut -d' ' -f1)")
  done
  for sock in "${sockets[@]}"; do [[ -n "$sock" ]] && rm -f "$sock"; done
  return 0
}
