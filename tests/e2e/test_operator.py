"""End-to-end: muster's operator installed from its Helm chart on the real test
Kubernetes (tests/services/kubernetes), driven by manifests written the way
dask-kubernetes's documentation writes them. Every check reads the API server
(kubectl), never muster's own output.

The operator image is the muster binary on a minimal root, built and imported
by tests/services/kubernetes/mkimage.sh. The chart is installed with
rbac.cluster=false, so the operator watches only the test's namespace.

Not covered yet: the autoscaler burst, a second group with its own autoscaler,
DaskJob, Python KubeCluster, the operator killed mid-reconcile."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from kube import pod_ready

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "muster-operator"
EXAMPLE = REPO / "crates" / "muster-kube" / "tests" / "examples" / "daskcluster.yaml"
TAG = "e2e"


def helm():
    path = os.environ.get("MUSTER_K8S_HELM")
    if not path:
        pytest.fail("MUSTER_K8S_HELM unset (source /run/muster-k8s/env.sh)")
    return path


def muster_binary():
    """The newest of the release and debug builds."""
    built = [REPO / "target" / p / "muster" for p in ("release", "debug")]
    built = [b for b in built if b.exists()]
    if not built:
        pytest.fail("no muster binary: cargo build -p muster-cli")
    return max(built, key=lambda b: b.stat().st_mtime)


def wait_for(what, check, timeout=120, every=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


@pytest.fixture
def operator(kube, kube_namespace):
    """The chart installed in a fresh namespace; yields the namespace."""
    subprocess.run(
        [
            str(REPO / "tests/services/kubernetes/mkimage.sh"),
            "--binary", str(muster_binary()),
            "--tag", f"muster.test/muster-operator:{TAG}",
            "--cmd", '["operator"]',
            "--import",
        ],
        check=True, capture_output=True, text=True,
    )
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig}
    # Helm installs crds/ only when absent and never upgrades them: apply the
    # current ones, so the test never runs against an older schema.
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    install = subprocess.run(
        [
            helm(), "install", "muster-e2e", str(CHART), "-n", kube_namespace,
            "--set", f"image.tag={TAG}", "--set", "image.pullPolicy=Never",
            "--set", "rbac.cluster=false", "--wait", "--timeout", "120s",
        ],
        capture_output=True, text=True, env=env,
    )
    assert install.returncode == 0, (
        f"helm install exited {install.returncode}\n{install.stdout}{install.stderr}\n"
        + kube.diagnose(kube_namespace)
    )
    yield kube_namespace
    subprocess.run(
        [helm(), "uninstall", "muster-e2e", "-n", kube_namespace, "--wait"],
        capture_output=True, text=True, env=env,
    )


def example_cluster(name):
    """dask-kubernetes's documented DaskCluster, with the test image. The image's
    distributed no longer ships the `dask-scheduler`/`dask-worker` scripts, so
    the commands are `dask scheduler` / `dask worker` (same flags)."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    image = os.environ["MUSTER_K8S_DASK_IMAGE"]
    for role in ("scheduler", "worker"):
        c = doc["spec"][role]["spec"]["containers"][0]
        c["image"] = image
        c["imagePullPolicy"] = "Never"
        c["args"] = ["dask", role, *c["args"][1:]]
    doc["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] = name
    return doc


def assert_workers(kube, ns, cluster, n):
    """Exactly n Running worker pods of the default group, each named with its
    Dask worker name and owned by the group, and the scale subresource says n."""
    sel = f"dask.org/cluster-name={cluster},dask.org/component=worker"

    def settled():
        pods = [p for p in kube.pods(ns, sel) if not p["metadata"].get("deletionTimestamp")]
        return pods if len(pods) == n and all(pod_ready(p) for p in pods) else None

    pods = wait_for(f"{n} worker pods of {cluster}", settled, timeout=180)
    group = kube.json("get", "daskworkergroup", f"{cluster}-default", "-n", ns)
    for p in pods:
        name = p["metadata"]["name"]
        labels = p["metadata"]["labels"]
        assert labels["dask.org/workergroup-name"] == f"{cluster}-default"
        env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
        assert env["DASK_WORKER_NAME"] == name
        assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://{cluster}-scheduler.{ns}.svc.cluster.local:8786"
        assert [o["uid"] for o in p["metadata"]["ownerReferences"]] == [group["metadata"]["uid"]]
    wait_for(
        f"the scale subresource to report {n}",
        lambda: json.loads(
            kube.kubectl(
                "get", "--raw",
                f"/apis/kubernetes.dask.org/v1/namespaces/{ns}/daskclusters/{cluster}/scale",
            ).stdout
        )["status"].get("replicas") == n,
    )
    return pods


def operator_pod(kube, ns):
    pods = kube.pods(ns, "app.kubernetes.io/name=muster-operator")
    assert len(pods) == 1, pods
    return pods[0]


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
