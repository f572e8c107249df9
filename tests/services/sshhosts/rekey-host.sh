#!/bin/bash
# Give host hK a new host key and restart its sshd, leaving known_hosts as it
# is, so `ssh -F $STATE/ssh_config hK` fails with a host key mismatch
# ("REMOTE HOST IDENTIFICATION HAS CHANGED"). start.sh rewrites known_hosts
# from the current keys, which makes hK trusted again.
# Usage: rekey-host.sh K
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_root
check_k "${1:-}"
k=$1
ns_exists "$k" || die "host h$k does not exist (run start.sh)"
d=$(host_dir "$k")
was_running=
sshd_pid "$k" >/dev/null && was_running=1
stop_sshd "$k"
rm -f "$d/ssh_host_ed25519_key" "$d/ssh_host_ed25519_key.pub"
ssh-keygen -q -t ed25519 -N '' -C "h$k-rekeyed" -f "$d/ssh_host_ed25519_key" </dev/null
say "h$k: new host key $(ssh-keygen -l -f "$d/ssh_host_ed25519_key.pub" | cut -d' ' -f2)"
[ -z "$was_running" ] || start_sshd "$k"
