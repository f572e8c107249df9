#!/usr/bin/env bash
# Make SSH test host hK (tests/services/sshhosts) a login node of the test
# SLURM (tests/services/slurm): inside hK, `sbatch`, `squeue`, `scancel` and
# the Torque `qsub`/`qstat`/`qdel` then reach the test controller on this
# machine, as on a real cluster's login node.
#
# How: the test slurm.conf ($SLURM_CONF, see env.sh) names the controller by
# 127.0.0.1, which inside hK's network namespace is hK itself. hK gets its own
# copy naming 10.200.0.1 (the bridge address of this machine's namespace, where
# slurmctld listens on every interface), and hK's sshd sets SLURM_CONF to that
# copy in every session (`SetEnv` in a drop-in its sshd_config includes; the
# sshd is told to re-read its configuration). Nothing else on the machine sees
# the copy; /etc/slurm is never read or written. The test munged's socket is on
# the shared filesystem, so credentials work as they are.
#
# Idempotent: the copy is rewritten from the current test slurm.conf, so a
# restarted SLURM with a new config is followed. Run after start.sh of both
# services. Root only.
#
# Usage: login-node.sh K
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/env.sh"

k="${1:?usage: login-node.sh K}"
case "$k" in '' | *[!0-9]*) echo "login-node: K must be a number" >&2; exit 2 ;; esac
state="${MUSTER_SSH_STATE:-/tmp/muster-sshhosts}"
dir="$state/h$k"
copy="$dir/slurm.conf"
dropin="$dir/sshd_config.d/slurm.conf"
gateway=10.200.0.1

die() { echo "login-node: ERROR: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root"
[ -r "$SLURM_CONF" ] || die "$SLURM_CONF missing: run tests/services/slurm/start.sh first"
pid="$(cat "$dir/sshd.pid" 2>/dev/null)" || die "h$k is not running: run tests/services/sshhosts/start.sh first"
kill -0 "$pid" 2>/dev/null || die "h$k's sshd (pid $pid) is gone: run tests/services/sshhosts/start.sh"

# The controller by the bridge address instead of loopback.
wanted="$(sed -E "s/^(SlurmctldHost=[^(]*)\(127\.0\.0\.1\)/\1($gateway)/" "$SLURM_CONF")"
grep -q "^SlurmctldHost=.*($gateway)" <<<"$wanted" || die "no SlurmctldHost=...(127.0.0.1) line in $SLURM_CONF"
if [ ! -f "$copy" ] || [ "$(cat "$copy")" != "$wanted" ]; then
    printf '%s\n' "$wanted" >"$copy.new"
    mv "$copy.new" "$copy"
fi
chmod 0644 "$copy"

# Every session on hK gets SLURM_CONF=$copy. sshhosts writes the Include line
# into new configs; a host started before that gets it added here.
reload=0
include="Include $dir/sshd_config.d/*.conf"
if ! grep -qxF "$include" "$dir/sshd_config"; then
    { echo "$include"; cat "$dir/sshd_config"; } >"$dir/sshd_config.new"
    mv "$dir/sshd_config.new" "$dir/sshd_config"
    reload=1
fi
mkdir -p "$dir/sshd_config.d"
line="SetEnv SLURM_CONF=$copy"
if [ "$(cat "$dropin" 2>/dev/null)" != "$line" ]; then
    echo "$line" >"$dropin"
    reload=1
fi
if [ "$reload" -eq 1 ]; then
    /usr/sbin/sshd -t -f "$dir/sshd_config" || die "sshd -t rejected $dir/sshd_config"
    # sshd re-executes itself on SIGHUP (same pid, same namespaces); open
    # sessions keep running.
    kill -HUP "$pid"
fi

# End to end: a listing from inside hK over ssh, from the test controller
# (the cluster name proves which SLURM answered).
for _ in $(seq 1 50); do
    got="$(ssh -F "$state/ssh_config" "h$k" scontrol show config 2>"$dir/login-node.err" |
        sed -n 's/^ClusterName *= *//p')" && [ "$got" = "$MUSTER_SLURM_CLUSTER" ] && break
    sleep 0.1
done
[ "${got:-}" = "$MUSTER_SLURM_CLUSTER" ] ||
    die "scontrol on h$k answered cluster '${got:-}', not '$MUSTER_SLURM_CLUSTER': $(tail -3 "$dir/login-node.err")"
echo "login-node: h$k submits to the test SLURM '$MUSTER_SLURM_CLUSTER' (controller $gateway:$MUSTER_SLURM_PORT)"
