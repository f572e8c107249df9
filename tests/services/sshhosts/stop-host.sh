#!/bin/bash
# Stop one host's sshd (fault tests): new connections to hK are refused.
# Usage: stop-host.sh K [--all]
#   --all  also kill every other process in hK's namespace (open ssh sessions,
#          processes started over ssh): like the host crashing.
# The namespace and its address stay; start-host.sh K brings sshd back.
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_root
check_k "${1:-}"
k=$1
ns_exists "$k" || die "host h$k does not exist (run start.sh)"
stop_sshd "$k"
if [ "${2:-}" = --all ]; then
    pids=$(ip netns pids "$(host_ns "$k")" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || { kill_wait $pids; say "h$k: killed $(echo "$pids" | wc -w) process(es)"; }
fi
