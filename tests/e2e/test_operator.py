"""End-to-end: muster's operator installed from its Helm chart on the real test
Kubernetes (tests/services/kubernetes), driven by manifests written the way
dask-kubernetes's documentation writes them. Every check reads the API server
(kubectl), never muster's own output.

The operator image is the muster binary on a minimal root, built and imported
by tests/services/kubernetes/mkimage.sh. The chart is installed with
rbac.cluster=false, so the operator watches only the test's namespace.

The autoscaler, idleTimeout and DaskJob are in test_operator_scaling.py;
killing the operator and restarting the API server in test_operator_resilience.py."""

import json

from kube import pod_ready
from operator_kit import (  # noqa: F401  (operator is a fixture)
    assert_workers,
    example_cluster,
    operator,
    operator_pod,
    wait_for,
)


def test_daskcluster_lifecycle_through_the_chart(kube, operator):
    ns = operator
    op = operator_pod(kube, ns)
    assert pod_ready(op), op["status"]
    # least privilege: a Role in the namespace, nothing cluster-wide
    roles = kube.json("get", "roles", "-n", ns)["items"]
    assert any(r["metadata"]["name"] == "muster-e2e-muster-operator" for r in roles)
    assert not any(
        c["metadata"]["name"].startswith("muster-e2e")
        for c in kube.json("get", "clusterroles")["items"]
    )

    kube.apply(example_cluster("demo"), namespace=ns)

    def running():
        dc = kube.json("get", "daskcluster", "demo", "-n", ns)
        return dc if dc.get("status", {}).get("phase") == "Running" else None

    dc = wait_for("DaskCluster demo Running", running)
    sched = kube.json("get", "pod", "demo-scheduler", "-n", ns)
    assert pod_ready(sched)
    assert sched["metadata"]["labels"]["dask.org/component"] == "scheduler"
    env = {e["name"]: e.get("value") for e in sched["spec"]["containers"][0]["env"]}
    assert "distributed.http.scheduler.api" in env["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"]
    svc = kube.json("get", "service", "demo-scheduler", "-n", ns)
    group = kube.json("get", "daskworkergroup", "demo-default", "-n", ns)
    uid = dc["metadata"]["uid"]
    for child in (sched, svc, group):
        owners = child["metadata"]["ownerReferences"]
        assert [(o["kind"], o["uid"], o.get("controller")) for o in owners] == [
            ("DaskCluster", uid, True)
        ]
    assert group["spec"]["worker"]["replicas"] == 2
    assert_workers(kube, ns, "demo", 2)

    # the scale subresource reports a status and a selector (dask-kubernetes's reads 0)
    scale = json.loads(
        kube.kubectl(
            "get", "--raw", f"/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters/demo/scale"
        ).stdout
    )
    assert scale["spec"]["replicas"] == 2
    assert "dask.org/workergroup-name=demo-default" in scale["status"]["selector"]

    # a client computes, and holds data on the workers across the scaling
    from distributed import Client

    address = f"tcp://{svc['spec']['clusterIP']}:8786"
    client = Client(address, timeout=30)
    try:
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        held = client.submit(lambda n: list(range(n)), 10_000, pure=False)
        held.result(timeout=60)


        kube.kubectl("scale", "daskcluster/demo", "--replicas", "4", "-n", ns)
        assert_workers(kube, ns, "demo", 4)
        client.wait_for_workers(4, timeout=60)
        kube.kubectl("scale", "daskcluster/demo", "--replicas", "1", "-n", ns)
        assert_workers(kube, ns, "demo", 1)
        assert client.submit(sum, held).result(timeout=60) == sum(range(10_000))
        assert len(client.scheduler_info()["workers"]) == 1
    finally:
        client.close()
    events = kube.json("get", "events.events.k8s.io", "-n", ns)["items"]
    reasons = {e.get("reason") for e in events if e["regarding"]["name"] == "demo"}
    assert {"Running", "Scaling"} <= reasons, reasons
    group_reasons = {e.get("reason") for e in events if e["regarding"]["name"] == "demo-default"}
    assert {"Launched", "ScaleUp", "ScaleDown"} <= group_reasons, group_reasons

    kube.kubectl("delete", "daskcluster", "demo", "-n", ns, "--wait=true")

    def gone():
        left = []
        for kind in ("pods", "services", "daskworkergroups"):
            items = kube.json("get", kind, "-n", ns, "-l", "dask.org/cluster-name=demo")["items"]
            left += [f"{kind}/{i['metadata']['name']}" for i in items]
        return not left

    wait_for("every child of demo to be garbage-collected", gone)
    assert operator_pod(kube, ns)["status"]["containerStatuses"][0]["restartCount"] == 0


def test_invalid_resources_are_rejected_or_reported(kube, operator):
    ns = operator
    # the schema rejects a negative bound before the operator sees it
    bad = {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskAutoscaler",
        "metadata": {"name": "bad"},
        "spec": {"cluster": "x", "minimum": -1, "maximum": 2},
    }
    proc = kube.kubectl(
        "apply", "-n", ns, "-f", "-", input=json.dumps(bad), check=False
    )
    assert proc.returncode != 0 and "spec.minimum" in proc.stderr, proc.stderr
    # a name the Service cannot carry is reported in status, naming the field
    doc = example_cluster("9" + "a" * 20)
    kube.apply(doc, namespace=ns)

    def errored():
        dc = kube.json("get", "daskcluster", doc["metadata"]["name"], "-n", ns)
        return dc if dc.get("status", {}).get("phase") == "Error" else None

    dc = wait_for("the invalid DaskCluster to be in Error", errored)
    assert "metadata.name" in dc["status"]["conditions"][0]["message"]
    assert not kube.pods(ns, f"dask.org/cluster-name={doc['metadata']['name']}")
    op = operator_pod(kube, ns)
    assert pod_ready(op) and op["status"]["containerStatuses"][0]["restartCount"] == 0
