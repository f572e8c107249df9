#!/usr/bin/env bash
# Stop the test YARN started by start.sh: the NodeManager first (an NM whose RM
# is gone spends ~20 s trying to unregister), then the ResourceManager, then
# ZooKeeper; then kill any container process the NM left behind (found by its
# working directory under our NM local dir). Touches only what start.sh started:
# daemons are found by pid file AND a command line naming our state directory.
# Jars, config and state stay (start.sh is quick afterwards).
#
#   stop.sh          stop the daemons
#   stop.sh --purge  also delete the state directory (RM store, logs, registry)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"
log() { echo "yarn-stop: $*" >&2; }

[ -d "$STATE" ] || exit 0
if [ "${MUSTER_YARN_LOCKED:-0}" != 1 ]; then
    exec 9>"$STATE/.lock"
    flock -w 300 9 || { echo "yarn-stop: ERROR: could not lock $STATE/.lock" >&2; exit 1; }
fi

stop_daemon() { # name
    local pid i
    pid="$(daemon_pid "$1")" || { rm -f "$PIDS/$1.pid"; return 0; }
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do # 20 s, then KILL
        [ -d "/proc/$pid" ] || break
        sleep 0.2
    done
    if [ -d "/proc/$pid" ]; then
        log "$1 ignored TERM for 20 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
        while [ -d "/proc/$pid" ]; do sleep 0.1; done
    fi
    rm -f "$PIDS/$1.pid"
}

stop_daemon nm
stop_daemon rm
stop_daemon zk

left="$(container_pids | tr '\n' ' ')"
if [ -n "${left// /}" ]; then
    log "killing leftover container processes: $left"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    for _ in $(seq 1 50); do
        [ -z "$(container_pids)" ] && break
        sleep 0.1
    done
fi

if [ "${1:-}" = "--purge" ]; then
    log "removing $STATE"
    rm -rf "${STATE:?}"
fi
