#!/bin/bash
# Start one host's sshd again after stop-host.sh (or rekey) and wait until
# `ssh hK true` works. The host must exist (start.sh creates hosts).
# Usage: start-host.sh K
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_root
check_k "${1:-}"
k=$1
ns_exists "$k" || die "host h$k does not exist (run start.sh $k or more)"
start_sshd "$k"
wait_ssh "$k" 20
say "h$k reachable"
