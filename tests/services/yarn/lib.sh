# Shared by start.sh / stop.sh: where the test YARN lives and how to find its
# processes. Sourced, not run.
#
# Jars (slow to fetch, keyed by version) are cached outside the repo; the
# running daemons' config, state and logs live in their own directory, so
# nothing of the machine's (no /etc/hadoop, no ~/.m2, no default ports) is used.

HADOOP_VERSION=3.4.2
CACHE="${MUSTER_CACHE:-$HOME/.cache/muster}/yarn/$HADOOP_VERSION"
M2="$CACHE/m2"          # Maven's local repository (outside the project)
LIB="$CACHE/lib"        # every jar, flat: the daemons' classpath
STATE="${MUSTER_YARN_STATE:-/tmp/muster-yarn}"
CONF="$STATE/conf"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
NM_LOCAL="$STATE/nm-local"
NM_LOGS="$STATE/nm-logs"

# Ports: a block of our own, away from Hadoop's defaults (8030-8090, 2181),
# Dask's (8786/8787), Kubernetes' (6443, 2379, 10250) and the SLURM ones
# (6817-6819), all bound to 127.0.0.1 only.
ZK_PORT="${MUSTER_YARN_ZK_PORT:-23181}"
RM_PORT_BASE="${MUSTER_YARN_PORT_BASE:-23000}"
RM_SCHEDULER_PORT=$((RM_PORT_BASE + 30))
RM_TRACKER_PORT=$((RM_PORT_BASE + 31))
RM_CLIENT_PORT=$((RM_PORT_BASE + 32))
RM_ADMIN_PORT=$((RM_PORT_BASE + 33))
RM_WEB_PORT=$((RM_PORT_BASE + 88))
NM_LOCALIZER_PORT=$((RM_PORT_BASE + 40))
NM_WEB_PORT=$((RM_PORT_BASE + 42))
NM_PORT=$((RM_PORT_BASE + 45))
NM_COLLECTOR_PORT=$((RM_PORT_BASE + 48))
RM_URL="http://127.0.0.1:$RM_WEB_PORT"
NM_URL="http://127.0.0.1:$NM_WEB_PORT"

# Java 17 needs these for Hadoop 3.4's reflection.
JAVA_OPENS=(
    --add-opens=java.base/java.lang=ALL-UNNAMED
    --add-opens=java.base/java.util=ALL-UNNAMED
    --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens=java.base/java.net=ALL-UNNAMED
    --add-opens=java.base/java.nio=ALL-UNNAMED
    --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
    --add-opens=java.base/java.io=ALL-UNNAMED
)

# The pid in $PIDS/<name>.pid, if that process is alive and is still ours
# (its command line names our state directory).
daemon_pid() {
    local f="$PIDS/$1.pid" pid
    [ -s "$f" ] || return 1
    pid="$(cat "$f")"
    [ -d "/proc/$pid" ] || return 1
    # Read whole, then matched: `tr | grep -q` under pipefail fails when grep
    # quits first and tr dies of SIGPIPE.
    local cmd
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmd" == *"-Dmuster.yarn.state=$STATE"* ]] || return 1
    echo "$pid"
}

# True when the daemon start.sh just launched has ended (its pid is gone or a
# zombie). Not daemon_pid: right after the fork, before `setsid java` has
# exec'd, the child's command line is still the shell's, so a check of the
# command line would call a daemon that is starting "exited".
launched_daemon_ended() {
    local pid stat
    pid="$(cat "$PIDS/$1.pid" 2>/dev/null)" || return 0
    [ -n "$pid" ] && read -r stat 2>/dev/null <"/proc/$pid/stat" || return 0
    stat="${stat##*) }"
    [ "${stat%% *}" = Z ]
}

# Pids of container processes the NodeManager started: their working
# directory is under our NM local dir (usercache/<user>/appcache/<app>/<container>).
container_pids() {
    local p cwd
    for p in /proc/[0-9]*; do
        cwd="$(readlink "$p/cwd" 2>/dev/null)" || continue
        case "$cwd" in "$NM_LOCAL"/*) echo "${p#/proc/}" ;; esac
    done
}
