#!/usr/bin/env bash
# Stop the single-node test SLURM started by start.sh: cancel its jobs, then stop
# its slurmd, slurmctld and munged. Only this instance's (see env.sh): jobs of
# its controller, daemons named by its own pid files whose command line names
# its directory, job processes whose environment carries its SLURM_CONF. A SLURM
# or munged the machine runs itself is never signalled. Packages, configuration
# and state stay, so start.sh brings everything back quickly; `--purge` also
# removes $MUSTER_SLURM_DIR. Safe to run when nothing is running.
set -uo pipefail
. "$(dirname "$(readlink -f "$0")")/env.sh"

log() { echo "slurm-stop: $*"; }

[ "$(id -u)" -eq 0 ] || {
    echo "slurm-stop: ERROR: must run as root" >&2
    exit 1
}
purge=""
[ "${1:-}" = --purge ] && purge=1
[ -d "$MUSTER_SLURM_DIR" ] || {
    log "nothing to stop ($MUSTER_SLURM_DIR does not exist)"
    exit 0
}

# Serialise concurrent start.sh/stop.sh runs (e.g. parallel test processes).
exec 9>"$LOCK"
flock -w 120 9 || { echo "slurm-stop: ERROR: could not lock $LOCK" >&2; exit 1; }

# Cancel this controller's jobs (every user's) while it is still up, and wait
# for them to leave the node (KillWait is 5 s in start.sh's slurm.conf).
# Note: a bare "scancel" with no job id/filter is an error, hence the id list.
if own_daemon "$CTLD_PID" slurmctld && command -v squeue >/dev/null 2>&1 &&
    timeout 10 scontrol ping 2>/dev/null | grep -q UP; then
    ids="$(squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ')"
    if [ -n "${ids// /}" ]; then
        log "cancelling all jobs (${ids% })"
        # shellcheck disable=SC2086
        scancel $ids >/dev/null 2>&1 || true
        for _ in $(seq 1 150); do
            [ -z "$(squeue -h -t PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING -o %i 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
fi

# stop_all NAME=PIDFILE...: TERM this instance's daemons at once, wait up to 10 s, then KILL.
stop_all() {
    local spec name pidfile pid all="" alive=""
    for spec in "$@"; do
        name="${spec%%=*}"
        pidfile="${spec#*=}"
        if own_daemon "$pidfile" "$name"; then
            pid="$(cat "$pidfile")"
            log "stopping $name (pid $pid)"
            all="$all $pid"
        else
            log "$name not running"
        fi
        rm -f "$pidfile"
    done
    [ -z "$all" ] && return 0
    # shellcheck disable=SC2086
    kill $all 2>/dev/null || true
    for _ in $(seq 1 100); do
        alive=""
        for p in $all; do [ -d "/proc/$p" ] && alive="$alive $p"; done
        [ -z "$alive" ] && return 0
        sleep 0.1
    done
    log "killing$alive"
    # shellcheck disable=SC2086
    kill -9 $alive 2>/dev/null || true
}

# The SLURM daemons first (together), munged last: they authenticate via munge.
stop_all slurmd="$SLURMD_PID" slurmctld="$CTLD_PID"
stop_all munged="$MUNGE_PID"

# Job processes that outlived the cancellation (slurmstepd ignores SIGTERM):
# each leftover slurmstepd of this instance (its environment, inherited from
# our slurmd, carries our SLURM_CONF) together with all its descendants.
steps=""
for p in $(pgrep -x slurmstepd 2>/dev/null); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF" && steps="$steps $p"
done
if [ -n "$steps" ]; then
    tree="$steps"
    # Add children of anything already in the set until nothing new appears.
    while :; do
        more="$(ps -eo pid=,ppid= | awk -v set=" $tree " 'index(set, " " $2 " ") && !index(set, " " $1 " ") {print $1}' | tr '\n' ' ')"
        [ -z "${more// /}" ] && break
        tree="$tree $more"
    done
    log "killing leftover job processes:$tree"
    # shellcheck disable=SC2086
    kill -9 $tree 2>/dev/null || true
fi
if [ -n "$purge" ]; then
    rm -rf "$MUSTER_SLURM_DIR" "$LOCK"
    log "removed $MUSTER_SLURM_DIR"
fi
log "stopped"
exit 0
