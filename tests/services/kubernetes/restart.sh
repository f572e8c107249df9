#!/bin/bash
# Restart one component of the running test cluster (for tests of what survives
# it, e.g. "the API server restarted"): SIGTERM, up to GRACE seconds to exit
# (default 5; a SIGTERM'd kube-apiserver would drain its watches for 60 s), then
# SIGKILL, then start.sh starts it again and waits until the cluster is ready.
# Usage: restart.sh [--grace S] COMPONENT
#   COMPONENT: etcd kube-apiserver kube-controller-manager kube-scheduler
#              containerd kubelet kube-proxy coredns
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_root
grace=5
if [ "${1:-}" = --grace ]; then grace=${2:?--grace needs seconds}; shift 2; fi
case "$grace" in ''|*[!0-9]*) die "--grace must be whole seconds, got '$grace'" ;; esac
comp=${1:-}
case "$comp" in
    etcd|kube-apiserver|kube-controller-manager|kube-scheduler|containerd|kubelet|kube-proxy|coredns) ;;
    *) die "unknown component '$comp' (see the usage in $0)" ;;
esac
t0=$(now_ms)
pid=$(component_pid "$comp") || die "$comp is not running (start.sh starts the cluster)"
kill "$pid"
for _ in $(seq $((grace * 10))); do alive_as "$pid" "$RUN" || break; sleep 0.1; done
if alive_as "$pid" "$RUN"; then kill -9 "$pid"; say "$comp killed after ${grace}s"; fi
while alive_as "$pid" "$RUN"; do sleep 0.05; done
say "$comp stopped ($(since "$t0"))"
"$K8S_DIR/start.sh" >/dev/null
say "$comp restarted, cluster ready ($(since "$t0"))"
