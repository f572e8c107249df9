#!/usr/bin/env bash
# Start a real single-node Hadoop YARN 3.4.2 for muster's tests: ZooKeeper (the
# Services framework keeps its registry there), a ResourceManager (REST + the
# Services API) and a NodeManager, three separate JVMs from Maven Central's jars,
# each with its own config, state and log directory under $MUSTER_YARN_STATE
# (default /tmp/muster-yarn), all on 127.0.0.1 and on ports of their own.
#
# Idempotent: resolves the jars once (cached in
# ${MUSTER_CACHE:-$HOME/.cache/muster}/yarn/3.4.2/), rewrites the configs,
# restarts the daemons only when a config changed, starts what is not running,
# and waits until the RM answers REST and the NM is RUNNING.
# Prints `export MUSTER_YARN_RM=...` style lines on stdout for `eval`.
#
# Knobs: MUSTER_YARN_STATE, MUSTER_YARN_PORT_BASE (23000), MUSTER_YARN_ZK_PORT
# (23181), MUSTER_YARN_START_TIMEOUT (seconds, default 120).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"
TIMEOUT="${MUSTER_YARN_START_TIMEOUT:-120}"
USER_NAME="$(id -un)"

log() { echo "yarn-start: $*" >&2; }
die() {
    echo "yarn-start: ERROR: $*" >&2
    for f in "$LOGS"/*.log; do
        [ -f "$f" ] || continue
        echo "--- tail $f" >&2
        tail -n 8 "$f" >&2
    done
    exit 1
}

mkdir -p "$STATE" "$CONF" "$LOGS" "$PIDS" "$NM_LOCAL" "$NM_LOGS" "$STATE/tmp" "$STATE/zk"
# Serialise concurrent start/stop runs (parallel test processes).
exec 9>"$STATE/.lock"
flock -w 300 9 || { echo "yarn-start: ERROR: could not lock $STATE/.lock" >&2; exit 1; }

# --- 1. Java and Maven ----------------------------------------------------------
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing ${need[*]} and not root to install them"
    log "installing ${need[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${need[@]}" >"$STATE/apt.log" 2>&1; then
        apt-get update -q >>"$STATE/apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends "${need[@]}" >>"$STATE/apt.log" 2>&1 ||
            die "apt-get install failed, see $STATE/apt.log"
    fi
fi

# --- 2. the jars (Maven Central, cached by version) -----------------------------
if [ ! -f "$LIB/.complete" ]; then
    log "resolving Hadoop $HADOOP_VERSION jars with Maven into $LIB (cold: about 2 minutes)"
    mkdir -p "$CACHE/pom"
    deps=""
    for a in hadoop-yarn-server-resourcemanager hadoop-yarn-server-nodemanager \
        hadoop-yarn-services-core hadoop-yarn-services-api \
        hadoop-yarn-server-timelineservice hadoop-yarn-client hadoop-common hadoop-hdfs-client; do
        deps="$deps<dependency><groupId>org.apache.hadoop</groupId><artifactId>$a</artifactId><version>$HADOOP_VERSION</version></dependency>"
    done
    cat >"$CACHE/pom/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>muster.tests</groupId><artifactId>yarn-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>$deps</dependencies>
</project>
POM
    rm -rf "$LIB.partial"
    (cd "$CACHE/pom" && mvn -B -q -Dmaven.repo.local="$M2" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$LIB.partial") >"$CACHE/mvn.log" 2>&1 ||
        { tail -n 40 "$CACHE/mvn.log" >&2; die "mvn dependency:copy-dependencies failed (log $CACHE/mvn.log)"; }
    rm -rf "$LIB"
    mv "$LIB.partial" "$LIB"
    touch "$LIB/.complete"
    log "$(find "$LIB" -name '*.jar' | wc -l) jars in $LIB"
fi

# --- 3. configuration --------------------------------------------------------------
newconf="$(mktemp -d)"
trap 'rm -rf "$newconf"' EXIT
prop() { printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"; }
site() {
    echo '<?xml version="1.0"?>'
    echo '<!-- Written by muster tests/services/yarn/start.sh: a single-node test YARN. -->'
    echo '<configuration>'
    cat
    echo '</configuration>'
}
AM_OPTS="-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 ${JAVA_OPENS[*]}"
{
    prop fs.defaultFS "file:///"
    prop hadoop.tmp.dir "$STATE/tmp"
    prop hadoop.security.authentication simple
    # REST callers say who they are with ?user.name= (muster's `user`); no
    # anonymous fallback, so a client that forgets it is refused, not dr.who.
    prop hadoop.http.filter.initializers org.apache.hadoop.security.AuthenticationFilterInitializer
    prop hadoop.http.authentication.type simple
    prop hadoop.http.authentication.simple.anonymous.allowed false
    prop hadoop.registry.zk.quorum "127.0.0.1:$ZK_PORT"
    prop "hadoop.proxyuser.$USER_NAME.hosts" "*"
    prop "hadoop.proxyuser.$USER_NAME.groups" "*"
    prop "hadoop.proxyuser.$USER_NAME.users" "*"
} | site >"$newconf/core-site.xml"
{
    prop yarn.resourcemanager.hostname 127.0.0.1
    prop yarn.resourcemanager.address "127.0.0.1:$RM_CLIENT_PORT"
    prop yarn.resourcemanager.scheduler.address "127.0.0.1:$RM_SCHEDULER_PORT"
    prop yarn.resourcemanager.resource-tracker.address "127.0.0.1:$RM_TRACKER_PORT"
    prop yarn.resourcemanager.admin.address "127.0.0.1:$RM_ADMIN_PORT"
    prop yarn.resourcemanager.webapp.address "127.0.0.1:$RM_WEB_PORT"
    prop yarn.nodemanager.hostname 127.0.0.1
    prop yarn.nodemanager.address "127.0.0.1:$NM_PORT"
    prop yarn.nodemanager.localizer.address "127.0.0.1:$NM_LOCALIZER_PORT"
    prop yarn.nodemanager.webapp.address "127.0.0.1:$NM_WEB_PORT"
    prop yarn.nodemanager.collector-service.address "127.0.0.1:$NM_COLLECTOR_PORT"
    prop yarn.nodemanager.local-dirs "$NM_LOCAL"
    prop yarn.nodemanager.log-dirs "$NM_LOGS"
    prop yarn.nodemanager.resource.detect-hardware-capabilities false
    prop yarn.nodemanager.resource.memory-mb 16384
    prop yarn.nodemanager.resource.cpu-vcores 32
    prop yarn.scheduler.minimum-allocation-mb 64
    prop yarn.scheduler.maximum-allocation-mb 16384
    prop yarn.scheduler.minimum-allocation-vcores 1
    prop yarn.scheduler.maximum-allocation-vcores 32
    prop yarn.nodemanager.pmem-check-enabled false
    prop yarn.nodemanager.vmem-check-enabled false
    prop yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage 99.9
    prop yarn.nodemanager.disk-health-checker.min-free-space-per-disk-mb 50
    prop yarn.nodemanager.container-executor.class \
        org.apache.hadoop.yarn.server.nodemanager.DefaultContainerExecutor
    prop yarn.log-aggregation-enable false
    prop yarn.timeline-service.enabled false
    # Work-preserving restarts: containers survive an RM (and NM) restart.
    prop yarn.resourcemanager.recovery.enabled true
    prop yarn.resourcemanager.store.class \
        org.apache.hadoop.yarn.server.resourcemanager.recovery.FileSystemRMStateStore
    prop yarn.resourcemanager.fs.state-store.uri "file://$STATE/rm-state"
    prop yarn.nodemanager.recovery.enabled true
    prop yarn.nodemanager.recovery.dir "$STATE/nm-recovery"
    # The Services API and its framework, without any tarball on a local FS.
    prop yarn.webapp.api-service.enable true
    prop yarn.service.classpath "$CONF,$LIB/*"
    prop yarn.service.base.path "$STATE/services"
    prop yarn.service.am-resource.memory 384
    prop yarn.service.am.java.opts "$AM_OPTS"
    prop yarn.service.readiness-check-interval.seconds 2
    prop yarn.service.container-failure.retry-interval-ms 1000
} | site >"$newconf/yarn-site.xml"
{
    prop yarn.scheduler.capacity.root.queues "default,closed"
    prop yarn.scheduler.capacity.maximum-am-resource-percent 0.5
    prop yarn.scheduler.capacity.root.default.capacity 95
    prop yarn.scheduler.capacity.root.default.maximum-capacity 100
    prop yarn.scheduler.capacity.root.default.state RUNNING
    prop yarn.scheduler.capacity.root.default.acl_submit_applications "*"
    # A queue that refuses every submission (tests of a refused launch).
    prop yarn.scheduler.capacity.root.closed.capacity 5
    prop yarn.scheduler.capacity.root.closed.maximum-capacity 5
    prop yarn.scheduler.capacity.root.closed.state STOPPED
} | site >"$newconf/capacity-scheduler.xml"
cat >"$newconf/log4j.properties" <<L4J
log4j.rootLogger=INFO,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
L4J
cat >"$newconf/zoo.cfg" <<ZOO
tickTime=2000
dataDir=$STATE/zk
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
admin.enableServer=false
maxClientCnxns=0
ZOO

changed=0
if ! diff -rq "$newconf" "$CONF" >/dev/null 2>&1; then
    changed=1
    rm -rf "${CONF:?}"/*
    cp "$newconf"/* "$CONF"/
fi
if [ "$changed" = 1 ] && { daemon_pid zk || daemon_pid rm || daemon_pid nm; } >/dev/null; then
    log "configuration changed: restarting the daemons"
    MUSTER_YARN_LOCKED=1 "$here/stop.sh" >&2
fi

# --- 4. the daemons ----------------------------------------------------------------
start_daemon() { # name heap main-class [args...]
    local name="$1" heap="$2"
    shift 2
    if daemon_pid "$name" >/dev/null; then
        return 0
    fi
    log "starting $name"
    setsid java "-Xmx$heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "${JAVA_OPENS[@]}" \
        "-Dmuster.yarn.state=$STATE" "-Dhadoop.log.dir=$LOGS" "-Dyarn.log.dir=$LOGS" \
        "-Dzookeeper.log.dir=$LOGS" -Dlog4j.configuration=log4j.properties \
        -cp "$CONF:$LIB/*" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
    echo $! >"$PIDS/$name.pid"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
deadline=$((SECONDS + TIMEOUT))

start_daemon zk 128m org.apache.zookeeper.server.quorum.QuorumPeerMain "$CONF/zoo.cfg"
until port_open "$ZK_PORT"; do
    ! launched_daemon_ended zk || die "ZooKeeper exited (log $LOGS/zk.log)"
    [ $SECONDS -lt $deadline ] || die "ZooKeeper did not open port $ZK_PORT"
    sleep 0.5
done
start_daemon rm 512m org.apache.hadoop.yarn.server.resourcemanager.ResourceManager
start_daemon nm 256m org.apache.hadoop.yarn.server.nodemanager.NodeManager

q="user.name=$USER_NAME"
until curl -sf "$RM_URL/ws/v1/cluster/info?$q" 2>/dev/null | grep -q '"state":"STARTED"'; do
    ! launched_daemon_ended rm || die "the ResourceManager exited (log $LOGS/rm.log)"
    [ $SECONDS -lt $deadline ] || die "the ResourceManager's REST API did not come up in ${TIMEOUT}s"
    sleep 1
done
until curl -sf "$RM_URL/ws/v1/cluster/nodes?$q" 2>/dev/null | grep -q '"state":"RUNNING"'; do
    ! launched_daemon_ended nm || die "the NodeManager exited (log $LOGS/nm.log)"
    [ $SECONDS -lt $deadline ] || die "the NodeManager did not become RUNNING in ${TIMEOUT}s"
    sleep 1
done
log "ready: RM $RM_URL, NM $NM_URL, ZooKeeper 127.0.0.1:$ZK_PORT (state $STATE)"
echo "export MUSTER_YARN_RM=$RM_URL"
echo "export MUSTER_YARN_NM=$NM_URL"
echo "export MUSTER_YARN_STATE=$STATE"
echo "export MUSTER_YARN_LIB=$LIB"
