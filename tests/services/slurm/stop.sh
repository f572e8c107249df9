#!/usr/bin/env bash
# Stop the single-node test SLURM started by start.sh: cancel all jobs, then stop
# slurmd, slurmctld and munged. Packages, configuration and state stay in place,
# so start.sh brings everything back quickly. Safe to run when nothing is running.
set -uo pipefail

log() { echo "slurm-stop: $*"; }

[ "$(id -u)" -eq 0 ] || {
    echo "slurm-stop: ERROR: must run as root" >&2
    exit 1
}

# Serialise concurrent start.sh/stop.sh runs (e.g. parallel test processes).
exec 9>/run/muster-slurm.lock
flock -w 120 9 || { echo "slurm-stop: ERROR: could not lock /run/muster-slurm.lock" >&2; exit 1; }

# Cancel all jobs (every user's) while the controller is still up, and wait for
# them to leave the node (KillWait is 5 s in start.sh's slurm.conf).
# Note: a bare "scancel" with no job id/filter is an error, hence the id list.
if command -v squeue >/dev/null 2>&1 && scontrol ping 2>/dev/null | grep -q UP; then
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

# pids_of PIDFILE NAME: pid from the pid file plus any process named exactly
# NAME or NAME-wlm (Debian's alternatives target), e.g. started without pid file.
pids_of() {
    {
        [ -s "$1" ] && cat "$1" 2>/dev/null
        pgrep -x "$2" 2>/dev/null
        pgrep -x "$2-wlm" 2>/dev/null
    } | while read -r p; do [ -d "/proc/$p" ] && echo "$p"; done | sort -u | tr '\n' ' '
}

# stop_all NAME=PIDFILE...: TERM all of them at once, wait up to 10 s, then KILL.
stop_all() {
    local spec name pidfile pids all="" alive=""
    for spec in "$@"; do
        name="${spec%%=*}"
        pidfile="${spec#*=}"
        pids="$(pids_of "$pidfile" "$name")"
        if [ -n "$pids" ]; then
            log "stopping $name (pid ${pids% })"
            all="$all $pids"
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
stop_all slurmd=/run/slurmd.pid slurmctld=/run/slurmctld.pid
stop_all munged=/run/munge/munged.pid
# Job processes that outlived the cancellation (slurmstepd ignores SIGTERM): kill
# each leftover slurmstepd together with all its descendants.
steps="$(pgrep -x slurmstepd 2>/dev/null | tr '\n' ' ')"
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
log "stopped"
exit 0
