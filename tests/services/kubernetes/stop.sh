#!/bin/bash
# Stop the test Kubernetes and remove everything start.sh created: pods and their
# network namespaces, processes, mounts, iptables chains (kube-proxy's and the
# kubelet's KUBE-*, v4 and v6), cgroups, the bridge, the sysctls (put back to
# the saved values) and $RUN. Keeps the caches (binaries, images, containerd's
# image store) unless --purge is given: then the image store goes too.
# Harmless when nothing runs. See README.md.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_root
purge=
[ "${1:-}" != --purge ] || purge=1
T0=$(now_ms)
# one start/stop at a time (the lock file lives in the cache: $RUN comes and goes)
mkdir -p "$KCACHE"
exec 9>"$KCACHE/.lock"
flock -w 300 9 || die "another start.sh/stop.sh holds $KCACHE/.lock"

created() { grep -qx "$1=1" "$RUN/created" 2>/dev/null; }

# pids of processes whose command line mentions our run dir and PATTERN
our_procs() {
    local p
    for p in $(pgrep -f -- "$1" || true); do
        alive_as "$p" "$RUN" && echo "$p"
    done
}

stop_pid() { # PID: TERM, up to 10 s, then KILL
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do alive_as "$pid" "$RUN" || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

stop_named() {
    local pid t
    t=$(now_ms)
    pid=$(component_pid "$1") && { stop_pid "$pid"; say "stopped $1 ($(since "$t"))"; }
    rm -f "$RUN/pids/$1.pid"
}

if [ ! -d "$RUN" ]; then
    say "nothing to stop ($RUN does not exist)"
    [ -z "$purge" ] || { rm -rf --one-file-system "$CTRD_ROOT"; say "removed $CTRD_ROOT"; }
    exit 0
fi

# 1. no new pods: the kubelet goes first
stop_named kubelet

# 2. pods, through containerd (CNI releases addresses, veths, netns and mounts)
if component_pid containerd >/dev/null && [ -x "$(crictl_bin)" ]; then
    pods=$(crictl_k8s pods -q 2>/dev/null || true)
    for p in $pods; do crictl_k8s stopp "$p" >/dev/null 2>&1 || true; done
    for p in $pods; do crictl_k8s rmp -f "$p" >/dev/null 2>&1 || true; done
    [ -z "$pods" ] || say "removed $(echo "$pods" | wc -w) pod sandbox(es)"
fi
stop_named containerd
# shims of our containerd (they outlive it) and anything left in our pods' cgroups
for pid in $(our_procs containerd-shim); do stop_pid "$pid"; done
for f in /sys/fs/cgroup/*/kubepods; do
    [ -d "$f" ] || continue
    created "cgroup_kubepods" || break
    find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u |
        while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done
done

# 3. the rest of the node and the control plane
for c in coredns kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_named "$c"
done

# 4. iptables: kube-proxy's own cleanup, then every KUBE-* chain left (v4 and v6)
if [ -x "$(k8s_bin kube-proxy)" ]; then
    "$(k8s_bin kube-proxy)" --cleanup >"$RUN/logs/kube-proxy-cleanup.log" 2>&1 || true
fi
clean_chains() { # iptables|ip6tables
    local ipt=$1 table rules chain line
    command -v "$ipt" >/dev/null || return 0
    for table in filter nat mangle raw; do
        rules=$("$ipt" -w 5 -t "$table" -S 2>/dev/null) || continue
        # jumps into KUBE-* from the built-in chains
        while read -r line; do
            [ -n "$line" ] || continue
            eval "$ipt -w 5 -t $table -D ${line#-A }" 2>/dev/null || true
        done < <(printf '%s\n' "$rules" | grep -E '^-A [^ ]+ .*-j KUBE-' | grep -v '^-A KUBE-')
        for chain in $(printf '%s\n' "$rules" | sed -n 's/^-N \(KUBE-[^ ]*\)$/\1/p'); do
            "$ipt" -w 5 -t "$table" -F "$chain" 2>/dev/null || true
        done
        for chain in $(printf '%s\n' "$rules" | sed -n 's/^-N \(KUBE-[^ ]*\)$/\1/p'); do
            "$ipt" -w 5 -t "$table" -X "$chain" 2>/dev/null || true
        done
    done
}
clean_chains iptables
clean_chains ip6tables
# the iptables-nft tables kube-proxy brought into being, once empty again
if [ -e "$RUN/nft.before" ] && command -v nft >/dev/null; then
    nft list tables 2>/dev/null | while read -r _ family table; do
        grep -qxF "table $family $table" "$RUN/nft.before" && continue
        case "$family" in ip) ipt=iptables ;; ip6) ipt=ip6tables ;; *) continue ;; esac
        case "$table" in filter|nat|mangle|raw) ;; *) continue ;; esac
        # only the built-in chains' policies, no rule, no chain: nothing lost
        [ -z "$("$ipt" -w 5 -t "$table" -S 2>/dev/null | grep -v '^-P ')" ] || continue
        nft delete table "$family" "$table" 2>/dev/null || true
    done
fi
left=$( { iptables -S; iptables -t nat -S; ip6tables -S; ip6tables -t nat -S; } 2>/dev/null | grep -c KUBE- || true)
[ "$left" = 0 ] || say "warning: $left KUBE-* iptables lines remain"

# 5. mounts under our dirs (pod volumes, sandbox shm, container rootfs), deepest first
awk -v a="$RUN/" -v b="$CTRD_ROOT/" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/mounts |
    sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done

# 6. network namespaces the CNI made for our pods and did not remove
if [ -e "$RUN/netns.before" ]; then
    for ns in /var/run/netns/cni-*; do
        [ -e "$ns" ] || continue
        grep -qxF "${ns##*/}" "$RUN/netns.before" && continue
        ip netns del "${ns##*/}" 2>/dev/null || true
    done
fi
created var_run_netns && rmdir /var/run/netns 2>/dev/null || true

# 7. the kubelet's cgroups
if created cgroup_kubepods; then
    for f in /sys/fs/cgroup/*/kubepods; do
        [ -d "$f" ] && find "$f" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
fi

# 8. files outside $RUN that the kubelet, containerd and CNI write to fixed paths
if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$RUN/*" -delete 2>/dev/null || true
    created var_log_containers && rmdir /var/log/containers 2>/dev/null || true
fi
created var_log_pods && rmdir /var/log/pods 2>/dev/null || true
# (a /var/lib/kubelet that existed before is somebody else's kubelet's: left alone)
created var_lib_kubelet && rm -rf --one-file-system /var/lib/kubelet
if created var_lib_cni; then
    rm -rf /var/lib/cni
else
    rm -f /var/lib/cni/results/muster-test-* 2>/dev/null || true
fi
if created run_containerd; then
    rmdir /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/s /run/containerd 2>/dev/null || true
fi

# 9. kernel settings back to what they were
if [ -s "$RUN/sysctl.saved" ]; then
    while IFS= read -r kv; do sysctl -qw "$kv" 2>/dev/null || say "warning: cannot restore $kv"; done \
        <"$RUN/sysctl.saved"
    say "sysctls restored"
fi

# 10. the bridge
if created bridge && [ -e "/sys/class/net/$BRIDGE" ]; then
    ip link del "$BRIDGE" && say "bridge $BRIDGE removed"
fi

rm -rf --one-file-system "$RUN"
[ -z "$purge" ] || { rm -rf --one-file-system "$CTRD_ROOT"; say "removed $CTRD_ROOT"; }
say "stopped ($(since "$T0"))"
