# shellcheck shell=bash disable=SC2034
# Shared helpers for the SSH test hosts; sourced by the other scripts, not run.
# Layout (all names fixed so tests can rely on them):
#   bridge mbr0 10.200.0.1/24 in the root namespace
#   host K (1..89): netns mhK, veth mvhK (root side) <-> eth0 (inside),
#                   address 10.200.0.(10+K)  (h1=10.200.0.11, h2=10.200.0.12, ...)
#   state dir ${MUSTER_SSH_STATE:-/tmp/muster-sshhosts}

set -euo pipefail

STATE=${MUSTER_SSH_STATE:-/tmp/muster-sshhosts}
BRIDGE=mbr0
BRIDGE_ADDR=10.200.0.1
SSHD=/usr/sbin/sshd

say() { printf 'sshhosts: %s\n' "$*"; }
die() { printf 'sshhosts: error: %s\n' "$*" >&2; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "must run as root"; }

check_k() {
    case "${1:-}" in
        ''|0*|*[!0-9]*) die "host number must be an integer 1..89, got '${1:-}'" ;;
    esac
    if [ "$1" -lt 1 ] || [ "$1" -gt 89 ]; then die "host number must be 1..89, got $1"; fi
}

host_ns()   { echo "mh$1"; }
host_veth() { echo "mvh$1"; }
host_ip()   { echo "10.200.0.$((10 + $1))"; }
host_dir()  { echo "$STATE/h$1"; }
host_pidfile() { echo "$STATE/h$1/sshd.pid"; }

ns_exists() { [ -e "/var/run/netns/$(host_ns "$1")" ]; }

# What the test hosts made is marked, so that start.sh never takes over and
# stop.sh never removes a namespace, veth or bridge of the same name that the
# machine (or anyone else) made: links carry the alias $MARK, namespaces on
# their own loopback device.
MARK=muster-test-hosts
ns_ours() { ip -n "$(host_ns "$1")" -o link show lo 2>/dev/null | grep -q " alias $MARK\b"; }
link_ours() { [ "$(cat "/sys/class/net/$1/ifalias" 2>/dev/null)" = "$MARK" ]; }

# Host numbers whose namespace exists and was made by start.sh, ascending.
existing_hosts() {
    local f
    for f in /var/run/netns/mh*; do
        [ -e "$f" ] || continue
        f=${f##*/mh}
        case "$f" in ''|*[!0-9]*) continue ;; esac
        ns_ours "$f" || continue
        echo "$f"
    done | sort -n
}

# pid of host K's sshd listener if it is running, else nothing (exit 1).
sshd_pid() {
    local pf pid
    pf=$(host_pidfile "$1")
    [ -s "$pf" ] || return 1
    pid=$(cat "$pf")
    case "$pid" in ''|*[!0-9]*) return 1 ;; esac
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "sshd.*$(host_dir "$1")/sshd_config" || return 1
    echo "$pid"
}

# True if PID exists and is not a zombie (this machine's init reaps orphans
# only every ~1.5 s, so a killed daemon lingers as a zombie for a while).
alive() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "${st%% *}" != Z ] && [ "${st%% *}" != X ]
}

kill_wait() { # kill_wait PID...: TERM, wait up to 3 s, then KILL
    local p i alive
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for i in $(seq 30); do
        alive=
        for p in "$@"; do alive "$p" && alive=1; done
        [ -n "$alive" ] || return 0
        sleep 0.1
    done
    kill -KILL "$@" 2>/dev/null || true
}

stop_sshd() {
    local pid
    if pid=$(sshd_pid "$1"); then
        kill_wait "$pid"
        say "h$1: sshd (pid $pid) stopped"
    fi
    rm -f "$(host_pidfile "$1")"
}

write_sshd_config() {
    local k=$1 d
    d=$(host_dir "$k")
    cat >"$d/sshd_config" <<CFG
# sshd for test host h$k ($(host_ip "$k")), written by tests/services/sshhosts
# Drop-ins (e.g. tests/services/slurm/login-node.sh's SetEnv SLURM_CONF).
Include $d/sshd_config.d/*.conf
Port 22
ListenAddress $(host_ip "$k")
HostKey $d/ssh_host_ed25519_key
PidFile $d/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AuthorizedKeysFile $STATE/authorized_keys
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 100
MaxSessions 100
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel INFO
CFG
}

# Start host K's sshd (namespace must exist); no-op if it already runs.
start_sshd() {
    local k=$1 d ns pid i
    d=$(host_dir "$k"); ns=$(host_ns "$k")
    if pid=$(sshd_pid "$k"); then
        say "h$k: sshd already running (pid $pid)"
        return 0
    fi
    # A listener without our pid file (state dir removed or changed) would keep
    # the address busy: end it.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^sshd: .*\[listener\]'; then
            kill_wait "$pid"
            say "h$k: stale sshd listener (pid $pid) stopped"
        fi
    done
    mkdir -p "$d" /run/sshd
    chmod 0755 /run/sshd
    [ -s "$d/ssh_host_ed25519_key" ] ||
        ssh-keygen -q -t ed25519 -N '' -C "h$k" -f "$d/ssh_host_ed25519_key" </dev/null
    write_sshd_config "$k"
    "$SSHD" -t -f "$d/sshd_config" || die "h$k: sshd -t rejected $d/sshd_config"
    rm -f "$d/sshd.pid"
    # Own UTS namespace so `hostname` prints hK; sshd daemonises inside it and
    # every session inherits the netns, the UTS namespace and the mount namespace
    # that `ip netns exec` made (with /etc/netns/mhK/hosts over /etc/hosts).
    # shellcheck disable=SC2016  # expanded by the inner sh
    ip netns exec "$ns" unshare --uts /bin/sh -c \
        'hostname "$1" && exec "$2" -f "$3" -E "$4"' \
        sh "h$k" "$SSHD" "$d/sshd_config" "$d/sshd.log" ||
        die "h$k: sshd failed to start (see $d/sshd.log)"
    for i in $(seq 50); do
        if pid=$(sshd_pid "$k"); then
            say "h$k: sshd started (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    tail -n 5 "$d/sshd.log" >&2 2>/dev/null || true
    die "h$k: sshd did not write its pid file $d/sshd.pid"
}

# Wait (bounded) until `ssh hK true` works.
wait_ssh() {
    local k=$1 timeout=${2:-20} start err
    start=$(date +%s)
    while :; do
        if err=$(ssh -F "$STATE/ssh_config" -o ConnectTimeout=2 "h$k" true 2>&1 </dev/null); then
            return 0
        fi
        if [ $(( $(date +%s) - start )) -ge "$timeout" ]; then
            printf '%s\n' "$err" >&2
            die "h$k ($(host_ip "$k")) not reachable over ssh after ${timeout}s (log: $(host_dir "$k")/sshd.log)"
        fi
        sleep 0.2
    done
}

# known_hosts and ssh_config for every host whose namespace exists.
write_client_files() {
    local k hosts tmp
    hosts=$(existing_hosts)
    tmp=$(mktemp "$STATE/.known_hosts.XXXXXX")
    for k in $hosts; do
        [ -s "$(host_dir "$k")/ssh_host_ed25519_key.pub" ] || continue
        printf '%s %s\n' "$(host_ip "$k")" \
            "$(cut -d' ' -f1,2 "$(host_dir "$k")/ssh_host_ed25519_key.pub")" >>"$tmp"
    done
    mv -f "$tmp" "$STATE/known_hosts"

    tmp=$(mktemp "$STATE/.ssh_config.XXXXXX")
    {
        echo "# ssh client config for the muster SSH test hosts: ssh -F $STATE/ssh_config h1"
        for k in $hosts; do
            printf 'Host h%s\n    HostName %s\n\n' "$k" "$(host_ip "$k")"
        done
        cat <<CFG
Host *
    User root
    IdentityFile $STATE/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    HashKnownHosts no
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
CFG
    } >"$tmp"
    mv -f "$tmp" "$STATE/ssh_config"
}
