# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for the test Kubernetes; sourced by the other
# scripts, not run. Everything this cluster creates on the machine is named
# here, so start.sh and stop.sh agree on it (see README.md).

set -euo pipefail

K8S_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$K8S_DIR/../../.." && pwd)"

# --- versions (each keys its cached binary) -----------------------------------
K8S_VERSION=v1.34.4          # kubelet >= 1.35 refuses cgroup v1, which this host has
K8S_STAGING=v0.34.4          # the k8s.io/* staging modules that go with it
ETCD_VERSION=v3.6.16
CRICTL_VERSION=v1.34.0
COREDNS_VERSION=v1.14.7
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0

# --- where things live ---------------------------------------------------------
CACHE_ROOT="${MUSTER_CACHE:-$HOME/.cache/muster}"
KCACHE="$CACHE_ROOT/kubernetes"            # kept across runs (binaries, images)
KBIN="$KCACHE/bin"                          # $KBIN/<tool>-<version>/<tool>
KSRC="$KCACHE/src"                          # generated wrapper Go modules
KIMG="$KCACHE/images"                       # docker-save tars, keyed by content
# Everything of one running cluster (configs, PKI, state, logs, sockets).
# stop.sh deletes it. Not under the cache: it must not survive a reboot.
RUN="${MUSTER_K8S_RUN:-/run/muster-k8s}"
# containerd's content store and snapshots: kept across runs so a warm start
# needs no image import; only images live there once stop.sh has run.
CTRD_ROOT="$KCACHE/containerd-root"

k8s_bin()         { echo "$KBIN/kubernetes-$K8S_VERSION/$1"; }
etcd_bin()        { echo "$KBIN/etcd-$ETCD_VERSION/etcd"; }
crictl_bin()      { echo "$KBIN/crictl-$CRICTL_VERSION/crictl"; }
coredns_bin()     { echo "$KBIN/coredns-$COREDNS_VERSION/coredns"; }
helm_bin()        { echo "$KBIN/helm-$HELM_VERSION/helm"; }
kubeconform_bin() { echo "$KBIN/kubeconform-$KUBECONFORM_VERSION/kubeconform"; }

# --- network (nothing leaves the machine) ---------------------------------------
# The SSH test hosts use mbr0 10.200.0.0/24; YARN uses loopback ports 230xx.
BRIDGE=kd0
NODE_IP=10.244.0.1                 # the bridge's address: node IP, apiserver, DNS
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
APISERVER_PORT=6443
ETCD_CLIENT_PORT=12379             # loopback only, not etcd's default 2379
ETCD_PEER_PORT=12380
NODE_NAME=muster-node
CLUSTER_DOMAIN=cluster.local
KUBECONFIG_PATH="$RUN/admin.kubeconfig"

# --- images ------------------------------------------------------------------------
PAUSE_IMAGE=muster.test/pause:v1

# The kernel settings start.sh (and the kubelet, on its start) change; their
# old values are saved in $RUN/sysctl.saved and put back by stop.sh.
SYSCTLS=(
    net.ipv4.ip_forward
    net.bridge.bridge-nf-call-iptables
    net.bridge.bridge-nf-call-ip6tables
    vm.overcommit_memory
    vm.panic_on_oom
    kernel.panic
    kernel.panic_on_oops
    kernel.keys.root_maxkeys
    kernel.keys.root_maxbytes
)

say() { printf 'kubernetes: %s\n' "$*" >&2; }
die() { printf 'kubernetes: error: %s\n' "$*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }
since() { echo "$(( $(now_ms) - $1 ))ms"; }

# Debian packages, installed only when missing; no service is started by apt
# (a policy-rc.d is put in place for the install if none exists).
need_apt() {
    local missing=() pkg made_policy= rc=0
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]} (apt)"
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "$(find /var/lib/apt/lists -name '*_Packages*' -print -quit 2>/dev/null)" ]; then
        apt-get update -qq >/dev/null || rc=$?
    fi
    [ $rc -ne 0 ] || apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
        # an old package list: refresh once and retry
        apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    } || rc=$?
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ $rc -eq 0 ] || die "apt-get failed installing ${missing[*]}"
}

# Runs "$@" with this cluster's containerd as the endpoint.
ctr_k8s() { ctr --address "$RUN/containerd/containerd.sock" --namespace k8s.io "$@"; }
crictl_k8s() {
    local cfg=()
    [ ! -f "$RUN/crictl.yaml" ] || cfg=(--config "$RUN/crictl.yaml")  # else it warns
    "$(crictl_bin)" "${cfg[@]}" --runtime-endpoint "unix://$RUN/containerd/containerd.sock" \
        --image-endpoint "unix://$RUN/containerd/containerd.sock" --timeout 10s "$@"
}
kubectl_k8s() { "$(k8s_bin kubectl)" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# True if PID is alive (not a zombie) and its command line contains PATTERN.
alive_as() {
    local pid=$1 pattern=$2 state
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    case "$state" in Z|X|'') return 1 ;; esac
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

# pid of component NAME if it runs (started by start.sh: pid file in $RUN/pids).
component_pid() {
    local pf="$RUN/pids/$1.pid" pid
    [ -s "$pf" ] || return 1
    pid=$(cat "$pf")
    alive_as "$pid" "$RUN" || return 1
    echo "$pid"
}
