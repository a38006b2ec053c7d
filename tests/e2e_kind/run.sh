#!/usr/bin/env bash
# `make e2e-kind`: the cluster e2e on a kind cluster. The scenarios are tests/e2e_cluster, the same pytest suite
# `make e2e-cluster` runs on the local cluster of `make cluster`; this script only makes a kind cluster that looks
# like it and points the suite at it (the SHARDSCORE_E2E_* variables that tests/e2e_cluster/clusterlib.py reads).
#
#   kind cluster from kind-config.yaml (control plane, CPU worker, GPU-labelled and tainted worker)
#   -> fake nvidia.com/gpu capacity on the GPU worker (a node status patch)
#   -> the KubeRay operator 1.7.0 (its Helm chart, RayCronJob feature gate on)
#   -> the project's image (TORCH_VARIANT=none, tagged shardscore:<version> and <version>-none), kind load
#   -> pytest -m cluster tests/e2e_cluster; the suite starts its S3 server on the host, on the kind network's
#      gateway address, which pods reach.
#
# Needs docker (a running engine), kind, kubectl, helm, the dev venv (make venv) and network access for the kind node
# image and the KubeRay chart and operator image. Where something is missing it prints a SKIP line naming it and
# exits 0 without claiming success. `run.sh --check` only reports that. Extra arguments go to pytest.
#
# Environment: KIND_CLUSTER (default shardscore-e2e), KIND_NODE_IMAGE (kind's default when empty),
# SKIP_IMAGE_BUILD=1 (use the images in Docker as they are), KEEP_CLUSTER=1 (no cleanup).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-shardscore-e2e}"
KUBERAY_VERSION=1.7.0
FAKE_GPUS=2
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' helm/shardscore/Chart.yaml)"

log() { echo "$(date +%H:%M:%S) e2e-kind: $*" >&2; }

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker engine")
fi
[ -x .venv/bin/python ] || missing+=("the dev venv (make venv)")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "SKIP: kind e2e not run: missing: $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')"
  exit 0
fi
if [ "${1:-}" = --check ]; then
  echo "kind e2e: every prerequisite is here"
  exit 0
fi

KUBECONFIG_FILE="$(mktemp)"
cleanup() {
  rc=$?
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    log "KEEP_CLUSTER=1: cluster $CLUSTER kept (kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -f "$KUBECONFIG_FILE"
  exit "$rc"
}
trap cleanup EXIT

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "deleting the leftover cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER"
fi
log "creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --config kind-config.yaml ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} \
  --kubeconfig "$KUBECONFIG_FILE" --wait 300s
k() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

GPU_NODE="$(k get nodes -l nvidia.com/gpu.present=true -o jsonpath='{.items[0].metadata.name}')"
[ -n "$GPU_NODE" ] || { log "no node labelled nvidia.com/gpu.present=true (kind-config.yaml)"; exit 1; }
log "advertising $FAKE_GPUS fake nvidia.com/gpu on $GPU_NODE (node status patch)"
for _ in 1 2 3 4 5 6; do
  k patch node "$GPU_NODE" --subresource=status --type=json -p "[
    {\"op\":\"add\",\"path\":\"/status/capacity/nvidia.com~1gpu\",\"value\":\"$FAKE_GPUS\"},
    {\"op\":\"add\",\"path\":\"/status/allocatable/nvidia.com~1gpu\",\"value\":\"$FAKE_GPUS\"}]" >/dev/null
  sleep 5   # the kubelet's next status sync must keep the extended resource
  [ "$(k get node "$GPU_NODE" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" = "$FAKE_GPUS" ] && break
done

log "installing the KubeRay operator $KUBERAY_VERSION (RayCronJob feature gate on)"
helm --kubeconfig "$KUBECONFIG_FILE" upgrade --install kuberay-operator kuberay-operator \
  --repo https://ray-project.github.io/kuberay-helm/ --version "$KUBERAY_VERSION" \
  --namespace kuberay-system --create-namespace --wait --timeout 10m \
  --set 'featureGates[0].name=RayCronJob' --set 'featureGates[0].enabled=true'

if [ "${SKIP_IMAGE_BUILD:-0}" != 1 ]; then
  log "building the image (TORCH_VARIANT=none)"
  TORCH_VARIANT=none bash image/build.sh >/dev/null
  docker tag "shardscore:$VERSION-none" "shardscore:$VERSION"
fi
for ref in "shardscore:$VERSION" "shardscore:$VERSION-none"; do
  docker image inspect "$ref" >/dev/null
  log "loading $ref into kind"
  kind load docker-image "$ref" --name "$CLUSTER"
done

GATEWAY="$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}' | tr ' ' '\n' | grep -m1 -E '^[0-9]+\.')"
log "pods reach the host at $GATEWAY (the kind network's gateway)"

export SHARDSCORE_E2E_KUBECONFIG="$KUBECONFIG_FILE" SHARDSCORE_E2E_KUBECTL="$(command -v kubectl)"
export SHARDSCORE_E2E_HOST_ADDRESS="$GATEWAY" SHARDSCORE_E2E_KUBERAY_VERSION="v$KUBERAY_VERSION"
export SHARDSCORE_E2E_OPERATOR_NAMESPACE=kuberay-system SHARDSCORE_CLUSTER_FAKE_GPUS="$FAKE_GPUS"
export PATH="$ROOT/.tools/bin:$ROOT/.venv/bin:$PATH"
log "running the cluster e2e (tests/e2e_cluster) on kind"
.venv/bin/python -m pytest -m cluster tests/e2e_cluster -p no:cacheprovider -v -s --durations=15 "$@"
echo "PASS: kind e2e (tests/e2e_cluster on kind cluster $CLUSTER, KubeRay $KUBERAY_VERSION)"
