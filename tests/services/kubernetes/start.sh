#!/bin/bash
# Start the test Kubernetes: a control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler) and one real node (containerd with its
# own config/root/state/socket, kubelet, kube-proxy, CoreDNS on the host) on the
# bridge kd0 10.244.0.1/24. Idempotent: a running cluster is checked and kept.
# Needs build.sh and images.sh to have run. Prints the admin kubeconfig's path;
# $RUN/env.sh exports KUBECONFIG and the image names. See README.md.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
. "$K8S_DIR/pki.sh"
need_root
T0=$(now_ms)
# one start/stop at a time (the lock file lives in the cache: $RUN comes and goes)
mkdir -p "$KCACHE"
exec 9>"$KCACHE/.lock"
flock -w 300 9 || die "another start.sh/stop.sh holds $KCACHE/.lock"

for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [ -x "$(k8s_bin "$b")" ] || die "$(k8s_bin "$b") missing: run $K8S_DIR/build.sh first"
done
for b in "$(etcd_bin)" "$(crictl_bin)" "$(coredns_bin)"; do
    [ -x "$b" ] || die "$b missing: run $K8S_DIR/build.sh first"
done
for i in pause dask; do
    [ -s "$KIMG/$i.ref" ] || die "image $i not built: run $K8S_DIR/images.sh first"
done
need_apt containerd runc containernetworking-plugins iptables conntrack nftables openssl curl

FRESH=
[ -e "$RUN/created" ] || FRESH=1   # a new cluster (not a re-run on a running one)
mkdir -p "$RUN"/{pids,logs}
chmod 700 "$RUN"

# --- what existed before us (stop.sh removes only what we created) ----------------
remember() { # key: 1 if we create PATH now
    local key=$1 path=$2
    grep -qx "$key=.*" "$RUN/created" 2>/dev/null && return 0
    if [ -e "$path" ]; then echo "$key=0" >>"$RUN/created"; else echo "$key=1" >>"$RUN/created"; fi
}
remember run_containerd /run/containerd
remember var_log_containers /var/log/containers
remember var_log_pods /var/log/pods
remember var_lib_cni /var/lib/cni
remember var_run_netns /var/run/netns
remember var_lib_kubelet /var/lib/kubelet   # device-plugins/kubelet.sock, whatever --root-dir
remember bridge "/sys/class/net/$BRIDGE"
remember cgroup_kubepods /sys/fs/cgroup/memory/kubepods
[ -e "$RUN/netns.before" ] || { ls /var/run/netns 2>/dev/null || true; } >"$RUN/netns.before"
# iptables-nft makes nftables tables (ip nat, ip6 mangle...) on first use
[ -e "$RUN/nft.before" ] || nft list tables >"$RUN/nft.before"

# --- sysctls: save the machine's values once, then set ours ------------------------------
if [ ! -s "$RUN/sysctl.saved" ]; then
    for s in "${SYSCTLS[@]}"; do
        v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v"
    done >"$RUN/sysctl.saved.tmp"
    mv "$RUN/sysctl.saved.tmp" "$RUN/sysctl.saved"
fi

# --- the bridge ---------------------------------------------------------------------------
if [ ! -e "/sys/class/net/$BRIDGE" ]; then
    # refuse an address range somebody else already uses
    if ip -4 -o addr show | awk '{print $2, $4}' | grep -v "^$BRIDGE " | grep -q ' 10\.244\.0\.'; then
        die "another interface already has an address in $POD_CIDR"
    fi
    ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
    say "bridge $BRIDGE created"
fi
ip addr replace "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null ||
    die "bridge netfilter (br_netfilter) is not available"
# pod -> ClusterIP -> pod on the same bridge needs both
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

# --- configuration (written only when changed: kube-proxy exits on a rewrite) -------
CHANGED=" "
put() { # FILE COMPONENT < content
    local f=$1 tmp; tmp="$1.tmp.$$"
    mkdir -p "$(dirname "$f")"
    cat >"$tmp"
    if [ -f "$f" ] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; return 0; fi
    mv -f "$tmp" "$f"
    CHANGED="$CHANGED$2 "
}

if make_pki; then
    CHANGED="$CHANGED kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns "
fi

put "$RUN/cni/net.d/10-muster.conflist" containerd <<EOF
{
  "cniVersion": "1.0.0",
  "name": "muster-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP", "rangeStart": "10.244.0.10"}]],
        "routes": [{"dst": "$SERVICE_CIDR", "gw": "$NODE_IP"}]
      }
    }
  ]
}
EOF

put "$RUN/containerd/config.toml" containerd <<EOF
# containerd of the muster test cluster only (never the machine's /etc/containerd)
version = 2
root = "$CTRD_ROOT"
state = "$RUN/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$RUN/containerd/containerd.sock"
[ttrpc]
  address = "$RUN/containerd/containerd.sock.ttrpc"
[debug]
  address = "$RUN/containerd/debug.sock"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$RUN/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # this machine lacks CAP_SYS_RESOURCE: without this runc fails every sandbox
  restrict_oom_score_adj = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state (default /run/containerd/runc/<namespace>) in our run dir
        Root = "$RUN/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
    max_conf_num = 1
EOF

# the pods' resolv.conf base: no upstream resolver, only the cluster's
put "$RUN/resolv.conf" kubelet <<EOF
nameserver $NODE_IP
EOF

put "$RUN/kubelet/config.yaml" kubelet <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$RUN/containerd/containerd.sock
imageServiceEndpoint: unix://$RUN/containerd/containerd.sock
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
oomScoreAdj: 0
clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $RUN/resolv.conf
podLogsDir: $RUN/pod-logs
maxPods: 250
makeIPTablesUtilChains: false
rotateCertificates: false
serverTLSBootstrap: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 300Mi, imagefs.available: 300Mi, nodefs.inodesFree: 1%}
syncFrequency: 10s
fileCheckFrequency: 20s
nodeStatusUpdateFrequency: 5s
EOF

put "$RUN/kube-proxy/config.yaml" kube-proxy <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $RUN/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
nodePortAddresses: ["$NODE_IP/32"]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
oomScoreAdj: 0
iptables: {localhostNodePorts: false, masqueradeAll: false}
# leave the machine's conntrack settings alone
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF

put "$RUN/coredns/Corefile" coredns <<EOF
$CLUSTER_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $RUN/coredns.kubeconfig muster-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    template ANY ANY in-addr.arpa ip6.arpa {
        rcode NXDOMAIN
    }
}
# no forwarders: nothing leaves the machine; other names do not exist
.:53 {
    bind $NODE_IP
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF

# --- launching ---------------------------------------------------------------------------
# Each component runs detached, with a clean environment, its log in $RUN/logs.
# A running component is kept unless its config file or its command line changed.
launch() { # NAME ARGV...
    local name=$1 sig; shift
    sig=$(printf '%s\0' "$@" | sha256sum | cut -c1-16)
    printf '%q ' "$@" >"$RUN/pids/$name.cmd"   # to start it again (see wait_for)
    if component_pid "$name" >/dev/null; then
        case "$CHANGED" in
            *" $name "*) say "$name config changed: restarting"; stop_component "$name" ;;
            *) if [ "$(cat "$RUN/pids/$name.args" 2>/dev/null)" = "$sig" ]; then return 0; fi
               say "$name command line changed: restarting"; stop_component "$name" ;;
        esac
    fi
    echo "$sig" >"$RUN/pids/$name.args"
    # the previous run's log is kept as .log.1
    [ ! -f "$RUN/logs/$name.log" ] || mv -f "$RUN/logs/$name.log" "$RUN/logs/$name.log.1"
    setsid env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME="$RUN" "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$RUN/pids/$name.pid"
    STARTED="$STARTED $name"
    LAUNCHED[$name]=1
}
declare -A LAUNCHED=() RELAUNCHED=()
stop_component() {
    local pid i
    pid=$(component_pid "$1") || return 0
    kill "$pid" 2>/dev/null || true
    for i in $(seq 100); do alive_as "$pid" "$RUN" || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}
STARTED=

# wait_for WHAT TIMEOUT_S COMPONENT CMD...: polls CMD every 0.2 s
wait_for() {
    local what=$1 timeout=$2 comp=$3 t0 deadline; shift 3
    t0=$(now_ms); deadline=$(( t0 + timeout * 1000 ))
    until "$@" >/dev/null 2>&1; do
        if [ -n "$comp" ] && ! component_pid "$comp" >/dev/null; then
            if [ -z "${LAUNCHED[$comp]:-}" ] && [ -z "${RELAUNCHED[$comp]:-}" ]; then
                # it was running when we looked, and was on its way out (a
                # SIGTERM'd kube-apiserver drains for up to 60 s): start it anew
                RELAUNCHED[$comp]=1
                say "$comp exited (it was shutting down): starting it again"
                eval "launch $comp $(cat "$RUN/pids/$comp.cmd")"
                deadline=$(( $(now_ms) + timeout * 1000 ))
                continue
            fi
            tail -25 "$RUN/logs/$comp.log" >&2
            die "$comp exited while waiting for $what (log: $RUN/logs/$comp.log)"
        fi
        [ "$(now_ms)" -lt "$deadline" ] || {
            [ -z "$comp" ] || tail -25 "$RUN/logs/$comp.log" >&2
            die "timed out after ${timeout}s waiting for $what"
        }
        sleep 0.2
    done
    say "$what ($(since "$T0"))"
}

# ports of ours that something else might hold
port_free() { ! ss -Hltn "sport = :$2" | awk '{print $4}' | grep -qxF "$1:$2"; }
for spec in "127.0.0.1 $ETCD_CLIENT_PORT etcd" "127.0.0.1 $ETCD_PEER_PORT etcd" \
    "$NODE_IP $APISERVER_PORT kube-apiserver" "127.0.0.1 10257 kube-controller-manager" \
    "127.0.0.1 10259 kube-scheduler" "$NODE_IP 10250 kubelet" "127.0.0.1 10248 kubelet" \
    "127.0.0.1 10256 kube-proxy" "127.0.0.1 10249 kube-proxy"; do
    set -- $spec
    component_pid "$3" >/dev/null || port_free "$1" "$2" || die "port $1:$2 (for $3) is taken"
done

# 1. etcd
launch etcd "$(etcd_bin)" --name muster-test --data-dir "$RUN/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "muster-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "" --log-level warn --quota-backend-bytes 2147483648
wait_for "etcd healthy" 30 etcd curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

# 2. the API server, on the bridge address so pods reach kubernetes.default.svc
launch kube-apiserver "$(k8s_bin kube-apiserver)" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --service-cluster-ip-range "$SERVICE_CIDR" --cert-dir "$RUN/apiserver" \
    --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
    --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --authorization-mode Node,RBAC --allow-privileged=true --profiling=false \
    --enable-bootstrap-token-auth=false --v=1
wait_for "kube-apiserver ready" 60 kube-apiserver kubectl_k8s get --raw /readyz

# 3. controller manager and scheduler
launch kube-controller-manager "$(k8s_bin kube-controller-manager)" \
    --kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10257 --cert-dir "$RUN/controller-manager" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --use-service-account-credentials=true --leader-elect=false --profiling=false --v=1
launch kube-scheduler "$(k8s_bin kube-scheduler)" \
    --kubeconfig "$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig "$RUN/scheduler.kubeconfig" \
    --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false --profiling=false --v=1

# 4. containerd (its own config, root, state and socket), then the images
mkdir -p "$CTRD_ROOT"
launch containerd containerd --config "$RUN/containerd/config.toml"
wait_for "containerd up" 30 containerd ctr_k8s version
put "$RUN/crictl.yaml" crictl <<EOF
runtime-endpoint: unix://$RUN/containerd/containerd.sock
image-endpoint: unix://$RUN/containerd/containerd.sock
timeout: 10
EOF
if [ -n "$FRESH" ]; then
    # sandboxes a crashed run left in the cached containerd root: not of this cluster
    stale=$(crictl_k8s pods -q 2>/dev/null || true)
    for p in $stale; do crictl_k8s rmp -f "$p" >/dev/null 2>&1 || true; done
    [ -z "$stale" ] || say "removed $(echo "$stale" | wc -w) stale pod sandbox(es) of an earlier run"
fi
for ref in "$KIMG"/*.ref; do
    read -r tarname tags <"$ref"
    missing=0
    for t in $tags; do ctr_k8s images ls -q "name==$t" | grep -qxF "$t" || missing=1; done
    [ "$missing" = 0 ] && continue
    t1=$(now_ms)
    ctr_k8s images import --snapshotter overlayfs "$KIMG/$tarname" >/dev/null ||
        die "importing $KIMG/$tarname failed"
    say "imported $tags ($(since "$t1"))"
done

# 5. kubelet and kube-proxy (the kubelet changes the kernel settings saved above)
launch kubelet "$(k8s_bin kubelet)" --config "$RUN/kubelet/config.yaml" \
    --kubeconfig "$RUN/kubelet.kubeconfig" --root-dir "$RUN/kubelet" \
    --cert-dir "$RUN/kubelet/pki" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v=1
launch kube-proxy "$(k8s_bin kube-proxy)" --config "$RUN/kube-proxy/config.yaml" --v=1

# 6. CoreDNS on the host at the bridge address, allowed to read what it serves
kubectl_k8s apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "muster-test:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "muster-test:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "muster-test:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:muster-test-coredns}
EOF
launch coredns "$(coredns_bin)" -conf "$RUN/coredns/Corefile"

# --- ready? --------------------------------------------------------------------------------
node_ready() {
    [ "$(kubectl_k8s get node "$NODE_NAME" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
dns_resolves() { # the Service of the API server, by name, from the cluster DNS
    [ "$("$K8S_DIR/dnsq.py" "$NODE_IP" "kubernetes.default.svc.$CLUSTER_DOMAIN")" = "$KUBERNETES_SVC_IP" ]
}
wait_for "node $NODE_NAME Ready" 90 kubelet node_ready
wait_for "CoreDNS resolves kubernetes.default.svc" 30 coredns dns_resolves
wait_for "default service account" 30 kube-controller-manager \
    kubectl_k8s -n default get serviceaccount default
# a misspelt config field is only logged ("lenient decoding"): refuse it
for c in kubelet kube-proxy; do
    line=$(grep -m1 "strict decoding" "$RUN/logs/$c.log" || true)
    [ -z "$line" ] || die "$c ignored part of its config: $line"
done
for c in kube-scheduler kube-proxy; do
    component_pid "$c" >/dev/null || { tail -20 "$RUN/logs/$c.log" >&2; die "$c is not running"; }
done

# The kubelet set kernel.panic=10 and kernel.panic_on_oops=1 at its start (it does
# so once): a production node's crash policy, not this shared machine's. The
# tests need neither: put the machine's values back now (stop.sh restores the rest).
for s in kernel.panic kernel.panic_on_oops; do
    kv=$(grep "^$s=" "$RUN/sysctl.saved" || true)
    [ -z "$kv" ] || sysctl -qw "$kv" || say "warning: cannot restore $kv"
done

read -r _ dask_tags <"$KIMG/dask.ref"
cat >"$RUN/env.sh" <<EOF
export KUBECONFIG=$KUBECONFIG_PATH
export MUSTER_K8S_KUBECTL=$(k8s_bin kubectl)
export MUSTER_K8S_HELM=$(helm_bin)
export MUSTER_K8S_KUBECONFORM=$(kubeconform_bin)
export MUSTER_K8S_SCHEMAS=$KCACHE/schemas
export MUSTER_K8S_DASK_IMAGE=${dask_tags%% *}
export MUSTER_K8S_NODE=$NODE_NAME
EOF
say "cluster up in $(since "$T0")${STARTED:+ (started:$STARTED)}; KUBECONFIG=$KUBECONFIG_PATH"
echo "$KUBECONFIG_PATH"
