#!/usr/bin/env bash
# Build the components of the local cluster from their Go modules, once per version, into the build cache.
#
#   bash cluster/build.sh [all|kubernetes|etcd|coredns|containerd|kuberay|kube-router|pause]...   (default: all)
#   bash cluster/build.sh regen-kubernetes   # rewrite cluster/src/kubernetes/go.mod for KUBERNETES_VERSION
#
# Each binary lands in $SHARDSCORE_CLUSTER_CACHE/bin/<component>-<version>[-<hash of our wrapper source>]/, and is
# never rebuilt while that folder exists. GOMODCACHE and GOCACHE live in the same cache, so a cold build on a new
# machine downloads and compiles everything once, and a later build of a new version recompiles only what changed.
# Build logs and times: $SHARDSCORE_CLUSTER_CACHE/logs/.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

export GOMODCACHE="$CACHE_DIR/gomod" GOCACHE="$CACHE_DIR/gobuild"
# -modcacherw: the module cache stays deletable with rm -rf. No cgo anywhere (static binaries, no C toolchain
# in the compile, the pure-Go resolver), as Kubernetes' release build does for its server binaries.
# Less CPU for the same binaries (the build is CPU-bound: in CI it shares 2 cores with make test). Every link below
# strips DWARF (-ldflags -w), so no compile needs to write it: -dwarf=false, cmd/compile's flag, for every package
# the standard library included. And the compiler and linker collect garbage when their heap has grown by 4 times
# the live heap instead of 1 (GOGC=400; cmd/compile's base.AdjustStartingHeap only defers the first collections).
# Measured from an empty GOCACHE, one build at a time: the KubeRay operator 483 CPU seconds, 366 with both (24%
# less, its largest process 700 MB instead of 784); the etcd wrapper 192, 174 without DWARF alone, 151 with both.
export GOFLAGS="-modcacherw -gcflags=all=-dwarf=false" GOGC="${GOGC:-400}" CGO_ENABLED=0 \
  GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
BUILD_LOG_DIR="$CACHE_DIR/logs"
# -trimpath and -s -w as every upstream release build does: no DWARF and no symbol table makes linking these
# large binaries markedly faster and the binaries about a third smaller.
GO_BUILD=(go build -trimpath)

blog() { echo "[cluster-build] $*" >&2; }

# built DIR FILES...: true when every file is in DIR (a finished build: folders are renamed into place whole).
built() {
  local dir="$1" f; shift
  for f in "$@"; do [[ -x "$dir/$f" ]] || return 1; done
}

# timed NAME CMD...: runs CMD with its output in the build log, records wall and CPU time (CPU seconds say more
# than wall time on a machine that others share).
timed() {
  local name="$1" start=$SECONDS rc=0 times; shift
  mkdir -p "$BUILD_LOG_DIR"
  blog "building $name (log: $BUILD_LOG_DIR/build-$name.log)"
  times="$(mktemp)"
  local TIMEFORMAT="%R s wall, %U s user, %S s sys"
  { time "$@" >"$BUILD_LOG_DIR/build-$name.log" 2>&1; } 2>"$times" || rc=$?
  if ((rc != 0)); then
    rm -f "$times"
    blog "building $name FAILED; last lines of $BUILD_LOG_DIR/build-$name.log:"
    tail -n 30 "$BUILD_LOG_DIR/build-$name.log" >&2
    return 1
  fi
  blog "built $name in $((SECONDS - start))s ($(cat "$times"))"
  echo "$(date -u +%FT%TZ) $name $(cat "$times") load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$BUILD_LOG_DIR/build-times.log"
  rm -f "$times"
}

# tmp_dir FINAL: builds go to FINAL.tmp.<pid>, renamed to FINAL when complete.
tmp_dir() { local d="$1.tmp.$$"; rm -rf "$d"; mkdir -p "$d"; echo "$d"; }

# --- Kubernetes: one multi-call binary (cluster/src/kubernetes/main.go), linked under each component's name ---
K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

k8s_ldflags() {
  # hack/lib/version.sh (kube::version::ldflags) sets these in both packages; /version, `kubectl version` and
  # Helm's kubeVersion checks read them. Without them the server reports v0.0.0.
  local minor flags="-s -w" pkg
  minor="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$KUBERNETES_BUILD_DATE"
  done
  echo "$flags"
}

build_kubernetes() {
  built "$K8S_BIN" k8s "${K8S_COMPONENTS[@]}" && return 0
  local tmp; tmp="$(tmp_dir "$K8S_BIN")"
  # The build tags of hack/lib/golang.sh (kube::golang::build_binaries) for non-debug builds.
  timed kubernetes bash -c 'cd "$1" && shift && "$@"' _ "$CLUSTER_SRC/src/kubernetes" \
    "${GO_BUILD[@]}" -tags selinux,notest,grpcnotrace -ldflags "$(k8s_ldflags)" -o "$tmp/k8s" . || return 1
  local c
  for c in "${K8S_COMPONENTS[@]}"; do ln -sf k8s "$tmp/$c"; done
  rm -rf "$K8S_BIN" && mv "$tmp" "$K8S_BIN"
}

# regen-kubernetes: the wrapper's go.mod from k8s.io/kubernetes' own replace block, then go mod tidy.
regen_kubernetes() {
  local dir="$CLUSTER_SRC/src/kubernetes" mod
  mod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  {
    sed -n '1,/^module /p' "$dir/go.mod" | sed '$d'
    echo "module shardscore/cluster/kubernetes"
    echo
    sed -n 's/^go /go /p' "$mod"
    echo
    echo "// The same GODEBUG defaults as k8s.io/kubernetes builds with (a dependency's godebug line is ignored)."
    sed -n 's/^godebug /godebug /p' "$mod"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$mod" | awk -v v="$KUBERNETES_STAGING_VERSION" '/=>/ {print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$dir/go.mod.new"
  mv "$dir/go.mod.new" "$dir/go.mod"
  (cd "$dir" && go mod tidy)
  blog "rewrote $dir/go.mod for $KUBERNETES_VERSION"
}

# build_src NAME BIN: `go build` of the module cluster/src/NAME into BIN (one binary; its folder renamed into place).
build_src() {
  local name="$1" bin="$2" dir; dir="$(dirname "$bin")"
  built "$dir" "$(basename "$bin")" && return 0
  local tmp; tmp="$(tmp_dir "$dir")"
  timed "$name" bash -c 'cd "$1" && shift && "$@"' _ "$CLUSTER_SRC/src/$name" \
    "${GO_BUILD[@]}" -ldflags "-s -w" -o "$tmp/$(basename "$bin")" . || return 1
  rm -rf "$dir" && mv "$tmp" "$dir"
}

# --- etcd (wrapper module cluster/src/etcd) --------------------------------------------------------------------
build_etcd() { build_src etcd "$ETCD_BIN"; }

# --- CoreDNS (wrapper cluster/src/coredns: the plugins our Corefile uses) ---------------------------------------
build_coredns() { build_src coredns "$COREDNS_BIN"; }

# --- containerd: its own go.mod has no replace directives, so `go install module/cmd@version` builds it as
# released. Tags as its Makefile's STATIC=1 build; the snapshotters we do not use (btrfs, devmapper, zfs) are left
# out; the shim gets no_grpc as in its Makefile (SHIM_GO_BUILDTAGS).
build_containerd() {
  built "$CONTAINERD_BIN" containerd containerd-shim-runc-v2 ctr && return 0
  local tmp pkg=github.com/containerd/containerd/v2; tmp="$(tmp_dir "$CONTAINERD_BIN")"
  local tags="urfave_cli_no_docs osusergo netgo static_build no_btrfs no_devmapper no_zfs"
  local ld="-s -w -X $pkg/version.Version=$CONTAINERD_VERSION -X $pkg/version.Package=$pkg"
  timed containerd env GOBIN="$tmp" go install -trimpath -tags "$tags" -ldflags "$ld" \
    "$pkg/cmd/containerd@$CONTAINERD_VERSION" "$pkg/cmd/ctr@$CONTAINERD_VERSION" || return 1
  timed containerd-shim env GOBIN="$tmp" go install -trimpath -tags "$tags no_grpc" -ldflags "$ld" \
    "$pkg/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" || return 1
  rm -rf "$CONTAINERD_BIN" && mv "$tmp" "$CONTAINERD_BIN"
}

# --- KubeRay operator: `go build` of its main package (its go.mod has no replace directives), from the source that
# kuberay_source_dir gives (the module proxy's module, or the pinned release's archive) -------------------------
build_kuberay() {
  local dir; dir="$(dirname "$KUBERAY_BIN")"
  built "$dir" ray-operator && return 0
  local src; src="$(kuberay_source_dir)" || return 1
  local tmp; tmp="$(tmp_dir "$dir")"
  timed kuberay bash -c 'cd "$1" && shift && "$@"' _ "$src" \
    "${GO_BUILD[@]}" -ldflags "-s -w" -o "$tmp/ray-operator" . || return 1
  rm -rf "$dir" && mv "$tmp" "$dir"
}

# --- kube-router: `go install module/cmd@version` as released (its go.mod has no replace directives); the
# version ldflag as its Makefile sets it. It links every controller whatever runs (docs/local-cluster.md).
build_kube_router() {
  local dir pkg=github.com/cloudnativelabs/kube-router/v2; dir="$(dirname "$KUBE_ROUTER_BIN")"
  built "$dir" kube-router && return 0
  local tmp; tmp="$(tmp_dir "$dir")"
  timed kube-router env GOBIN="$tmp" go install -trimpath \
    -ldflags "-s -w -X $pkg/pkg/version.Version=$KUBE_ROUTER_VERSION" "$pkg/cmd/kube-router@$KUBE_ROUTER_VERSION" || return 1
  rm -rf "$dir" && mv "$tmp" "$dir"
}

# --- pause (cluster/src/pause) --------------------------------------------------------------------------------
build_pause() { build_src pause "$PAUSE_BIN"; }

build_all() {
  local start=$SECONDS
  command -v go >/dev/null || die "no go on PATH: install Go >= 1.26 (https://go.dev/dl/)"
  # Two lanes: Kubernetes alone (the bulk of the work, ending in one long single-threaded link) and the rest one
  # after another, so that a core is busy compiling while the other links. Each lane in a shell of its own: `timed`
  # counts the CPU of the children its shell reaps while it runs (bash's `time`), and a lane that ended would be
  # reaped inside the other lane's timing (once seen: kube-router "806 s user", Kubernetes' lane's CPU with it).
  build_kubernetes &
  local k8s_pid=$!
  (build_pause && build_etcd && build_containerd && build_coredns && build_kuberay && build_kube_router) &
  local rest_pid=$! rest_ok=0 k8s_ok=0
  wait "$rest_pid" || rest_ok=1
  wait "$k8s_pid" || k8s_ok=1
  ((rest_ok == 0 && k8s_ok == 0)) || die "build failed (logs in $BUILD_LOG_DIR)"
  blog "all components built in $((SECONDS - start))s (cache: $CACHE_DIR)"
}

main() {
  [[ $# -gt 0 ]] || set -- all
  local what
  for what in "$@"; do
    case "$what" in
      all) build_all ;;
      kubernetes | etcd | coredns | containerd | kuberay | pause) "build_$what" ;;
      kube-router) build_kube_router ;;
      regen-kubernetes) regen_kubernetes ;;
      *) die "unknown build target '$what' (all, kubernetes, etcd, coredns, containerd, kuberay, kube-router, pause, regen-kubernetes)" ;;
    esac
  done
}

main "$@"
