# shellcheck shell=bash
# Step "pki": one CA and a certificate per component, as in Kubernetes the Hard Way's "Provisioning a CA and
# Generating TLS Certificates" (openssl; ECDSA P-256 keys, which every component accepts and which are made in
# milliseconds), the service-account signing key, and a kubeconfig per client.
#
# Identities (the API server's Node and RBAC authorizers read the CN as the user, O as the groups):
#   admin                      CN=shardscore-admin O=system:masters     (the KUBECONFIG make cluster prints)
#   kube-controller-manager    CN=system:kube-controller-manager
#   kube-scheduler             CN=system:kube-scheduler
#   kube-proxy                 CN=system:kube-proxy                     (bound by the system:node-proxier role)
#   kubelet on node N          CN=system:node:N O=system:nodes          (Node authorizer + NodeRestriction)
#   kube-apiserver -> kubelet  CN=kube-apiserver-kubelet-client         (bound to system:kubelet-api-admin)
#   kube-apiserver -> etcd     CN=kube-apiserver-etcd-client
#   KubeRay operator           CN=kuberay-operator                      (bound to the operator's own ClusterRole)
#   kube-router (both nodes)   CN=kube-router                           (bound to shardscore-cluster:kube-router)

PKI_DIR="$STATE_DIR/pki"
PKI_DAYS=365

pki_clients() { echo admin kube-controller-manager kube-scheduler kube-proxy kuberay-operator kube-router; }

step_pki_ok() {
  [[ -f "$PKI_DIR/.complete" ]] || return 1
  local client
  for client in $(pki_clients); do [[ -f "$STATE_DIR/kubeconfigs/$client.kubeconfig" ]] || return 1; done
  openssl x509 -checkend 86400 -noout -in "$PKI_DIR/ca.crt"
}

step_pki_up() {
  rm -rf "$PKI_DIR"
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  pki_key ca
  openssl req -x509 -new -key "$PKI_DIR/ca.key" -sha256 -days "$((PKI_DAYS * 2))" \
    -subj "/CN=shardscore-cluster-ca" -out "$PKI_DIR/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"

  pki_cert kube-apiserver "/CN=kube-apiserver" server \
    "IP:$KUBERNETES_SVC_IP,IP:$HOST_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
  pki_cert etcd-server "/CN=etcd" server "IP:127.0.0.1,DNS:localhost"
  pki_cert apiserver-etcd-client "/CN=kube-apiserver-etcd-client" client
  pki_cert apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" client
  pki_cert admin "/O=system:masters/CN=shardscore-admin" client
  pki_cert kube-controller-manager "/CN=system:kube-controller-manager" client
  pki_cert kube-scheduler "/CN=system:kube-scheduler" client
  pki_cert kube-proxy "/CN=system:kube-proxy" client
  pki_cert kuberay-operator "/CN=kuberay-operator" client
  pki_cert kube-router "/CN=kube-router" client
  # The controller manager and the scheduler serve their own /healthz; a cert for 127.0.0.1 keeps them from
  # writing self-signed ones into the working directory.
  pki_cert kube-controller-manager-serving "/CN=kube-controller-manager" server "IP:127.0.0.1,DNS:localhost"
  pki_cert kube-scheduler-serving "/CN=kube-scheduler" server "IP:127.0.0.1,DNS:localhost"
  local node
  for node in "${NODES[@]}"; do
    pki_cert "kubelet-$node" "/O=system:nodes/CN=system:node:${NODE_NAME[$node]}" client
    pki_cert "kubelet-$node-serving" "/CN=${NODE_NAME[$node]}" server \
      "IP:${NODE_IP[$node]},DNS:${NODE_NAME[$node]},IP:127.0.0.1"
  done

  # Service-account tokens: the API server signs them (--service-account-signing-key-file) and verifies them
  # with the public key; the controller manager signs the legacy token Secrets with the same key.
  pki_key service-account
  openssl pkey -in "$PKI_DIR/service-account.key" -pubout -out "$PKI_DIR/service-account.pub"

  local client
  for client in $(pki_clients); do write_kubeconfig "$client" "$client"; done
  for node in "${NODES[@]}"; do write_kubeconfig "kubelet-$node" "kubelet-$node"; done
  cp "$STATE_DIR/kubeconfigs/admin.kubeconfig" "$KUBECONFIG_PATH"
  touch "$PKI_DIR/.complete"
}

pki_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI_DIR/$1.key" 2>/dev/null; }

# pki_cert NAME SUBJECT server|client [SANS]: a key and a certificate signed by the CA.
pki_cert() {
  local name="$1" subject="$2" kind="$3" sans="${4:-}" ext="$PKI_DIR/$1.ext"
  pki_key "$name"
  openssl req -new -key "$PKI_DIR/$name.key" -subj "$subject" -out "$PKI_DIR/$name.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ "$kind" == server ]]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$sans"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" -CAcreateserial \
    -sha256 -days "$PKI_DAYS" -extfile "$ext" -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$PKI_DIR/$name.csr" "$ext"
}

# write_kubeconfig NAME CERT: a kubeconfig with the CA and the client certificate embedded, so the file works
# from any working directory and can be copied (the admin one is what `make cluster` prints).
write_kubeconfig() {
  local name="$1" cert="$2" dir="$STATE_DIR/kubeconfigs"
  mkdir -p "$dir"
  cat >"$dir/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: shardscore
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 <"$PKI_DIR/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$PKI_DIR/$cert.crt")
    client-key-data: $(base64 -w0 <"$PKI_DIR/$cert.key")
contexts:
- name: shardscore
  context:
    cluster: shardscore
    user: $name
current-context: shardscore
EOF
  chmod 600 "$dir/$name.kubeconfig"
}
