# shellcheck shell=bash
# Steps "etcd", "kube-apiserver", "rbac", "kube-controller-manager", "kube-scheduler": the control plane, in the
# host's network namespace, in the order of Kubernetes the Hard Way ("Bootstrapping the etcd Cluster",
# "Bootstrapping the Kubernetes Control Plane"). Each daemon runs under a pidfile in $RUN_DIR.

PKI="$STATE_DIR/pki"
KUBECONFIGS="$STATE_DIR/kubeconfigs"

# curl_pki URL [ARGS]: an HTTPS GET trusting our CA, as the admin.
curl_pki() {
  local url="$1"; shift
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@" "$url"
}

# --- etcd -----------------------------------------------------------------------------------------------------
step_etcd_ok() {
  daemon_running etcd || return 1
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/apiserver-etcd-client.crt" \
    --key "$PKI/apiserver-etcd-client.key" "https://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'
}

step_etcd_up() {
  daemon_running etcd && return 0
  mkdir -p "$STATE_DIR/etcd"
  chmod 700 "$STATE_DIR/etcd"
  # A single member on loopback; clients must present a certificate from our CA (--client-cert-auth).
  start_daemon etcd - "$ETCD_BIN" \
    --name ssc --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "ssc=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --cert-file "$PKI/etcd-server.crt" --key-file "$PKI/etcd-server.key" \
    --trusted-ca-file "$PKI/ca.crt" --client-cert-auth \
    --log-level warn
}

# --- kube-apiserver -------------------------------------------------------------------------------------------
step_kube_apiserver_ok() {
  daemon_running kube-apiserver || return 1
  [[ "$(curl_pki "$APISERVER_URL/readyz")" == ok ]]
}

step_kube_apiserver_up() {
  daemon_running kube-apiserver && return 0
  # It listens on the bridge address only: the kubelets reach it from their namespaces, pods through the
  # kubernetes Service (10.96.0.1:443 -> $HOST_IP:$APISERVER_PORT), host tools through the KUBECONFIG.
  start_daemon kube-apiserver - "$K8S_BIN/kube-apiserver" \
    --advertise-address="$HOST_IP" --bind-address="$HOST_IP" --secure-port="$APISERVER_PORT" \
    --etcd-servers="https://127.0.0.1:$ETCD_CLIENT_PORT" --etcd-cafile="$PKI/ca.crt" \
    --etcd-certfile="$PKI/apiserver-etcd-client.crt" --etcd-keyfile="$PKI/apiserver-etcd-client.key" \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/kube-apiserver.crt" --tls-private-key-file="$PKI/kube-apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file="$PKI/service-account.pub" \
    --service-account-signing-key-file="$PKI/service-account.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false --event-ttl=2h
}

# --- rbac: what the bootstrap policy does not grant ------------------------------------------------------------
step_rbac_ok() {
  kctl auth can-i get nodes/proxy --as kube-apiserver-kubelet-client >/dev/null 2>&1 &&
    kctl auth can-i watch pods --as kuberay-operator --all-namespaces >/dev/null 2>&1 &&
    kctl auth can-i watch networkpolicies.networking.k8s.io --as kube-router --all-namespaces >/dev/null 2>&1
}

step_rbac_up() {
  # The API server's calls to the kubelets (logs, exec, port-forward) are authorized by the kubelet's webhook
  # authorizer as this user (kubeadm binds the same role).
  kctl apply -f - <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shardscore-cluster:apiserver-kubelet-client
subjects:
- {kind: User, name: kube-apiserver-kubelet-client, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: system:kubelet-api-admin, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shardscore-cluster:kuberay-operator
subjects:
- {kind: User, name: kuberay-operator, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: kuberay-operator, apiGroup: rbac.authorization.k8s.io}
---
# kube-router's network policy controller (step "network-policy"): the seven informers its Run starts
# (pkg/cmd/kube-router.go at v2.1.0) must all sync, and NewNetworkPolicyController gets its own Node.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: shardscore-cluster:kube-router
rules:
- {apiGroups: [""], resources: [pods, namespaces, nodes, services, endpoints], verbs: [get, list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
- {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: shardscore-cluster:kube-router
subjects:
- {kind: User, name: kube-router, apiGroup: rbac.authorization.k8s.io}
roleRef: {kind: ClusterRole, name: shardscore-cluster:kube-router, apiGroup: rbac.authorization.k8s.io}
EOF
  # The operator's own ClusterRole, as its chart installs it (config/rbac/role.yaml of the pinned module).
  local src; src="$(kuberay_source_dir)"
  kctl apply -f "$src/config/rbac/role.yaml"
}

# --- kube-controller-manager ----------------------------------------------------------------------------------
step_kube_controller_manager_ok() {
  daemon_running kube-controller-manager || return 1
  [[ "$(curl -sS --max-time 5 --cacert "$PKI/ca.crt" "https://127.0.0.1:$KCM_PORT/healthz")" == ok ]]
}

step_kube_controller_manager_up() {
  daemon_running kube-controller-manager && return 0
  # Pod CIDRs are static per node (the CNI config names them), so the controller manager does not allocate
  # them (--allocate-node-cidrs=false, the default). Each controller gets its own service account
  # (--use-service-account-credentials), as kubeadm runs it. No leader election: there is one.
  start_daemon kube-controller-manager - "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$KUBECONFIGS/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$KUBECONFIGS/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$KUBECONFIGS/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
    --tls-cert-file="$PKI/kube-controller-manager-serving.crt" \
    --tls-private-key-file="$PKI/kube-controller-manager-serving.key" \
    --client-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/service-account.key" \
    --use-service-account-credentials=true --leader-elect=false \
    --cluster-cidr="$CLUSTER_CIDR" --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
}

# --- kube-scheduler -------------------------------------------------------------------------------------------
step_kube_scheduler_ok() {
  daemon_running kube-scheduler || return 1
  [[ "$(curl -sS --max-time 5 --cacert "$PKI/ca.crt" "https://127.0.0.1:$SCHEDULER_PORT/healthz")" == ok ]]
}

step_kube_scheduler_up() {
  daemon_running kube-scheduler && return 0
  mkdir -p "$STATE_DIR/config"
  cat >"$STATE_DIR/config/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $KUBECONFIGS/kube-scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
  start_daemon kube-scheduler - "$K8S_BIN/kube-scheduler" \
    --config="$STATE_DIR/config/kube-scheduler.yaml" \
    --authentication-kubeconfig="$KUBECONFIGS/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$KUBECONFIGS/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" \
    --tls-cert-file="$PKI/kube-scheduler-serving.crt" --tls-private-key-file="$PKI/kube-scheduler-serving.key" \
    --client-ca-file="$PKI/ca.crt" --profiling=false
}
