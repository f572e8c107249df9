#!/usr/bin/env bash
# Re-record the fixtures in ./fixtures from the REAL single-node SLURM started by
# start.sh: submits small jobs/arrays (sbatch and the Torque qsub wrapper),
# captures squeue/scontrol/qstat outputs in several states, then cancels every
# job it submitted. Each fixture file holds only the command's stdout; stderr
# (if any) goes to <name>.stderr.txt, and fixtures/COMMANDS.txt lists
# file, exit code and exact command. Takes about 30-40 s.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
# The test SLURM's SLURM_CONF and directories (never the machine's /etc/slurm).
. "$HERE/env.sh"
FIX="$HERE/fixtures"
WORK="$(mktemp -d /tmp/muster-slurm-fixtures.XXXXXX)"
# Machine-friendly squeue formats documented in README.md.
FMT_PIPE='%i|%F|%K|%A|%T|%r|%j'
FMT_O='JobArrayID:|,ArrayJobID:|,ArrayTaskID:|,JobID:|,State:|,Reason:|,exit_code:|,Name:'
UNKNOWN=999999

log() { echo "record-fixtures: $*"; }
die() {
    echo "record-fixtures: ERROR: $*" >&2
    exit 1
}

scontrol ping 2>/dev/null | grep -q UP || die "slurmctld not running: run start.sh first"
mkdir -p "$FIX"
rm -f "$FIX"/*.txt "$FIX"/*.json
cd "$WORK" || die "cannot cd $WORK"
: >"$FIX/COMMANDS.txt"
IDS=()

# rec NAME CMD...: run CMD (via bash -c), stdout -> fixtures/NAME, stderr ->
# fixtures/NAME-without-ext.stderr.txt if non-empty; note the exit code.
rec() {
    local name="$1" rc
    shift
    bash -c "$*" >"$FIX/$name" 2>"$WORK/stderr"
    rc=$?
    if [ -s "$WORK/stderr" ]; then
        cp "$WORK/stderr" "$FIX/${name%.*}.stderr.txt"
    fi
    printf '%s\trc=%s\t%s\n' "$name" "$rc" "$*" >>"$FIX/COMMANDS.txt"
}

# squeue state (%T) of job or array task $1 ("" when gone).
state_of() { squeue -h -t all -j "$1" -o %T 2>/dev/null | head -n1; }

# wait_for ID STATE...: wait up to 30 s until ID is in one of STATEs.
wait_for() {
    local id="$1" s i
    shift
    for i in $(seq 1 300); do
        s="$(state_of "$id")"
        for want in "$@"; do [ "$s" = "$want" ] && return 0; done
        sleep 0.1
    done
    die "job $id not in state $* (is: $s)"
}

ids_csv() {
    local IFS=,
    echo "${IDS[*]}"
}

# json_fixture FULL TRIMMED: squeue --json, keeping only this run's jobs; FULL
# (may be "-" to skip) keeps every key, TRIMMED a selection of keys.
json_fixture() {
    squeue --json >"$WORK/all.json"
    python3 - "$WORK/all.json" "$FIX" "$(ids_csv)" "$1" "$2" <<'PY'
import json, sys
src, fix, ids, full_name, trim_name = sys.argv[1:]
ids = {int(i) for i in ids.split(",")}
d = json.load(open(src))
# A job belongs to this run if its id or its array's id was submitted here.
mine = [j for j in d["jobs"] if j["job_id"] in ids or j.get("array_job_id") in ids]
if full_name != "-":
    json.dump(dict(d, jobs=mine), open(f"{fix}/{full_name}", "w"), indent=1)
keep = ["job_id", "array_job_id", "array_task_id", "array_task_string", "array_max_tasks",
        "name", "job_state", "state_reason", "state_description", "exit_code",
        "derived_exit_code", "batch_flag", "batch_host", "nodes", "partition",
        "submit_time", "start_time", "end_time", "standard_output", "standard_error",
        "current_working_directory", "command", "cpus", "memory_per_node",
        "memory_per_cpu", "time_limit"]
trim = {"meta": d["meta"], "errors": d["errors"],
        "jobs": [{k: j.get(k) for k in keep} for j in mine]}
json.dump(trim, open(f"{fix}/{trim_name}", "w"), indent=1)
PY
    [ "$1" != - ] && printf '%s\trc=0\t%s\n' "$1" "squeue --json (jobs filtered to this run)" >>"$FIX/COMMANDS.txt"
    printf '%s\trc=0\t%s\n' "$2" "squeue --json (jobs filtered to this run, selected keys)" >>"$FIX/COMMANDS.txt"
}

# --- plain sbatch jobs ---------------------------------------------------------------
log "submitting plain jobs"
rec sbatch-parsable-plain.txt "sbatch --parsable --job-name=muster-demo-plain -o $WORK/plain-%j.out --wrap 'echo hello; sleep 60'"
PLAIN="$(cat "$FIX/sbatch-parsable-plain.txt")"
IDS+=("$PLAIN")
rec sbatch-plain-no-parsable.txt "sbatch --job-name=muster-demo-np -o /dev/null --wrap 'true'"
IDS+=("$(awk '{print $NF}' "$FIX/sbatch-plain-no-parsable.txt")")
FAIL="$(sbatch --parsable --job-name=muster-demo-fail -o "$WORK/fail-%j.out" --wrap 'echo failing; exit 3')"
IDS+=("$FAIL")
OK="$(sbatch --parsable --job-name=muster-demo-ok -o "$WORK/ok-%j.out" --wrap 'echo ok')"
IDS+=("$OK")
HELD="$(sbatch --parsable --hold --job-name=muster-demo-held -o /dev/null --wrap 'sleep 60')"
IDS+=("$HELD")
wait_for "$PLAIN" RUNNING
wait_for "$FAIL" FAILED
wait_for "$OK" COMPLETED

# --- array pending behind a filler job, then running -----------------------------------
log "submitting filler + pending array"
FILL="$(sbatch --parsable --mem=15000 --job-name=muster-demo-filler -o /dev/null --wrap 'sleep 300')"
IDS+=("$FILL")
wait_for "$FILL" RUNNING
rec sbatch-parsable-array.txt "sbatch --parsable --array=0-3 --mem=2000 --job-name=muster-demo-w -o $WORK/arr-%A_%a.out --wrap 'echo task \$SLURM_ARRAY_TASK_ID; sleep 60'"
ARR="$(cat "$FIX/sbatch-parsable-array.txt")"
IDS+=("$ARR")
# Right after submission Reason is "None"; wait until the scheduler has looked
# at the array and set Reason=Resources.
rec squeue-array-just-submitted.txt "squeue -h -t all -j $ARR -o '$FMT_PIPE'"
for _ in $(seq 1 100); do
    [ "$(squeue -h -j "$ARR" -o %r)" = Resources ] && break
    sleep 0.1
done
rec squeue-array-pending.txt "squeue -h -t all -j $ARR -o '$FMT_PIPE'"
rec squeue-array-pending-ijT.txt "squeue -h -j $ARR -o '%i %T %j'"
rec squeue-array-pending-O.txt "squeue -h -t all -j $ARR -O '$FMT_O'"
rec scontrol-show-job-array-pending.txt "scontrol show job -o $ARR"
rec squeue-held.txt "squeue -h -t all -j $HELD -o '$FMT_PIPE'"
rec scontrol-show-job-held.txt "scontrol show job -o $HELD"
rec squeue-all-states.txt "squeue -h -t all -j $(ids_csv) -o '$FMT_PIPE'"
rec squeue-all-states-O.txt "squeue -h -t all -j $(ids_csv) -O '$FMT_O'"
rec squeue-default-no-t.txt "squeue -h -j $(ids_csv) -o '$FMT_PIPE'"
rec squeue-default.txt "squeue -j $(ids_csv)"
json_fixture - squeue-json-array-pending-trimmed.json
rec sinfo-state.txt "sinfo -h -o %T"
rec sinfo.txt "sinfo"

log "releasing the array (cancel filler)"
scancel "$FILL"
wait_for "${ARR}_0" RUNNING
wait_for "${ARR}_3" RUNNING
rec squeue-array-running.txt "squeue -h -t all -j $ARR -o '$FMT_PIPE'"
rec squeue-array-running-ijT.txt "squeue -h -j $ARR -o '%i %T %j'"
rec squeue-array-running-O.txt "squeue -h -t all -j $ARR -O '$FMT_O'"
rec scontrol-show-job-array-running.txt "scontrol show job -o $ARR"
rec scontrol-show-job-array-task.txt "scontrol show job -o ${ARR}_1"
rec scontrol-show-job-running.txt "scontrol show job -o $PLAIN"
rec scontrol-show-job-failed.txt "scontrol show job -o $FAIL"
rec scontrol-show-job-completed.txt "scontrol show job -o $OK"
rec scontrol-show-job-cancelled.txt "scontrol show job -o $FILL"
rec squeue-failed.txt "squeue -h -t all -j $FAIL -o '$FMT_PIPE'"
rec squeue-failed-O.txt "squeue -h -t all -j $FAIL -O '$FMT_O'"
rec squeue-completed-no-t.txt "squeue -h -j $OK -o '$FMT_PIPE'"

# --- throttled array: some tasks running, the rest pending -------------------------------
THR="$(sbatch --parsable --array=0-5%2 --job-name=muster-demo-thr -o /dev/null --wrap 'sleep 60')"
IDS+=("$THR")
wait_for "${THR}_1" RUNNING
sleep 1
rec squeue-array-throttled.txt "squeue -h -t all -j $THR -o '$FMT_PIPE'"

# --- partially cancelled array: cancel one task -------------------------------------------
scancel "${ARR}_2"
wait_for "${ARR}_2" CANCELLED
rec squeue-array-one-task-cancelled.txt "squeue -h -t all -j $ARR -o '$FMT_PIPE'"

# --- JSON ---------------------------------------------------------------------------------
log "squeue --json"
json_fixture squeue-json-full.json squeue-json-trimmed.json
rec squeue-json-j-filter-ignored.txt "squeue --json -j $OK | python3 -c 'import json,sys; print(len(json.load(sys.stdin)[\"jobs\"]), \"jobs returned for -j $OK\")'"

# --- unknown ids / double cancel ---------------------------------------------------------
rec squeue-unknown.txt "squeue -h -j $UNKNOWN -o '$FMT_PIPE'"
rec scontrol-show-job-unknown.txt "scontrol show job -o $UNKNOWN"
rec scancel-unknown.txt "scancel $UNKNOWN"
rec scancel-completed.txt "scancel $OK"

# --- Torque wrappers (slurm-wlm-torque) ---------------------------------------------------
log "Torque wrappers"
cat >"$WORK/pbs-job.sh" <<'EOF'
#!/bin/bash
#PBS -N muster-pbs-demo
#PBS -l walltime=00:10:00
#PBS -l mem=200mb
env | grep -E '^(PBS|SLURM)_' | sort >"$SLURM_SUBMIT_DIR/env-$SLURM_JOB_ID.txt"
sleep 60
EOF
cat >"$WORK/pbs-fail.sh" <<'EOF'
#!/bin/bash
#PBS -N muster-pbs-fail
exit 3
EOF
cat >"$WORK/pbs-array.sh" <<'EOF'
#!/bin/bash
#PBS -N muster-pbs-arr
echo "task=${SLURM_ARRAY_TASK_ID:-unset} PBS_ARRAYID=${PBS_ARRAYID:-unset} PBS_ARRAY_INDEX=${PBS_ARRAY_INDEX:-unset}"
sleep 60
EOF
cp "$WORK/pbs-job.sh" "$FIX/qsub-script-used.sh.txt"
rec qsub-plain.txt "qsub -o $WORK/pbs.out -e $WORK/pbs.err $WORK/pbs-job.sh"
Q="$(cat "$FIX/qsub-plain.txt")"
IDS+=("$Q")
rec qsub-fail.txt "qsub -o /dev/null -e /dev/null $WORK/pbs-fail.sh"
QF="$(cat "$FIX/qsub-fail.txt")"
IDS+=("$QF")
rec qsub-array-J.txt "qsub -J 0-2 -o $WORK/pbsJ-%a.out -e $WORK/pbsJ-%a.err $WORK/pbs-array.sh"
QA="$(cat "$FIX/qsub-array-J.txt")"
IDS+=("$QA")
rec qsub-array-t.txt "qsub -t 0-1 -N muster-pbs-arr-t -o /dev/null -e /dev/null $WORK/pbs-array.sh"
QT="$(cat "$FIX/qsub-array-t.txt")"
IDS+=("$QT")
rec qsub-error-too-much-memory.txt "qsub -l mem=100000mb -o /dev/null -e /dev/null $WORK/pbs-job.sh"
wait_for "$Q" RUNNING
wait_for "${QA}_2" RUNNING
wait_for "$QF" FAILED
sleep 1
rec qstat-all.txt "qstat"
rec qstat-ids.txt "qstat $Q $QF $QA $QT $OK"
rec qstat-a.txt "qstat -a $Q $QF $QA"
rec qstat-one-running.txt "qstat $Q"
rec qstat-f-running.txt "qstat -f $Q"
rec qstat-f-failed.txt "qstat -f $QF"
rec qstat-f-completed.txt "qstat -f $OK"
rec qstat-array-parent-id.txt "qstat $QA"
rec qstat-f-array-parent-id.txt "qstat -f $QA"
rec qstat-array-task-id.txt "qstat ${QA}_1"
rec qstat-unknown.txt "qstat $UNKNOWN"
rec qstat-f-unknown.txt "qstat -f $UNKNOWN"
rec qstat-x-unsupported.txt "qstat -x $Q"
rec qstat-F-json-unsupported.txt "qstat -f -F json $Q"
rec squeue-qsub-jobs.txt "squeue -h -t all -j $Q,$QF,$QA,$QT -o '$FMT_PIPE'"
rec qsub-job-env.txt "cat $WORK/env-$Q.txt"
rec qsub-array-task-output.txt "cat $WORK/pbsJ-0.out $WORK/pbsJ-1.out $WORK/pbsJ-2.out"
rec qdel-running.txt "qdel $Q"
wait_for "$Q" CANCELLED COMPLETED
rec qdel-again.txt "qdel $Q"
rec qdel-unknown.txt "qdel $UNKNOWN"
rec qstat-f-cancelled.txt "qstat -f $Q"

# --- job completion log, clean-up ----------------------------------------------------------
log "cleaning up"
scancel $(printf '%s ' "${IDS[@]}") 2>/dev/null
sleep 2
rec squeue-after-cancel.txt "squeue -h -t all -j $(ids_csv) -o '$FMT_PIPE'"
rec jobcomp-log-lines.txt "grep -E '(^| )(JobId|ArrayJobId)=($(ids_csv | tr , '|')) ' $LOGDIR/jobcomp.log"
# Make COMMANDS.txt independent of the temporary directory's name.
sed -i "s|$WORK|\$WORK|g" "$FIX/COMMANDS.txt"
rm -rf "$WORK"
log "done: $(ls "$FIX" | wc -l) files in $FIX"
