"""End-to-end: what muster's operator does on its own, on the real test
Kubernetes with the chart installed (operator_kit's `operator` fixture): a
DaskAutoscaler grows and shrinks one worker group through a burst while a
second group with its own autoscaler is never touched; `idleTimeout` deletes an
idle cluster and spares a busy one; a DaskJob runs its runner pod against its
own cluster to Successful (or to Failed after `backoffLimit` retries) and the
cluster is removed. Every check reads the API server (kubectl) or the Dask
scheduler, never muster's own output."""

import copy
import time

import yaml

from kube import pod_ready
from operator_kit import (  # noqa: F401  (operator is a fixture)
    REPO,
    assert_workers,
    example_cluster,
    live_pods,
    nothing_left_of,
    operator,
    operator_pod,
    reasons_about,
    scheduler_address,
    wait_for,
    wait_running,
)

API = "kubernetes.dask.org/v1"


def worker_group(name, cluster, replicas, template):
    return {
        "apiVersion": API,
        "kind": "DaskWorkerGroup",
        "metadata": {"name": name},
        "spec": {"cluster": cluster, "worker": {"replicas": replicas, "spec": template}},
    }


def autoscaler(name, cluster, minimum, maximum, group=None):
    spec = {"cluster": cluster, "minimum": minimum, "maximum": maximum}
    if group:
        spec["workerGroup"] = group
    return {"apiVersion": API, "kind": "DaskAutoscaler", "metadata": {"name": name}, "spec": spec}


def test_autoscaler_burst_grows_and_shrinks_its_group_only(kube, operator):
    from distributed import Client

    ns = operator
    doc = example_cluster("burst")
    doc["spec"]["worker"]["replicas"] = 1
    kube.apply(doc, namespace=ns)
    wait_running(kube, ns, "burst")
    template = copy.deepcopy(doc["spec"]["worker"]["spec"])
    kube.apply(worker_group("burst-other", "burst", 2, template), namespace=ns)
    others = {p["metadata"]["name"]: p["metadata"]["uid"]
              for p in assert_workers(kube, ns, "burst", 2, group="burst-other")}
    # The default group between 1 and 4; the other group its own autoscaler, pinned at 2.
    kube.apply(autoscaler("burst", "burst", 1, 4), namespace=ns)
    kube.apply(autoscaler("burst-other", "burst", 2, 2, group="burst-other"), namespace=ns)

    def decided(name):
        return lambda: kube.json("get", "daskautoscaler", name, "-n", ns).get("status", {}).get(
            "lastDecision")

    wait_for("the autoscaler's first decision", decided("burst"))
    wait_for("the other autoscaler's first decision", decided("burst-other"))
    assert_workers(kube, ns, "burst", 1)

    seen_max = {"burst-default": 0}

    def count():
        n = len(live_pods(kube, ns, "burst", "burst-default"))
        seen_max["burst-default"] = max(seen_max["burst-default"], n)
        return n

    client = Client(scheduler_address(kube, ns, "burst"), timeout=30)
    try:
        client.wait_for_workers(3, timeout=60)
        futures = client.map(lambda i: (__import__("time").sleep(0.5), i)[1], range(400))
        wait_for("the default group to grow to its maximum", lambda: count() == 4, timeout=120)
        status = kube.json("get", "daskautoscaler", "burst", "-n", ns)["status"]
        assert status["desiredWorkers"] == 4 and status["workerGroup"] == "burst-default", status
        assert sum(client.gather(futures)) == sum(range(400))
        del futures
        wait_for("the default group to shrink to its minimum",
                 lambda: count() == 1 and len(client.scheduler_info()["workers"]) == 3,
                 timeout=180, every=1)
    finally:
        client.close()
    assert seen_max["burst-default"] <= 4, seen_max
    assert_workers(kube, ns, "burst", 1)
    # The status is written by the autoscaler's next round after the pods
    # settle (its poll is up to 3 s), so it is waited for, not read once.
    def settled_status():
        st = kube.json("get", "daskautoscaler", "burst", "-n", ns)["status"]
        return st if (st.get("desiredWorkers"), st.get("currentWorkers")) == (1, 1) else None

    status = wait_for("the autoscaler's status to show 1 wanted, 1 current", settled_status, timeout=60)
    assert status["lastDecision"] and status["reason"], status
    reasons = set(reasons_about(kube, ns, "burst"))
    assert {"ScaleUp", "ScaleDown"} <= reasons, reasons
    # The other group: the very same pods, never restarted, never replaced.
    now = {p["metadata"]["name"]: p for p in live_pods(kube, ns, "burst", "burst-other")}
    assert {n: p["metadata"]["uid"] for n, p in now.items()} == others
    assert all(pod_ready(p) and p["status"]["containerStatuses"][0]["restartCount"] == 0
               for p in now.values())
    assert "ScaleDown" not in reasons_about(kube, ns, "burst-other")
    assert "Retired" not in reasons_about(kube, ns, "burst-other")
    # Hand-written groups and autoscalers are adopted by their cluster (as
    # dask-kubernetes does), so deleting the cluster deletes them too.
    for kind in ("daskworkergroup/burst-other", "daskautoscaler/burst", "daskautoscaler/burst-other"):
        owners = kube.json("get", kind, "-n", ns)["metadata"].get("ownerReferences", [])
        assert [o["name"] for o in owners] == ["burst"], (kind, owners)
    kube.kubectl("delete", "daskcluster", "burst", "-n", ns, "--wait=true")
    wait_for("every child of burst to be garbage-collected",
             lambda: nothing_left_of(kube, ns, "burst")
             and not kube.json("get", "daskautoscalers", "-n", ns)["items"]
             and not kube.json("get", "daskworkergroups", "-n", ns)["items"])


def test_idle_timeout_deletes_an_idle_cluster_and_spares_a_busy_one(kube, operator):
    from distributed import Client

    ns = operator
    doc = example_cluster("idle")
    doc["spec"]["worker"]["replicas"] = 1
    doc["spec"]["idleTimeout"] = 15
    kube.apply(doc, namespace=ns)
    wait_running(kube, ns, "idle")
    assert_workers(kube, ns, "idle", 1)
    client = Client(scheduler_address(kube, ns, "idle"), timeout=30)
    try:
        client.wait_for_workers(1, timeout=60)
        busy_from = time.monotonic()
        # Busy for longer than the timeout: never deleted while it works.
        assert client.submit(lambda: __import__("time").sleep(25) or 7).result(timeout=90) == 7
        assert time.monotonic() - busy_from >= 25
        assert kube.json("get", "daskcluster", "idle", "-n", ns)["metadata"].get(
            "deletionTimestamp") is None
    finally:
        client.close()
    idle_from = time.monotonic()

    def gone():
        proc = kube.kubectl("get", "daskcluster", "idle", "-n", ns, check=False)
        return proc.returncode != 0 and "NotFound" in proc.stderr

    wait_for("the idle cluster to be deleted", gone, timeout=120, every=1)
    assert time.monotonic() - idle_from >= 10, "deleted well before idleTimeout"
    wait_for("every child of idle to be garbage-collected", lambda: nothing_left_of(kube, ns, "idle"))
    assert "IdleTimeout" in reasons_about(kube, ns, "idle")


JOB_SCRIPT = """
from distributed import Client
client = Client()                      # DASK_SCHEDULER_ADDRESS, set by the operator
client.wait_for_workers(2, timeout=120)
names = sorted(w["name"] for w in client.scheduler_info()["workers"].values())
print("RESULT", client.submit(sum, range(101)).result(), ",".join(names))
"""


def example_job(name, script, workers=2, backoff_limit=None):
    doc = yaml.safe_load((REPO / "crates/muster-kube/tests/examples/daskjob.yaml").read_text())
    cluster = example_cluster(name)
    doc["metadata"]["name"] = name
    doc["spec"]["cluster"]["spec"] = cluster["spec"]
    doc["spec"]["cluster"]["spec"]["worker"]["replicas"] = workers
    runner = doc["spec"]["job"]["spec"]["containers"][0]
    runner["image"] = cluster["spec"]["worker"]["spec"]["containers"][0]["image"]
    runner["imagePullPolicy"] = "Never"
    runner["args"] = ["python", "-c", script]
    if backoff_limit is not None:
        doc["spec"]["backoffLimit"] = backoff_limit
    return doc


def job_status(kube, ns, name):
    return kube.json("get", "daskjob", name, "-n", ns).get("status", {})


def test_daskjob_runs_to_successful_and_removes_its_cluster(kube, operator):
    ns = operator
    kube.apply(example_job("sum", JOB_SCRIPT), namespace=ns)
    phases = []

    def finished():
        s = job_status(kube, ns, "sum").get("jobStatus")
        if s and (not phases or phases[-1] != s):
            phases.append(s)
        return s in ("Successful", "Failed")

    wait_for("the DaskJob to finish", finished, timeout=300, every=0.5)
    status = job_status(kube, ns, "sum")
    assert status["jobStatus"] == "Successful", (status, phases)
    assert "Running" in phases, phases
    assert status["clusterName"] == "sum" and status["failed"] == 0
    assert status["startTime"] and status["endTime"]
    runner = kube.json("get", "pod", status["jobRunnerPodName"], "-n", ns)
    assert runner["status"]["phase"] == "Succeeded"
    env = {e["name"]: e.get("value") for e in runner["spec"]["containers"][0]["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://sum-scheduler.{ns}.svc.cluster.local:8786"
    log = kube.kubectl("logs", status["jobRunnerPodName"], "-n", ns).stdout
    line = [x for x in log.splitlines() if x.startswith("RESULT ")]
    assert line, log
    _, total, names = line[0].split(" ")
    assert total == str(sum(range(101)))
    assert names.split(",") == ["sum-default-worker-0", "sum-default-worker-1"], names

    def cluster_gone():
        proc = kube.kubectl("get", "daskcluster", "sum", "-n", ns, check=False)
        return proc.returncode != 0 and nothing_left_of(kube, ns, "sum")

    wait_for("the job's cluster and its pods to be removed", cluster_gone, timeout=120)
    # The runner pod stays (owned by the job) for its log; deleting the job removes it.
    kube.kubectl("delete", "daskjob", "sum", "-n", ns, "--wait=true")
    wait_for("the runner pod to go with the job",
             lambda: not kube.pods(ns, "dask.org/component=job-runner,dask.org/cluster-name=sum"))


def test_daskjob_honours_its_backoff_limit(kube, operator):
    ns = operator
    script = "import sys; print('failing on purpose'); sys.exit(3)"
    kube.apply(example_job("fails", script, workers=1, backoff_limit=1), namespace=ns)
    wait_for("the DaskJob to fail",
             lambda: job_status(kube, ns, "fails").get("jobStatus") in ("Successful", "Failed"),
             timeout=300, every=0.5)
    status = job_status(kube, ns, "fails")
    assert status["jobStatus"] == "Failed" and status["failed"] == 2, status
    runners = kube.pods(ns, "dask.org/component=job-runner,dask.org/cluster-name=fails")
    assert sorted(p["metadata"]["name"] for p in runners) == ["fails-runner", "fails-runner-1"]
    assert all(p["status"]["phase"] == "Failed" for p in runners)
    assert "Failed" in reasons_about(kube, ns, "fails")
    wait_for("the failed job's cluster to be removed",
             lambda: kube.kubectl("get", "daskcluster", "fails", "-n", ns, check=False).returncode != 0
             and nothing_left_of(kube, ns, "fails"), timeout=120)
    op = operator_pod(kube, ns)
    assert op["status"]["containerStatuses"][0]["restartCount"] == 0
