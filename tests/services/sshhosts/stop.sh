#!/bin/bash
# Tear down every SSH test host: sshd and every other process left in the
# namespaces (e.g. Dask processes started over ssh), namespaces, veths, bridge.
# Idempotent. Keeps the state dir (keys) unless --purge is given.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_root
purge=
[ "${1:-}" = --purge ] && purge=1

for k in $(existing_hosts); do
    ns=$(host_ns "$k")
    stop_sshd "$k"
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill_wait $pids
        say "h$k: killed $(echo "$pids" | wc -w) leftover process(es)"
    fi
    ! link_ours "$(host_veth "$k")" || ip link del "$(host_veth "$k")" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || die "cannot delete netns $ns"
    rm -rf "/etc/netns/$ns"
    say "h$k: removed"
done
# our veths whose namespace is already gone
for v in $(ip -o link show type veth 2>/dev/null | sed -n 's/^[0-9]*: \(mvh[0-9]*\)@.*/\1/p'); do
    link_ours "$v" && ip link del "$v" 2>/dev/null || true
done
# pid files of hosts whose namespace is gone
for pf in "$STATE"/h*/sshd.pid; do
    [ -e "$pf" ] || continue
    k=${pf%/sshd.pid}; k=${k##*/h}
    stop_sshd "$k"
done
if ip link show "$BRIDGE" >/dev/null 2>&1 && link_ours "$BRIDGE"; then
    ip link del "$BRIDGE"
    say "bridge $BRIDGE removed"
fi
if [ -n "$purge" ]; then
    rm -rf "$STATE"
    say "state dir $STATE removed"
fi
say "stopped"
