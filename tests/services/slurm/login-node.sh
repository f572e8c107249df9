#!/usr/bin/env bash
# Make SSH test host hK (tests/services/sshhosts) a login node of the test
# SLURM (tests/services/slurm): inside hK, `sbatch`, `squeue`, `scancel` and
# the Torque `qsub`/`qstat`/`qdel` then reach the controller on this machine,
# as on a real cluster's login node.
#
# How: slurm.conf names the controller by 127.0.0.1, which inside hK's network
# namespace is hK itself. hK gets its own copy naming 10.200.0.1 (the bridge
# address of this machine's namespace, where slurmctld listens on every
# interface), bind-mounted over /etc/slurm/slurm.conf in the mount namespace
# of hK's sshd, so every ssh session on hK sees it and nothing else does.
# munged's socket is on the shared filesystem, so credentials work as they are.
#
# Idempotent: the copy is rewritten in place (the bind mount keeps seeing it)
# from the current slurm.conf, so a restarted SLURM with a new config is
# followed. Run after start.sh of both services. Root only.
#
# Usage: login-node.sh K
set -euo pipefail

k="${1:?usage: login-node.sh K}"
case "$k" in '' | *[!0-9]*) echo "login-node: K must be a number" >&2; exit 2 ;; esac
state="${MUSTER_SSH_STATE:-/tmp/muster-sshhosts}"
conf=/etc/slurm/slurm.conf
copy="$state/h$k/slurm.conf"
gateway=10.200.0.1

die() { echo "login-node: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -r "$conf" ] || die "$conf missing: run tests/services/slurm/start.sh first"
pid="$(cat "$state/h$k/sshd.pid" 2>/dev/null)" || die "h$k is not running: run tests/services/sshhosts/start.sh first"
kill -0 "$pid" 2>/dev/null || die "h$k's sshd (pid $pid) is gone: run tests/services/sshhosts/start.sh"

# The controller by the bridge address instead of loopback.
wanted="$(sed -E "s/^(SlurmctldHost=[^(]*)\(127\.0\.0\.1\)/\1($gateway)/" "$conf")"
grep -q "^SlurmctldHost=.*($gateway)" <<<"$wanted" || die "no SlurmctldHost=...(127.0.0.1) line in $conf"
if [ ! -f "$copy" ] || [ "$(cat "$copy")" != "$wanted" ]; then
    printf '%s\n' "$wanted" >"$copy.new"
    if [ -f "$copy" ]; then
        cat "$copy.new" >"$copy" # in place: a live bind mount follows
        rm -f "$copy.new"
    else
        mv "$copy.new" "$copy"
    fi
fi
chmod 0644 "$copy"

if ! nsenter -t "$pid" -m findmnt -n "$conf" >/dev/null 2>&1; then
    nsenter -t "$pid" -m mount --bind "$copy" "$conf" || die "cannot bind-mount $copy in h$k"
fi

# End to end: a listing from inside hK over ssh.
ssh -F "$state/ssh_config" "h$k" squeue -h -o %i >/dev/null 2>"$state/h$k/login-node.err" ||
    die "squeue on h$k failed: $(tail -3 "$state/h$k/login-node.err")"
echo "login-node: h$k submits to the test SLURM (controller $gateway)"
