#!/usr/bin/env bash
# A stand-in for "the machine's own SLURM", to prove the test SLURM (start.sh,
# stop.sh, login-node.sh and everything the tests run) leaves it alone.
#
#   decoy.sh start   If the machine has no /etc/slurm/slurm.conf: write one for a
#                    cluster named `decoy` on SLURM's default ports (6817/6818),
#                    Debian's default state/log/pid paths and the system munged
#                    (/etc/munge/munge.key, /run/munge), as a site install would,
#                    and start it. If the machine has its own SLURM config, that is
#                    the decoy: nothing is started or changed.
#                    Then record a snapshot (below) and submit one held job to it.
#   decoy.sh check   Fail unless the snapshot still holds: the same bytes in
#                    /etc/slurm and the munge key, the same daemon processes (pid
#                    and start time), the decoy still answers with its cluster name,
#                    and its held job is still queued.
#   decoy.sh stop    Cancel the held job; stop and remove only what `start` made
#                    (its daemons, /etc/slurm, the directories it created).
#
# Root only. State: /run/muster-slurm-decoy/ (snapshot, list of what it made).
set -euo pipefail

STATE=/run/muster-slurm-decoy
CONF=/etc/slurm/slurm.conf
NAME=decoy
log() { echo "slurm-decoy: $*"; }
die() {
    echo "slurm-decoy: ERROR: $*" >&2
    exit 1
}
[ "$(id -u)" -eq 0 ] || die "must run as root"

# The decoy is reached the way a user reaches the machine's SLURM: the default
# configuration, whatever the caller's environment points at.
unset SLURM_CONF
pidfile_of() { sed -n "s/^$1=//p" "$CONF" 2>/dev/null | tail -n1; }

alive() { [ -d "/proc/$1" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]; }

# One line per daemon of the decoy: name, pid, start time (from /proc).
daemons() {
    local spec name pf pid
    for spec in slurmctld=SlurmctldPidFile slurmd=SlurmdPidFile munged=; do
        name="${spec%%=*}"
        if [ "$name" = munged ]; then
            pf=/run/munge/munged.pid
        else
            pf="$(pidfile_of "${spec#*=}")"
            pf="${pf:-/run/$name.pid}"
        fi
        pid="$(cat "$pf" 2>/dev/null || true)"
        if [ -n "$pid" ] && alive "$pid"; then
            echo "$name $pid $(cut -d' ' -f22 "/proc/$pid/stat")"
        else
            echo "$name none"
        fi
    done
}

fingerprint() {
    # The decoy's configuration and key, byte for byte.
    find /etc/slurm /etc/munge -type f -print0 2>/dev/null | sort -z | xargs -0r sha256sum
}

wait_idle() {
    local i s
    for i in $(seq 1 150); do
        s="$(timeout 5 sinfo -h -o %T 2>/dev/null | head -n1 || true)"
        case "$s" in idle | mixed | allocated) return 0 ;; esac
        sleep 0.2
    done
    tail -n 5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 2>/dev/null || true
    die "the decoy SLURM did not become idle (last state '$s')"
}

# started NAME PIDFILE: records the daemon this script started (pid and start
# time), so that `stop` ends that process and no other that reused the pid file.
started() {
    local i pid
    for i in $(seq 1 100); do
        pid="$(cat "$2" 2>/dev/null || true)"
        [ -n "$pid" ] && alive "$pid" && break
        sleep 0.1
    done
    [ -n "$pid" ] && alive "$pid" || die "$1 did not start"
    echo "daemon $1 $pid $(cut -d' ' -f22 "/proc/$pid/stat")" >>"$STATE/made"
}

start() {
    if [ -s "$STATE/daemons" ]; then
        log "already started (snapshot in $STATE)"
        return 0
    fi
    mkdir -p "$STATE"
    : >"$STATE/made"
    if [ -e "$CONF" ]; then
        log "the machine has its own $CONF: that is the decoy (nothing started or changed)"
    else
        local p missing=()
        for p in munge slurmctld slurmd slurm-client; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
        done
        if [ "${#missing[@]}" -gt 0 ]; then
            log "installing ${missing[*]}"
            # No service starts from the packages' scripts (this script starts the daemons).
            [ -e /usr/sbin/policy-rc.d ] || {
                printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
                chmod 755 /usr/sbin/policy-rc.d
                trap 'rm -f /usr/sbin/policy-rc.d' EXIT
            }
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
                >/tmp/muster-slurm-decoy-apt.log 2>&1 || {
                apt-get update -q >>/tmp/muster-slurm-decoy-apt.log 2>&1 || true
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
                    >>/tmp/muster-slurm-decoy-apt.log 2>&1 || die "apt-get failed (/tmp/muster-slurm-decoy-apt.log)"
            }
        fi
        local d
        for d in /etc/slurm /var/lib/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/munge /etc/munge; do
            [ -e "$d" ] || echo "$d" >>"$STATE/made"
        done
        install -d -m 0755 /etc/slurm /var/lib/slurm/slurmd
        install -d -o slurm -g slurm -m 0755 /var/lib/slurm /var/lib/slurm/slurmctld /var/log/slurm
        install -d -o munge -g munge -m 0755 /run/munge
        install -d -o munge -g munge -m 0700 /etc/munge
        if [ ! -s /etc/munge/munge.key ]; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
            chown munge:munge /etc/munge/munge.key
            echo /etc/munge/munge.key >>"$STATE/made"
        fi
        echo "$CONF" >>"$STATE/made"
        cat >"$CONF" <<EOF
# A stand-in for the machine's own SLURM (muster tests/services/slurm/decoy.sh).
ClusterName=${NAME}
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=slurm
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$(hostname -s) NodeAddr=127.0.0.1 CPUs=4 RealMemory=2000 State=UNKNOWN
PartitionName=site Nodes=$(hostname -s) Default=YES MaxTime=INFINITE State=UP
EOF
        if ! { [ -s /run/munge/munged.pid ] && alive "$(cat /run/munge/munged.pid)"; }; then
            runuser -u munge -- /usr/sbin/munged 9>&-
            started munged /run/munge/munged.pid
        fi
        /usr/sbin/slurmctld 9>&-
        started slurmctld /run/slurmctld.pid
        /usr/sbin/slurmd 9>&-
        started slurmd /run/slurmd.pid
        sha256sum "$CONF" >"$STATE/conf.sha256"
        wait_idle
        log "started cluster '${NAME}' from $CONF (ports 6817/6818)"
    fi
    if timeout 10 scontrol ping >/dev/null 2>&1; then
        sbatch --parsable --hold -J muster-decoy-held -o /dev/null --wrap 'sleep 600' >"$STATE/held" 2>/dev/null ||
            die "cannot submit the held job to the decoy"
        scontrol show config 2>/dev/null | sed -n 's/^ClusterName *= *//p' >"$STATE/cluster"
    else
        : >"$STATE/held"
        : >"$STATE/cluster"
        log "the machine's SLURM does not answer: checking its files and processes only"
    fi
    fingerprint >"$STATE/files"
    daemons >"$STATE/daemons"
    log "snapshot in $STATE: cluster '$(cat "$STATE/cluster")', held job '$(cat "$STATE/held")'"
}

check() {
    [ -s "$STATE/daemons" ] || die "no snapshot: run decoy.sh start first"
    local bad=0
    if ! diff <(cat "$STATE/files") <(fingerprint) >&2; then
        echo "slurm-decoy: FAIL: /etc/slurm or /etc/munge changed" >&2
        bad=1
    fi
    if ! diff "$STATE/daemons" <(daemons) >&2; then
        echo "slurm-decoy: FAIL: the decoy's daemons changed (pid, start time)" >&2
        bad=1
    fi
    if [ -s "$STATE/held" ]; then
        local now held
        now="$(timeout 10 scontrol show config 2>/dev/null | sed -n 's/^ClusterName *= *//p' || true)"
        [ "$now" = "$(cat "$STATE/cluster")" ] || {
            echo "slurm-decoy: FAIL: the decoy answers as cluster '$now', not '$(cat "$STATE/cluster")'" >&2
            bad=1
        }
        held="$(cat "$STATE/held")"
        timeout 10 squeue -h -j "$held" -o %T 2>/dev/null | grep -qx PENDING || {
            echo "slurm-decoy: FAIL: the decoy's held job $held is gone" >&2
            bad=1
        }
    fi
    [ "$bad" -eq 0 ] || die "the machine's SLURM was touched"
    log "untouched: same files, same daemons, cluster '$(cat "$STATE/cluster")' answers, job $(cat "$STATE/held") still queued"
}

stop() {
    [ -d "$STATE" ] || return 0
    local held
    held="$(cat "$STATE/held" 2>/dev/null || true)"
    [ -n "$held" ] && scancel "$held" >/dev/null 2>&1 || true
    local kind name n pid since
    # Daemons first (slurmd, slurmctld, then munged): only the very processes
    # `start` started (same pid and start time), then files.
    for name in slurmd slurmctld munged; do
        while read -r kind n pid since; do
            [ "$kind" = daemon ] && [ "$n" = "$name" ] || continue
            if alive "$pid" && [ "$(cut -d' ' -f22 "/proc/$pid/stat")" = "$since" ]; then
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
                kill -9 "$pid" 2>/dev/null || true
            else
                log "$name (pid $pid) is no longer the one started here: left alone"
            fi
        done <"$STATE/made"
    done
    # The config only if it is still the one written here.
    if [ -s "$STATE/conf.sha256" ] && ! sha256sum -c --quiet "$STATE/conf.sha256" >/dev/null 2>&1; then
        log "$CONF was rewritten by someone else: left in place"
        sed -i "\|^$CONF\$|d" "$STATE/made"
    fi
    # Paths it created, deepest first.
    { grep -v '^daemon ' "$STATE/made" || true; } | sort -r | while read -r p; do rm -rf "$p"; done
    rm -rf "$STATE"
    log "stopped; removed what it had made"
}

case "${1:-}" in
start) start ;;
check) check ;;
stop) stop ;;
*) die "usage: decoy.sh start|check|stop" ;;
esac
