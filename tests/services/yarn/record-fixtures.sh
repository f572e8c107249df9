#!/usr/bin/env bash
# Re-records crates/muster-yarn/tests/fixtures/ from the running test YARN
# (start.sh first): real answers of the ResourceManager's REST and Services
# API and of the NodeManager's REST API, which the parsers are tested on.
# Submits a probe service (plain processes: a port listener as the
# "scheduler", sleepers as workers), flexes and decommissions it, and
# destroys it again. Takes about a minute. Each file's command is listed in
# COMMANDS.txt with the date and Hadoop version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/lib.sh"
out="$(cd "$here/../../.." && pwd)/crates/muster-yarn/tests/fixtures"
mkdir -p "$out"
U="user.name=$(id -un)"
SVC=muster-fixture
cmds="$out/COMMANDS.txt"
echo "# Recorded $(date -u +%Y-%m-%dT%H:%M:%SZ) from Hadoop $HADOOP_VERSION (tests/services/yarn), by record-fixtures.sh" >"$cmds"

rec() { # file method path [body]: writes the answer, appends the command and HTTP code
    local file="$1" method="$2" path="$3" body="${4:-}" base="$RM_URL" code
    case "$path" in nm:*) base="$NM_URL"; path="${path#nm:}" ;; esac
    local sep='?'; case "$path" in *\?*) sep='&' ;; esac
    if [ -n "$body" ]; then
        code=$(curl -s -o "$out/$file" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' \
            --data "$body" "$base$path$sep$U")
    else
        code=$(curl -s -o "$out/$file" -w '%{http_code}' -X "$method" "$base$path$sep$U")
    fi
    echo "$file: HTTP $code: curl -X $method '$base$path$sep$U'${body:+ --data '<body>'}" >>"$cmds"
}
wait_for() { # predicate-on-GET-service (python expr on d) timeout
    local expr="$1" t="${2:-90}" i
    for i in $(seq 1 "$t"); do
        if curl -s "$RM_URL/app/v1/services/$SVC?$U" | python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($expr) else 1)" 2>/dev/null; then
            return 0
        fi
        sleep 1
    done
    echo "record-fixtures: timed out waiting for: $expr" >&2
    return 1
}

curl -s -X DELETE "$RM_URL/app/v1/services/$SVC?$U" >/dev/null || true
sleep 2
PORT=23799
service=$(cat <<JSON
{"name":"$SVC","version":"1","description":"muster cluster fixture; tags: [\"rec\"]","queue":"default",
 "components":[
  {"name":"scheduler","number_of_containers":1,"restart_policy":"ALWAYS","resource":{"cpus":1,"memory":"128"},
   "readiness_check":{"type":"PORT","properties":{"port":"$PORT"}},
   "launch_command":"python3 -m http.server --bind 127.0.0.1 $PORT"},
  {"name":"worker","number_of_containers":2,"dependencies":["scheduler"],"restart_policy":"ALWAYS",
   "resource":{"cpus":1,"memory":"64"},"launch_command":"sh -c 'echo worker of \${SCHEDULER-0_HOST}; exec sleep 3600'"}]}
JSON
)
rec rm_cluster_info.json GET /ws/v1/cluster/info
code=$(curl -s -o "$out/unauthenticated.txt" -w '%{http_code}' "$RM_URL/ws/v1/cluster/info")
echo "unauthenticated.txt: HTTP $code: curl '$RM_URL/ws/v1/cluster/info' (no user.name)" >>"$cmds"
rec service_not_found.json GET /app/v1/services/$SVC
rec post_accepted.json POST /app/v1/services "$service"
rec post_exists.json POST /app/v1/services "$service"
# the same service into a STOPPED queue, and one asking for more memory than any node has
rec post_closed_queue.json POST /app/v1/services "$(echo "$service" | sed 's/"name":"muster-fixture"/"name":"muster-fixture-q"/; s/"queue":"default"/"queue":"closed"/')"
rec post_too_big.json POST /app/v1/services "$(echo "$service" | sed 's/"name":"muster-fixture"/"name":"muster-fixture-big"/; s/"memory":"64"/"memory":"999999"/')"
rec post_bad_name.json POST /app/v1/services "$(echo "$service" | sed 's/"name":"muster-fixture"/"name":"Bad_Name"/')"
rec service_accepted_get.json GET /app/v1/services/$SVC
wait_for 'any(x.get("state")=="RUNNING_BUT_UNREADY" for c in d.get("components",[]) for x in c.get("containers",[]))' 90
rec service_starting.json GET /app/v1/services/$SVC
wait_for 'd.get("state")=="STABLE"' 120
rec service_stable.json GET /app/v1/services/$SVC
rec flex_up.json PUT /app/v1/services/$SVC/components/worker '{"number_of_containers":3}'
wait_for 'd.get("state")=="STABLE" and len([x for c in d["components"] if c["name"]=="worker" for x in c.get("containers",[])])==3' 60
rec decommission.json PUT /app/v1/services/$SVC "{\"name\":\"$SVC\",\"components\":[{\"name\":\"worker\",\"decommissioned_instances\":[\"worker-1\"]}]}"
wait_for 'len([x for c in d["components"] if c["name"]=="worker" for x in c.get("containers",[])])==2' 60
rec service_decommissioned.json GET /app/v1/services/$SVC
rec apps_yarn_service.json GET "/ws/v1/cluster/apps?applicationTypes=yarn-service&states=NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING"
rec apps_none.json GET "/ws/v1/cluster/apps?applicationTypes=no-such-type"
app=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$out/service_decommissioned.json")
rec app.json GET "/ws/v1/cluster/apps/$app"
rec app_attempts.json GET "/ws/v1/cluster/apps/$app/appattempts"
attempt=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["appAttempts"]["appAttempt"][-1]["appAttemptId"])' "$out/app_attempts.json")
rec attempt_containers.json GET "/ws/v1/cluster/apps/$app/appattempts/$attempt/containers"
cid=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print([x["id"] for c in d["components"] if c["name"]=="worker" for x in c["containers"]][0])' "$out/service_decommissioned.json")
rec nm_container.json GET "nm:/ws/v1/node/containers/$cid"
rec nm_container_logs.json GET "nm:/ws/v1/node/containers/$cid/logs"
rec nm_container_stdout.txt GET "nm:/ws/v1/node/containers/$cid/logs/stdout.txt"
rec nm_container_missing_log.txt GET "nm:/ws/v1/node/containers/$cid/logs/no-such.txt"
rec nm_app.json GET "nm:/ws/v1/node/apps/$app"
rec stop.json PUT /app/v1/services/$SVC '{"state":"STOPPED"}'
sleep 3
rec service_stopped.json GET /app/v1/services/$SVC
rec delete.json DELETE /app/v1/services/$SVC
rec service_deleted_get.json GET /app/v1/services/$SVC
rec app_finished.json GET "/ws/v1/cluster/apps/$app"
for _ in $(seq 1 20); do
    curl -s "$NM_URL/ws/v1/node/apps/$app?$U" | grep -q '"containerids"' || break
    sleep 1
done
rec nm_app_finished.json GET "nm:/ws/v1/node/apps/$app"
rec nm_container_gone.json GET "nm:/ws/v1/node/containers/$cid"
rec delete_missing.json DELETE /app/v1/services/$SVC
for s in muster-fixture-q muster-fixture-big Bad_Name; do curl -s -X DELETE "$RM_URL/app/v1/services/$s?$U" >/dev/null || true; done
echo "record-fixtures: wrote $(ls "$out" | wc -l) files to $out" >&2
