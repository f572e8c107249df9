#!/usr/bin/env bash
# Start a real single-node SLURM (Debian 12 packages, 22.05) on this machine for
# the tests, plus the Torque-compatible PBS commands (qsub/qstat/qdel from
# slurm-wlm-torque).
#
# It runs from its own configuration, state, spool, log and pid files under
# $MUSTER_SLURM_DIR (default /run/muster-test-slurm), on its own ports
# (slurmctld 16817, slurmd 16818), with its own ClusterName (mustertest) and its
# own munged (own key and socket). It never reads or writes /etc/slurm,
# /etc/munge, /run/munge or the default state directories, and never touches a
# SLURM or munged the machine already runs (see env.sh). Every SLURM command of
# the tests needs SLURM_CONF=$MUSTER_SLURM_DIR/slurm.conf (printed at the end).
#
# Idempotent: installs what is missing (without starting the packages' own
# services), (re)writes its slurm.conf, starts its daemons only when not already
# running, and waits until the node is schedulable. No systemd needed. Root only.
#
# Environment knobs: see env.sh (MUSTER_SLURM_DIR, MUSTER_SLURM_PORT,
# MUSTER_SLURM_CLUSTER), and
#   SLURM_START_TIMEOUT  seconds to wait for the node to become idle (default 60)
set -euo pipefail

TIMEOUT="${SLURM_START_TIMEOUT:-60}"
PACKAGES=(munge slurmctld slurmd slurm-client slurm-wlm-torque)
. "$(dirname "$(readlink -f "$0")")/env.sh"

log() { echo "slurm-start: $*"; }
die() {
    echo "slurm-start: ERROR: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root"

# Serialise concurrent start.sh/stop.sh runs of this instance (e.g. parallel test processes).
mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock -w 120 9 || die "could not lock $LOCK"

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
    # Without systemd the packages' scripts would start the system-wide munged,
    # slurmctld and slurmd (from /etc): forbid service starts during the install
    # unless the machine has its own policy.
    made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # Try without refreshing the lists first; refresh once if that fails
    # (fresh machines have no package lists).
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/muster-slurm-apt.log 2>&1; then
        apt-get update -q >>/tmp/muster-slurm-apt.log 2>&1 || true
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/muster-slurm-apt.log 2>&1 ||
            die "apt-get install failed, see /tmp/muster-slurm-apt.log"
    fi
    if [ -n "$made_policy" ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
fi

# --- 2. private directories and munge key ------------------------------------------
install -d -o root -g root -m 0755 "$MUSTER_SLURM_DIR" "$RUNDIR" "$SPOOLDIR"
install -d -o slurm -g slurm -m 0755 "$LOGDIR" "$STATEDIR"
install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
install -d -o munge -g munge -m 0700 "$(dirname "$MUNGE_KEY")"
if [ ! -s "$MUNGE_KEY" ]; then
    log "creating munge key $MUNGE_KEY"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$MUNGE_KEY" --force
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
fi
chown munge:munge "$MUNGE_KEY"
chmod 0600 "$MUNGE_KEY"

# --- 3. slurm.conf -------------------------------------------------------------
NODE="$(hostname -s)"
[ -n "$NODE" ] || die "empty hostname"
tmpconf="$(mktemp)"
trap 'rm -f "$tmpconf"' EXIT
cat >"$tmpconf" <<EOF
# Written by muster tests/services/slurm/start.sh -- single-node test cluster.
# Private to the tests: use it with SLURM_CONF=${SLURM_CONF}
ClusterName=${MUSTER_SLURM_CLUSTER}
SlurmctldHost=${NODE}(127.0.0.1)
SlurmctldPort=${MUSTER_SLURM_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MUNGE_SOCKET}
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
if ! cmp -s "$tmpconf" "$SLURM_CONF"; then
    log "writing $SLURM_CONF (node ${NODE}, cluster ${MUSTER_SLURM_CLUSTER}, port ${MUSTER_SLURM_PORT})"
    install -m 0644 "$tmpconf" "$SLURM_CONF"
    conf_changed=1
fi
# For shells and scripts: `. $MUSTER_SLURM_DIR/env` points the SLURM commands here.
printf 'export SLURM_CONF=%q\n' "$SLURM_CONF" >"$MUSTER_SLURM_DIR/env"

# --- 4. daemons ------------------------------------------------------------------
# stop_daemon PIDFILE NAME: TERM this instance's daemon, wait up to 10 s.
stop_daemon() {
    local pid i
    if own_daemon "$1" "$2"; then
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
# wait (up to 10 s) until the pid file names a live NAME process of ours.
wait_started() {
    local i
    for i in $(seq 1 100); do
        own_daemon "$1" "$2" && return 0
        sleep 0.1
    done
    tail -n 5 "$3" 2>/dev/null | sed 's/^/slurm-start:   /' >&2
    die "$2 did not start (see $3)"
}

if [ "$conf_changed" -eq 1 ] && { own_daemon "$CTLD_PID" slurmctld || own_daemon "$SLURMD_PID" slurmd; }; then
    log "configuration changed: restarting slurmctld and slurmd"
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
fi

if own_daemon "$MUNGE_PID" munged; then
    log "munged already running"
else
    rm -f "$MUNGE_PID" "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    log "starting munged ($MUNGE_SOCKET)"
    runuser -u munge -- /usr/sbin/munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" \
        --pid-file="$MUNGE_PID" --log-file="$MUNGE_LOG" --seed-file="$MUNGE_DIR/munged.seed" 9>&- ||
        die "munged failed to start (see $MUNGE_LOG)"
    wait_started "$MUNGE_PID" munged "$MUNGE_LOG"
fi
for i in $(seq 1 50); do
    munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 && break
    [ "$i" -eq 50 ] && die "munge does not work (see $MUNGE_LOG)"
    sleep 0.1
done

if own_daemon "$CTLD_PID" slurmctld; then
    log "slurmctld already running"
else
    rm -f "$CTLD_PID"
    log "starting slurmctld"
    /usr/sbin/slurmctld -f "$SLURM_CONF" 9>&- || die "slurmctld failed to start (see $LOGDIR/slurmctld.log)"
    wait_started "$CTLD_PID" slurmctld "$LOGDIR/slurmctld.log"
fi

if own_daemon "$SLURMD_PID" slurmd; then
    log "slurmd already running"
else
    rm -f "$SLURMD_PID"
    log "starting slurmd"
    slurmd_started_at="$(date +%s)"
    # SLURM_CONF (exported by env.sh) is inherited by slurmd and its slurmstepds.
    /usr/sbin/slurmd -f "$SLURM_CONF" 9>&- || die "slurmd failed to start (see $LOGDIR/slurmd.log)"
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
    own_daemon "$CTLD_PID" slurmctld || die "slurmctld died (see $LOGDIR/slurmctld.log)"
    own_daemon "$SLURMD_PID" slurmd || die "slurmd died (see $LOGDIR/slurmd.log)"
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "slurm-start: last sinfo state: '${state}'" >&2
        scontrol show node "$NODE" 2>&1 | sed 's/^/slurm-start:   /' >&2 || true
        tail -n 5 "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" 2>/dev/null | sed 's/^/slurm-start:   /' >&2 || true
        die "node ${NODE} not idle after ${TIMEOUT}s"
    fi
    sleep 0.2
done
own_daemon "$SLURMD_PID" slurmd || die "slurmd is not running (see $LOGDIR/slurmd.log)"
own_daemon "$CTLD_PID" slurmctld || die "slurmctld is not running (see $LOGDIR/slurmctld.log)"
log "ready: node ${NODE} is ${state} (cluster ${MUSTER_SLURM_CLUSTER}, partition debug)"
log "use it with: export SLURM_CONF=${SLURM_CONF}   (or: . ${MUSTER_SLURM_DIR}/env)"
