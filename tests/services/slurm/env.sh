# shellcheck shell=bash
# Where the test SLURM lives; sourced by start.sh, stop.sh, login-node.sh,
# record-fixtures.sh (and mirrored by tests/e2e/batch.py). Everything of the
# test SLURM is under one private directory, with its own ports, cluster name
# and munged: nothing under /etc/slurm, /etc/munge, /run/munge, /var/lib/slurm
# or /var/log/slurm is read or written, and a SLURM the machine already runs
# is left alone.
#
# Knobs (environment):
#   MUSTER_SLURM_DIR         the private directory (default /run/muster-test-slurm)
#   MUSTER_SLURM_PORT        slurmctld's port; slurmd's is the next one (default 16817)
#   MUSTER_SLURM_CLUSTER     ClusterName (default mustertest)
# Every SLURM command of the tests (sbatch, squeue, qsub, ... and muster
# itself) then needs SLURM_CONF="$MUSTER_SLURM_DIR/slurm.conf": sourcing this
# file exports it.

MUSTER_SLURM_DIR="${MUSTER_SLURM_DIR:-/run/muster-test-slurm}"
MUSTER_SLURM_PORT="${MUSTER_SLURM_PORT:-16817}"
MUSTER_SLURM_CLUSTER="${MUSTER_SLURM_CLUSTER:-mustertest}"
case "$MUSTER_SLURM_DIR" in
/*) ;;
*) echo "slurm: MUSTER_SLURM_DIR must be an absolute path, got '$MUSTER_SLURM_DIR'" >&2; exit 2 ;;
esac
case "$MUSTER_SLURM_PORT" in
'' | *[!0-9]*) echo "slurm: MUSTER_SLURM_PORT must be a number, got '$MUSTER_SLURM_PORT'" >&2; exit 2 ;;
esac
case "$MUSTER_SLURM_CLUSTER" in
'' | *[!a-z0-9]*) echo "slurm: MUSTER_SLURM_CLUSTER must be lower-case letters and digits" >&2; exit 2 ;;
esac

SLURM_CONF="$MUSTER_SLURM_DIR/slurm.conf"
export SLURM_CONF MUSTER_SLURM_DIR MUSTER_SLURM_PORT MUSTER_SLURM_CLUSTER
SLURMD_PORT=$((MUSTER_SLURM_PORT + 1))
LOGDIR="$MUSTER_SLURM_DIR/log"
STATEDIR="$MUSTER_SLURM_DIR/state"
SPOOLDIR="$MUSTER_SLURM_DIR/spool"
RUNDIR="$MUSTER_SLURM_DIR/run"
CTLD_PID="$RUNDIR/slurmctld.pid"
SLURMD_PID="$RUNDIR/slurmd.pid"
# munged: the socket directory must be reachable by the slurm user; the key
# directory only by munge.
MUNGE_DIR="$MUSTER_SLURM_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket"
MUNGE_KEY="$MUNGE_DIR/key/munge.key"
MUNGE_PID="$MUNGE_DIR/munged.pid"
MUNGE_LOG="$MUNGE_DIR/munged.log"
LOCK="$MUSTER_SLURM_DIR.lock"

# own_daemon PIDFILE NAME: true if the pid file names a live (not zombie)
# process called NAME* whose command line names this instance's directory,
# so a daemon of another SLURM (the machine's, or another test instance) is
# never taken for ours.
own_daemon() {
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null)" || return 1
    case "$pid" in '' | *[!0-9]*) return 1 ;; esac
    [ -r "/proc/$pid/comm" ] || return 1
    [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ] || return 1
    # /usr/sbin/slurmctld is an alternatives symlink to slurmctld-wlm: match a prefix.
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
    "$2"*) ;;
    *) return 1 ;;
    esac
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$MUSTER_SLURM_DIR/"
}
