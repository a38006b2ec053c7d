#!/usr/bin/env bash
# End-to-end test of the Helm chart on a kind cluster with the KubeRay operator (`make e2e-kind`).
#
# kind cluster (kind-config.yaml: control plane, CPU worker, GPU-labelled + tainted worker with fake
# nvidia.com/gpu capacity) -> KubeRay operator 1.7.0 (Helm) -> the shardscore image (make image, kind load)
# -> in-cluster S3 (moto server) + sample data -> helm install with ci/gpu-values.yaml + tests/e2e_kind/values.yaml
# -> RayJob SUCCEEDED -> output checked (_SUCCESS, rows) -> GPU worker ran on the GPU node -> helm test.
#
# Needs docker (a running engine), kind, kubectl, helm and network access to pull the kind node image,
# the KubeRay operator image and chart, and the moto server image. Where a tool is missing it prints a SKIP line
# naming it and exits 0 without claiming success.
#
# Environment: SHARDSCORE_IMAGE (default shardscore:0.1.0, the chart's default image), SKIP_IMAGE_BUILD=1 (use an
# existing local image), MOTO_IMAGE (default docker.io/motoserver/moto:5.2.3), KEEP_CLUSTER=1 (no cleanup),
# KIND_CLUSTER (default shardscore-e2e), E2E_TIMEOUT (seconds to wait for the RayJob, default 1200).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/e2e_kind"
CLUSTER="${KIND_CLUSTER:-shardscore-e2e}"
NS=shardscore-e2e
RELEASE=shardscore
IMAGE="${SHARDSCORE_IMAGE:-shardscore:0.1.0}"
MOTO_IMAGE="${MOTO_IMAGE:-docker.io/motoserver/moto:5.2.3}"
TIMEOUT="${E2E_TIMEOUT:-1200}"
KUBERAY_VERSION=1.7.0

log() { echo "e2e-kind: $*" >&2; }

# ---------------------------------------------------------------- prerequisites
missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker engine")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "SKIP: kind e2e not run: missing: $(IFS=,; echo "${missing[*]}" | sed 's/,/, /g')"
  exit 0
fi

KCTX="kind-$CLUSTER"
k() { kubectl --context "$KCTX" "$@"; }
kn() { kubectl --context "$KCTX" -n "$NS" "$@"; }

diagnose() {
  log "---- diagnostics"
  kn get rayjob,raycluster,pods,jobs -o wide || true
  kn describe rayjob "$RELEASE-shardscore" | tail -40 || true
  kn logs "job/$RELEASE-shardscore" --tail=200 || true
  kn logs -l ray.io/node-type=head -c ray-head --tail=100 || true
  k -n kuberay-system logs deploy/kuberay-operator --tail=100 || true
}

cleanup() {
  rc=$?
  if [ "$rc" -ne 0 ]; then diagnose; fi
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    log "KEEP_CLUSTER=1: cluster $CLUSTER kept (kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- cluster
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "deleting the leftover cluster $CLUSTER"
  kind delete cluster --name "$CLUSTER"
fi
log "creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 180s

GPU_NODE="$(k get nodes -l nvidia.com/gpu.present=true -o jsonpath='{.items[0].metadata.name}')"
CPU_NODE="$(k get nodes -l shardscore.io/pool=cpu -o jsonpath='{.items[0].metadata.name}')"
[ -n "$GPU_NODE" ] && [ -n "$CPU_NODE" ] || { log "kind-config.yaml node labels missing"; exit 1; }
log "advertising 2 fake nvidia.com/gpu on $GPU_NODE (node status patch)"
k patch node "$GPU_NODE" --subresource=status --type=json \
  -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"2"},{"op":"add","path":"/status/allocatable/nvidia.com~1gpu","value":"2"}]'
sleep 15   # the kubelet syncs the node status; the extended resource must survive it
gpus="$(k get node "$GPU_NODE" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')"
[ "$gpus" = 2 ] || { log "nvidia.com/gpu allocatable on $GPU_NODE is '$gpus', expected 2"; exit 1; }
k get node "$GPU_NODE" -o jsonpath='{.spec.taints}' | grep -q nvidia.com/gpu || { log "GPU node has no nvidia.com/gpu taint"; exit 1; }

# ---------------------------------------------------------------- KubeRay operator
log "installing the KubeRay operator $KUBERAY_VERSION"
helm --kube-context "$KCTX" upgrade --install kuberay-operator kuberay-operator \
  --repo https://ray-project.github.io/kuberay-helm/ --version "$KUBERAY_VERSION" \
  --namespace kuberay-system --create-namespace --wait --timeout 10m
k get crd rayclusters.ray.io rayjobs.ray.io >/dev/null

# ---------------------------------------------------------------- image
if [ "${SKIP_IMAGE_BUILD:-0}" != 1 ]; then
  log "building the image (make image)"
  make -C "$ROOT" image
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || { log "image $IMAGE not found (set SHARDSCORE_IMAGE to the tag make image builds)"; exit 1; }
log "loading $IMAGE into kind"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# ---------------------------------------------------------------- object store and data
k create namespace "$NS"
sed "s|MOTO_IMAGE|$MOTO_IMAGE|" "$HERE/s3.yaml" | kn apply -f -
kn rollout status deploy/s3 --timeout=5m
sed "s|IMAGE|$IMAGE|" "$HERE/sample-data-job.yaml" | kn apply -f -
kn wait --for=condition=complete job/sample-data --timeout=10m
kn logs job/sample-data | tail -5

# ---------------------------------------------------------------- the chart
log "helm install $RELEASE (gpu values)"
helm --kube-context "$KCTX" install "$RELEASE" "$ROOT/helm/shardscore" --namespace "$NS" \
  -f "$ROOT/helm/shardscore/ci/gpu-values.yaml" -f "$HERE/values.yaml" \
  --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" --wait --timeout 10m

RAYJOB="$RELEASE-shardscore"
log "waiting for RayJob $RAYJOB (timeout ${TIMEOUT}s)"
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  state="$(kn get rayjob "$RAYJOB" -o 'jsonpath={.status.jobDeploymentStatus}/{.status.jobStatus}' 2>/dev/null || true)"
  case "$state" in
    */SUCCEEDED) log "RayJob $RAYJOB: $state"; break ;;
    Failed/*|*/FAILED|*/STOPPED|ValidationFailed/*) log "RayJob $RAYJOB: $state"; exit 1 ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || { log "RayJob $RAYJOB still '$state' after ${TIMEOUT}s"; exit 1; }
  sleep 10
done
kn logs "job/$RAYJOB" --tail=30 || true

# ---------------------------------------------------------------- checks
log "checking the output"
sed "s|IMAGE|$IMAGE|" "$HERE/check-output-job.yaml" | kn apply -f -
if ! kn wait --for=condition=complete job/check-output --timeout=5m; then kn logs job/check-output; exit 1; fi
kn logs job/check-output

log "checking GPU placement"
CLUSTER_NAME="$(kn get rayjob "$RAYJOB" -o jsonpath='{.status.rayClusterName}')"
gpu_nodes="$(kn get pods -l "ray.io/cluster=$CLUSTER_NAME,ray.io/group=gpu" -o jsonpath='{.items[*].spec.nodeName}')"
cpu_nodes="$(kn get pods -l "ray.io/cluster=$CLUSTER_NAME,ray.io/group=cpu" -o jsonpath='{.items[*].spec.nodeName}')"
log "GPU worker pods on: $gpu_nodes; CPU worker pods on: $cpu_nodes"
[ -n "$gpu_nodes" ] || { log "no GPU worker pod"; exit 1; }
for n in $gpu_nodes; do [ "$n" = "$GPU_NODE" ] || { log "GPU worker on $n, not $GPU_NODE"; exit 1; }; done
for n in $cpu_nodes; do [ "$n" != "$GPU_NODE" ] || { log "CPU worker on the GPU node"; exit 1; }; done

log "helm test"
helm --kube-context "$KCTX" test "$RELEASE" --namespace "$NS" --timeout 5m --logs

echo "PASS: kind e2e (RayJob SUCCEEDED, output checked, GPU worker on $GPU_NODE)"
