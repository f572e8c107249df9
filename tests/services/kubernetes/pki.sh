# shellcheck shell=bash
# The cluster's PKI and kubeconfigs, made with openssl (P-256 keys: instant).
# Sourced by start.sh after lib.sh. Files go to $RUN/pki; a kubeconfig per
# client to $RUN/<name>.kubeconfig, certificates embedded.

PKI="$RUN/pki"

# cert NAME CN ORG USAGE [SAN]: a key and a certificate signed by the cluster CA
# (or by $PKI/$CA.crt when CA is set).
# USAGE is serverAuth, clientAuth or "serverAuth,clientAuth".
cert() {
    local name=$1 cn=$2 org=$3 usage=$4 san=${5:-} subj ext ca=${CA:-ca}
    subj="/CN=$cn"
    [ -z "$org" ] || subj="/O=$org$subj"
    ext="$PKI/$name.ext"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$usage"
        [ -z "$san" ] || echo "subjectAltName=$san"
    } >"$ext"
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days 30 -extfile "$ext" \
        -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

# kubeconfig NAME CERTNAME: $RUN/NAME.kubeconfig for the client cert CERTNAME.
kubeconfig() {
    local out="$RUN/$1.kubeconfig" tmp
    tmp="$out.tmp"
    cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: muster-test
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$2.crt")
    client-key-data: $(base64 -w0 <"$PKI/$2.key")
contexts:
- name: muster-test
  context:
    cluster: muster-test
    user: $1
current-context: muster-test
EOF
    chmod 600 "$tmp"
    mv -f "$tmp" "$out"
}

PKI_VERSION=2   # bump when the set of certificates changes

# Makes the PKI unless the current version is there. Returns 0 if it made it
# (then every component must be restarted to pick it up), 1 if it was there.
make_pki() {
    [ "$(cat "$PKI/.complete" 2>/dev/null)" = "$PKI_VERSION" ] && return 1
    local t0; t0=$(now_ms)
    rm -rf "$PKI"; mkdir -p "$PKI"; chmod 700 "$PKI"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 30 -subj "/CN=muster-test-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    local svc="kubernetes,kubernetes.default,kubernetes.default.svc,kubernetes.default.svc.$CLUSTER_DOMAIN"
    cert apiserver kube-apiserver "" serverAuth \
        "DNS:${svc//,/,DNS:},DNS:localhost,IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1"
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
    cert admin muster-test-admin system:masters clientAuth
    cert controller-manager system:kube-controller-manager "" clientAuth
    cert scheduler system:kube-scheduler "" clientAuth
    cert kubelet "system:node:$NODE_NAME" system:nodes clientAuth
    cert kubelet-serving "system:node:$NODE_NAME" system:nodes serverAuth \
        "DNS:$NODE_NAME,IP:$NODE_IP"
    cert kube-proxy system:kube-proxy "" clientAuth
    # the aggregation layer's own CA and client (requestheader authentication)
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" -days 30 \
        -subj "/CN=muster-test-front-proxy-ca" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    CA=front-proxy-ca cert front-proxy-client front-proxy-client "" clientAuth
    cert coredns system:muster-test-coredns "" clientAuth
    # the service-account token signing key
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    kubeconfig admin admin
    kubeconfig controller-manager controller-manager
    kubeconfig scheduler scheduler
    kubeconfig kubelet kubelet
    kubeconfig kube-proxy kube-proxy
    kubeconfig coredns coredns
    echo "$PKI_VERSION" >"$PKI/.complete"
    say "PKI and kubeconfigs made ($(since "$t0"))"
}
