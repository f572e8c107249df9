"""End-to-end: muster's operator survives losing itself and its API server.
The operator pod is killed in the middle of a scale-up: the Deployment's new
pod waits for the Lease, takes over and finishes the scale without a
duplicated or orphaned worker pod. The API server is restarted
(tests/services/kubernetes/restart.sh) during a reconcile: the operator
converges (exiting on a Lease it cannot renew is allowed: the kubelet restarts
it), and a later `kubectl scale` is honoured. Checks read the API server."""

import subprocess
import time

from kube import pod_ready
from operator_kit import (  # noqa: F401  (operator is a fixture)
    REPO,
    assert_workers,
    example_cluster,
    live_pods,
    operator,
    operator_pod,
    scheduler_address,
    wait_for,
    wait_running,
)


def group_record(kube, ns, group):
    status = kube.json("get", "daskworkergroup", group, "-n", ns).get("status", {})
    return status.get("record") or {}


def all_worker_pods(kube, ns, cluster):
    """Every worker pod of the cluster, terminating ones included."""
    return kube.pods(ns, f"dask.org/cluster-name={cluster},dask.org/component=worker")


def test_operator_killed_mid_scale_the_next_leader_finishes_without_duplicates(kube, operator):
    ns = operator
    doc = example_cluster("kill")
    doc["spec"]["worker"]["replicas"] = 1
    kube.apply(doc, namespace=ns)
    wait_running(kube, ns, "kill")
    assert_workers(kube, ns, "kill", 1)
    old = operator_pod(kube, ns)
    kube.kubectl("scale", "daskcluster/kill", "--replicas", "6", "-n", ns)
    # Mid-scale: the first new worker pod exists, the rest not all yet.
    wait_for("the scale-up to start", lambda: len(all_worker_pods(kube, ns, "kill")) > 1,
             timeout=60, every=0.1)
    kube.kubectl("delete", "pod", old["metadata"]["name"], "-n", ns,
                 "--grace-period=0", "--force", check=False)
    names_seen = set()

    def new_leader_ready():
        for p in all_worker_pods(kube, ns, "kill"):
            names_seen.add((p["metadata"]["name"], p["metadata"]["uid"]))
        pods = kube.pods(ns, "app.kubernetes.io/name=muster-operator")
        return [p for p in pods if p["metadata"]["name"] != old["metadata"]["name"] and pod_ready(p)]

    wait_for("a new operator pod to be ready (it waits for the Lease)", new_leader_ready,
             timeout=120, every=0.5)
    pods = assert_workers(kube, ns, "kill", 6, timeout=240)
    for p in all_worker_pods(kube, ns, "kill"):
        names_seen.add((p["metadata"]["name"], p["metadata"]["uid"]))
    names = sorted(p["metadata"]["name"] for p in pods)
    # No duplicate: one pod per Dask name, ever; none made beyond the six.
    assert len({n for n, _ in names_seen}) == len(names_seen), names_seen
    assert {n for n, _ in names_seen} == set(names), (names_seen, names)
    rec = group_record(kube, ns, "kill-default")
    assert sorted(rec.get("workers", [])) == names, rec
    assert not rec.get("launching"), rec
    from distributed import Client

    client = Client(scheduler_address(kube, ns, "kill"), timeout=30)
    try:
        client.wait_for_workers(6, timeout=120)
        assert sorted(w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()) == names
    finally:
        client.close()
    lease = kube.json("get", "lease", "muster-operator", "-n", ns)
    assert lease["spec"]["holderIdentity"] != old["metadata"]["name"], lease["spec"]


def test_api_server_restart_mid_reconcile_then_scale_is_honoured(kube, operator):
    ns = operator
    doc = example_cluster("apirs")
    doc["spec"]["worker"]["replicas"] = 1
    kube.apply(doc, namespace=ns)
    wait_running(kube, ns, "apirs")
    assert_workers(kube, ns, "apirs", 1)
    kube.kubectl("scale", "daskcluster/apirs", "--replicas", "3", "-n", ns)
    started = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "tests/services/kubernetes/restart.sh"), "kube-apiserver"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"API server restarted in {time.monotonic() - started:.1f}s")
    wait_for("the API server to answer", lambda: kube.kubectl("get", "--raw", "/readyz",
                                                               check=False).returncode == 0,
             timeout=120)
    wait_for("an operator pod ready again",
             lambda: [p for p in kube.pods(ns, "app.kubernetes.io/name=muster-operator")
                      if pod_ready(p)], timeout=180, every=1)
    assert_workers(kube, ns, "apirs", 3, timeout=240)
    # Watches re-established: a later scale is honoured, without duplicates.
    kube.kubectl("scale", "daskcluster/apirs", "--replicas", "5", "-n", ns)
    pods = assert_workers(kube, ns, "apirs", 5, timeout=240)
    names = sorted(p["metadata"]["name"] for p in pods)
    assert len(set(names)) == 5
    assert sorted(group_record(kube, ns, "apirs-default").get("workers", [])) == names
    kube.kubectl("scale", "daskcluster/apirs", "--replicas", "2", "-n", ns)
    assert_workers(kube, ns, "apirs", 2, timeout=240)
    op = operator_pod(kube, ns)
    print("operator restarts across the API server restart:",
          op["status"]["containerStatuses"][0]["restartCount"])
