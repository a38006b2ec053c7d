# shellcheck shell=bash
# Steps "kuberay-crds" and "kuberay-operator": the KubeRay CRDs of the operator's source
# (config/crd/bases), then the operator itself, out of cluster on the host, as the user kuberay-operator with
# the operator's own ClusterRole (step "rbac").
#
#   --feature-gates=RayCronJob=true  the RayCronJob controller (alpha, off by default)
#   --enable-leader-election=false   one replica
#   --use-kubernetes-proxy           its calls to the Ray dashboard (RayJob status, job submission checks) go
#                                    through the API server's service proxy, not to <head-svc>.svc.cluster.local,
#                                    which the host cannot resolve
#   --metrics-addr, --health-probe-bind-address  loopback and ports of ours (the defaults :8080 and :8082 are
#                                    Ray's and everyone's)
# SHARDSCORE_CLUSTER_KUBERAY_CRDS=<dir> installs other CRDs instead (e.g. .tools/kuberay-crds: make crds).

kuberay_crd_dir() {
  if [[ -n "${SHARDSCORE_CLUSTER_KUBERAY_CRDS:-}" ]]; then echo "$SHARDSCORE_CLUSTER_KUBERAY_CRDS"; return 0; fi
  local src; src="$(kuberay_source_dir)" || return 1
  echo "$src/config/crd/bases"
}

step_kuberay_crds_ok() {
  local crd
  for crd in rayclusters rayjobs raycronjobs rayservices; do
    [[ "$(kctl get crd "$crd.ray.io" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' \
          2>/dev/null)" == True ]] || return 1
  done
}

step_kuberay_crds_up() {
  local dir; dir="$(kuberay_crd_dir)"
  # Server-side apply: the CRDs' OpenAPI schemas are larger than the 256 KiB last-applied annotation that a
  # client-side apply would write.
  kctl apply --server-side --force-conflicts -f "$dir"
}

step_kuberay_operator_ok() {
  daemon_running kuberay-operator || return 1
  [[ "$(curl -sS --max-time 5 "http://127.0.0.1:$OPERATOR_PROBE_PORT/readyz")" == ok ]]
}

step_kuberay_operator_up() {
  daemon_running kuberay-operator && return 0
  start_daemon kuberay-operator - "$KUBERAY_BIN" \
    --kubeconfig="$STATE_DIR/kubeconfigs/kuberay-operator.kubeconfig" \
    --feature-gates=RayCronJob=true --enable-leader-election=false --use-kubernetes-proxy \
    --metrics-addr="127.0.0.1:$OPERATOR_METRICS_PORT" \
    --health-probe-bind-address="127.0.0.1:$OPERATOR_PROBE_PORT" \
    --log-stdout-encoder=console
}
