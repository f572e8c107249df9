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

# Cancel all jobs while the controller is still up, and wait briefly for them
# to leave the node (KillWait is 5 s in start.sh's slurm.conf).
if command -v squeue >/dev/null 2>&1 && scontrol ping 2>/dev/null | grep -q UP; then
    if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        log "cancelling all jobs"
        scancel --full --state=PENDING >/dev/null 2>&1 || true
        scancel --full >/dev/null 2>&1 || true
        for _ in $(seq 1 100); do
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
# Leftover job step daemons (only if a job outlived slurmd).
pkill -x slurmstepd 2>/dev/null || true
log "stopped"
exit 0
