#!/usr/bin/env bash
# Start a real single-node SLURM (Debian 12 packages, 22.05) on this machine,
# plus the Torque-compatible PBS commands (qsub/qstat/qdel from slurm-wlm-torque).
#
# Idempotent: installs what is missing, (re)writes /etc/slurm/slurm.conf, starts
# munged/slurmctld/slurmd only when not already running, and waits until the node
# is schedulable. No systemd needed. Must run as root.
#
# Environment knobs:
#   SLURM_START_TIMEOUT  seconds to wait for the node to become idle (default 60)
set -euo pipefail

TIMEOUT="${SLURM_START_TIMEOUT:-60}"
PACKAGES=(munge slurmctld slurmd slurm-client slurm-wlm-torque)
CONF=/etc/slurm/slurm.conf
LOGDIR=/var/log/slurm
STATEDIR=/var/lib/slurm/slurmctld
SPOOLDIR=/var/lib/slurm/slurmd
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

log() { echo "slurm-start: $*"; }
die() {
    echo "slurm-start: ERROR: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root"

# Serialise concurrent start.sh/stop.sh runs (e.g. parallel test processes).
exec 9>/run/muster-slurm.lock
flock -w 120 9 || { echo "slurm-start: ERROR: could not lock /run/muster-slurm.lock" >&2; exit 1; }

# --- 1. packages -------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Try without refreshing the lists first; refresh once if that fails
    # (fresh machines have no package lists).
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/muster-slurm-apt.log 2>&1; then
        apt-get update -q >>/tmp/muster-slurm-apt.log 2>&1 || true
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/muster-slurm-apt.log 2>&1 ||
            die "apt-get install failed, see /tmp/muster-slurm-apt.log"
    fi
fi

# --- 2. munge key and directories ---------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key --force
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0600 /etc/munge/munge.key

install -d -o slurm -g slurm -m 0755 "$LOGDIR" /var/lib/slurm "$STATEDIR"
install -d -o root -g root -m 0755 "$SPOOLDIR" /etc/slurm

# --- 3. slurm.conf -------------------------------------------------------------
NODE="$(hostname -s)"
[ -n "$NODE" ] || die "empty hostname"
tmpconf="$(mktemp)"
trap 'rm -f "$tmpconf"' EXIT
cat >"$tmpconf" <<EOF
# Written by muster tests/services/slurm/start.sh -- single-node test cluster.
ClusterName=muster
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=${STATEDIR}
SlurmdSpoolDir=${SPOOLDIR}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOGDIR}/slurmctld.log
SlurmdLogFile=${LOGDIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups/systemd here: track processes via /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Accept the node definition below even though the machine has fewer cores.
SlurmdParameters=config_overrides
ReturnToService=2
# No slurmdbd: finished jobs are visible via squeue/scontrol for MinJobAge
# seconds, and one line per finished job goes to JobCompLoc.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=${LOGDIR}/jobcomp.log
MinJobAge=300
MaxArraySize=10001
MaxJobCount=20000
# Quick scheduling and quick kill for tests.
SchedulerParameters=sched_interval=2,bf_interval=1
KillWait=5
InactiveLimit=0
Waittime=0
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=64 RealMemory=32000 State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE DefMemPerCPU=100 State=UP
EOF
conf_changed=0
if ! cmp -s "$tmpconf" "$CONF"; then
    log "writing $CONF (node ${NODE})"
    install -m 0644 "$tmpconf" "$CONF"
    conf_changed=1
fi

# --- 4. daemons ------------------------------------------------------------------
# running PIDFILE NAME: true if the pid file names a live process called NAME.
running() {
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
    # A killed daemon may linger as a zombie until reaped: that is not running.
    [ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ] || return 1
    # /usr/sbin/slurmctld is an alternatives symlink to slurmctld-wlm: match a prefix.
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
    "$2"*) return 0 ;;
    *) return 1 ;;
    esac
}

# stop_daemon PIDFILE NAME: TERM the daemon, wait up to 10 s.
stop_daemon() {
    local pid i
    if running "$1" "$2"; then
        pid="$(cat "$1")"
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

# wait_started PIDFILE NAME LOG: daemons fork before writing their pid file;
# wait (up to 10 s) until the pid file names a live NAME process.
wait_started() {
    local i
    for i in $(seq 1 100); do
        running "$1" "$2" && return 0
        sleep 0.1
    done
    tail -n 5 "$3" 2>/dev/null | sed 's/^/slurm-start:   /' >&2
    die "$2 did not start (see $3)"
}

if [ "$conf_changed" -eq 1 ] && { running "$CTLD_PID" slurmctld || running "$SLURMD_PID" slurmd; }; then
    log "configuration changed: restarting slurmctld and slurmd"
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
fi

if running "$MUNGE_PID" munged; then
    log "munged already running"
else
    rm -f "$MUNGE_PID" /run/munge/munge.socket.2.lock
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged 9>&- || die "munged failed to start (see /var/log/munge/munged.log)"
    wait_started "$MUNGE_PID" munged /var/log/munge/munged.log
fi
for i in $(seq 1 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    [ "$i" -eq 50 ] && die "munge does not work (see /var/log/munge/munged.log)"
    sleep 0.1
done

if running "$CTLD_PID" slurmctld; then
    log "slurmctld already running"
else
    rm -f "$CTLD_PID"
    log "starting slurmctld"
    /usr/sbin/slurmctld 9>&- || die "slurmctld failed to start (see $LOGDIR/slurmctld.log)"
    wait_started "$CTLD_PID" slurmctld "$LOGDIR/slurmctld.log"
fi

if running "$SLURMD_PID" slurmd; then
    log "slurmd already running"
else
    rm -f "$SLURMD_PID"
    log "starting slurmd"
    slurmd_started_at="$(date +%s)"
    /usr/sbin/slurmd 9>&- || die "slurmd failed to start (see $LOGDIR/slurmd.log)"
    wait_started "$SLURMD_PID" slurmd "$LOGDIR/slurmd.log"
fi

# --- 5. wait until the node is schedulable ------------------------------------------
log "waiting (up to ${TIMEOUT}s) for node ${NODE} to become idle"
deadline=$((SECONDS + TIMEOUT))
state=""
resumed=0
while :; do
    state="$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 || true)"
    case "$state" in
    idle | mixed | allocated | completing)
        # After a restart the controller may report the node state it saved
        # before slurmd re-registered: also require the registration of the
        # slurmd started above (its SlurmdStartTime is not older than its start).
        [ -z "${slurmd_started_at:-}" ] && break
        reg="$(scontrol show node "$NODE" 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')"
        reg_s="$(date -d "$reg" +%s 2>/dev/null || echo 0)"
        [ "$reg_s" -ge $((slurmd_started_at - 1)) ] && break
        ;;
    down* | drain* | fail*)
        # ReturnToService=2 normally avoids this; resume once explicitly.
        if [ "$resumed" -eq 0 ]; then
            log "node is ${state}: resuming"
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 ||
                scontrol update NodeName="$NODE" State=IDLE >/dev/null 2>&1 || true
            resumed=1
        fi
        ;;
    esac
    running "$CTLD_PID" slurmctld || die "slurmctld died (see $LOGDIR/slurmctld.log)"
    running "$SLURMD_PID" slurmd || die "slurmd died (see $LOGDIR/slurmd.log)"
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "slurm-start: last sinfo state: '${state}'" >&2
        scontrol show node "$NODE" 2>&1 | sed 's/^/slurm-start:   /' >&2 || true
        tail -n 5 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" 2>/dev/null | sed 's/^/slurm-start:   /' >&2 || true
        die "node ${NODE} not idle after ${TIMEOUT}s"
    fi
    sleep 0.2
done
running "$SLURMD_PID" slurmd || die "slurmd is not running (see $LOGDIR/slurmd.log)"
running "$CTLD_PID" slurmctld || die "slurmctld is not running (see $LOGDIR/slurmctld.log)"
log "ready: node ${NODE} is ${state} (partition debug)"
