"""End-to-end: `backend: {kind: kubernetes}` from the muster CLI against the real
test Kubernetes, with muster's operator installed from its chart into a fresh
namespace (test_operator.py's `operator` fixture). Every check of what exists
reads the API server (kubectl), never muster's own output.

On this machine Service and pod IPs are routable from the host, so the direct
path is the default; the port-forward path is forced with
MUSTER_KUBE_PORT_FORWARD=1 / `port_forward: true` and checked by computing
through `muster port-forward`'s loopback address."""

import json
import os
import shutil
import time

import pytest
import yaml

from conftest import compute, connect, remember_credentials, wait_until
from kube import pod_ready
from operator_kit import operator  # noqa: F401  (the fixture)


def spec_file(tmp_path, ns, name, workers=2, **backend):
    spec = {
        "name": name,
        "workers": workers,
        "worker": {"cores": 1, "memory": "1GiB"},
        "backend": {
            "kind": "kubernetes",
            "namespace": ns,
            "image": os.environ["MUSTER_K8S_DASK_IMAGE"],
            "image_pull_policy": "Never",
            **backend,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def live_workers(kube, ns, cluster):
    """Worker pods of the cluster that exist and are not terminating."""
    pods = kube.pods(ns, f"dask.org/cluster-name={cluster},dask.org/component=worker")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def assert_workers(kube, ns, cluster, n, timeout=120):
    def settled():
        pods = live_workers(kube, ns, cluster)
        return pods if len(pods) == n and all(pod_ready(p) for p in pods) else None

    return wait_until(settled, timeout=timeout, interval=0.5, message=f"{n} worker pods of {cluster}")


def assert_nothing_left(kube, ns, cluster):
    """No pod of the cluster (terminating ones included) and none of its resources
    (its credentials Secret included)."""
    assert kube.pods(ns, f"dask.org/cluster-name={cluster}") == []
    for kind in ("daskclusters", "daskworkergroups", "daskautoscalers", "services", "secrets"):
        names = [o["metadata"]["name"] for o in kube.json("get", kind, "-n", ns)["items"]]
        assert not [n for n in names if n == cluster or n.startswith(f"{cluster}-")], (kind, names)


def test_up_compute_scale_adapt_down(kube, operator, muster, tmp_path):  # noqa: F811
    ns = operator
    f = spec_file(tmp_path, ns, "kflow", workers=2)
    up = muster.json("up", "-f", f, "--timeout", "3m")
    assert up["backend"] == "kubernetes" and up["connected_workers"] == 2, up
    pods = assert_workers(kube, ns, "kflow", 2)
    assert all(p["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "muster-operator" for p in pods)
    dc = kube.json("get", "daskcluster", "kflow", "-n", ns)
    assert dc["metadata"]["labels"]["app.kubernetes.io/created-by"] == "muster"
    # The address printed is one a client on this machine can use.
    compute(up["scheduler_address"], 200)

    muster.run("scale", "kflow", "4")
    assert_workers(kube, ns, "kflow", 4)
    assert kube.json("get", "daskcluster", "kflow", "-n", ns)["spec"]["worker"]["replicas"] == 4
    muster.run("scale", "kflow", "1")
    assert_workers(kube, ns, "kflow", 1)
    rows = muster.json("get", "workers", "kflow")
    assert [r["connected"] for r in rows] == [True], rows

    # Adaptive: a burst of slow tasks makes the operator grow the group to its maximum.
    muster.run("adapt", "kflow", "--min", "1", "--max", "3")
    auto = kube.json("get", "daskautoscaler", "kflow", "-n", ns)
    assert (auto["spec"]["minimum"], auto["spec"]["maximum"]) == (1, 3)
    seen = 0
    with connect(up["scheduler_address"]) as c:
        futures = c.map(lambda i: __import__("time").sleep(0.5) or i, range(400))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and seen < 3:
            seen = max(seen, len([p for p in live_workers(kube, ns, "kflow") if pod_ready(p)]))
            time.sleep(0.5)
        c.cancel(futures)
    assert seen == 3, f"the burst reached {seen} worker pods, wanted 3"
    assert len(live_workers(kube, ns, "kflow")) <= 3
    # Scale is refused while adaptive, naming the way out.
    refused = muster.run("scale", "kflow", "2", check=False)
    assert refused.returncode == 2 and "adapt kflow --off" in refused.stderr

    events = muster.json("events", "kflow")
    assert any("DaskWorkerGroup kflow-default" in e["message"] for e in events), events

    down = muster.json("down", "kflow")
    assert down[0]["existed"] and down[0]["stopped"], down
    assert_nothing_left(kube, ns, "kflow")


def test_get_clusters_all_namespaces_and_logs_follow(kube, operator, muster, tmp_path):  # noqa: F811
    ns = operator
    muster.run("up", "-f", spec_file(tmp_path, ns, "klogs", workers=1), "--timeout", "3m")
    listed = muster.json("get", "clusters", "-A")
    mine = [c for c in listed if c["name"] == f"{ns}/klogs"]
    assert mine and mine[0]["backend"] == "kubernetes" and mine[0]["phase"] == "Running", listed
    here = [c["name"] for c in muster.json("get", "clusters")]
    assert here.count("klogs") == 1, here

    follower = muster.popen("logs", "klogs", "-f")
    try:
        first = follower.stdout.readline()
        assert first, follower.stderr.read()
        time.sleep(1)
        assert follower.poll() is None, "logs -f returned while the pod runs"
        muster.run("down", "klogs")
        # The scheduler pod is gone, so the followed log ends.
        follower.wait(timeout=60)
    finally:
        follower.kill()
    rest = follower.stdout.read()
    assert "distributed.scheduler" in first + rest
    assert_nothing_left(kube, ns, "klogs")


@pytest.mark.parametrize(
    "backend, fields",
    [
        ({"namespace": "Bad_NS"}, ["backend.namespace"]),
        ({"image_pull_policy": "Sometimes", "service_type": "Internal"},
         ["backend.image_pull_policy", "backend.service_type"]),
        ({"worker": {"env": {"1X": "y"}, "resources": {"limits": {"memory": "lots"}},
                     "tolerations": [{"operator": "Exists", "value": "v"}]}},
         ["backend.worker.env.1X", "backend.worker.resources.limits.memory",
          "backend.worker.tolerations[0].value"]),
        ({"scheduler": {"labels": {"bad key": "x"}, "node_selector": {"k": "bad value"}}},
         ["backend.scheduler.labels.bad key", "backend.scheduler.node_selector.k"]),
        ({"worker_groups": [{"name": "GPU"}, {"name": "default"}]},
         ["backend.worker_groups[0].name", "backend.worker_groups[1].name"]),
        ({"bogus": 1}, ["backend.bogus"]),
        ({"context": "no-such-context"}, ["backend.context"]),
    ],
)
def test_bad_specs_exit_2_naming_every_field(kube, kube_namespace, muster, tmp_path, backend, fields):
    ns = backend.pop("namespace", kube_namespace)
    f = spec_file(tmp_path, ns, "kbad", **backend)
    r = muster.run("up", "-f", f, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    for field in fields:
        assert field in r.stderr, (field, r.stderr)
    assert kube.json("get", "daskclusters", "-n", kube_namespace)["items"] == []
    assert not (muster.home / "clusters" / "kbad").exists()


def test_down_without_the_registry(kube, operator, muster, tmp_path):  # noqa: F811
    ns = operator
    muster.run("up", "-f", spec_file(tmp_path, ns, "korphan", workers=2), "--timeout", "3m")
    assert_workers(kube, ns, "korphan", 2)
    shutil.rmtree(muster.home)
    assert muster.json("get", "clusters") == [] or all(
        c["name"] != "korphan" for c in muster.json("get", "clusters")
    )
    down = muster.json("down", "korphan", "--backend", "kubernetes", "-n", ns)
    assert down[0]["existed"] and len(down[0]["stopped"]) == 3, down
    assert_nothing_left(kube, ns, "korphan")


def test_port_forward_path(kube, operator, muster, tmp_path):  # noqa: F811
    ns = operator
    f = spec_file(tmp_path, ns, "kpf", workers=1, port_forward=True)
    up = muster.json("up", "-f", f, "--timeout", "3m")
    # The wait went through the forward; the address printed is loopback,
    # and TLS works through it (Dask checks the scheduler's certificate
    # against the cluster's CA, not the host name 127.0.0.1).
    assert up["scheduler_address"].startswith("tls://127.0.0.1:"), up
    fwd = muster.popen("port-forward", "kpf")
    try:
        line = fwd.stdout.readline()
        assert line.startswith("scheduler: tls://127.0.0.1:"), line + fwd.stderr.read()
        address = line.split()[1]
        remember_credentials({"scheduler_address": address, "tls": up["tls"]})
        compute(address, 100)
    finally:
        fwd.terminate()
        fwd.wait(timeout=10)
    muster.run("down", "kpf")
    assert_nothing_left(kube, ns, "kpf")


def test_up_refuses_a_taken_name_and_creates_nothing(kube, operator, muster, tmp_path):  # noqa: F811
    ns = operator
    kube.apply(json.loads(json.dumps({
        "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
        "metadata": {"name": "ktaken"},
        "spec": {"scheduler": {"spec": {"containers": [{"name": "s", "image": "x"}]},
                               "service": {}},
                 "worker": {"replicas": 0, "spec": {"containers": [{"name": "w", "image": "x"}]}}},
    })), namespace=ns)
    r = muster.run("up", "-f", spec_file(tmp_path, ns, "ktaken", workers=1), check=False)
    assert r.returncode == 2 and "already exists" in r.stderr, r.stderr
    dc = kube.json("get", "daskcluster", "ktaken", "-n", ns)
    assert "app.kubernetes.io/created-by" not in dc["metadata"].get("labels", {})
    kube.kubectl("delete", "daskcluster", "ktaken", "-n", ns, "--wait=true")


def test_the_rust_library(kube, operator, muster):  # noqa: F811
    """examples/kubernetes.rs: `muster::cluster(spec)` with a kubernetes spec."""
    from conftest import built
    import subprocess

    example = built("kubernetes", "MUSTER_KUBERNETES_EXAMPLE")
    proc = subprocess.run(
        [example, operator, os.environ["MUSTER_K8S_DASK_IMAGE"]],
        env=muster.env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "workers connected after scale(3): 3" in proc.stdout, proc.stdout
    assert_nothing_left(kube, operator, "library-kube")
