"""dask-muster's MusterCluster with `backend: {kind: kubernetes}` against the
real test Kubernetes, with muster's operator installed from its chart (the
e2e suite's `operator` fixture, in a fresh namespace). What exists is read
from the API server (kubectl), never from muster or the package."""

import os
import sys

from distributed import Client

from conftest import REPO, sum_of_squares, unique
from dask_muster import MusterCluster

sys.path.insert(0, str(REPO / "tests" / "e2e"))
from kube import kube, kube_namespace  # noqa: E402,F401  (fixtures)
from operator_kit import live_pods, operator, wait_for  # noqa: E402,F401  (operator: a fixture)

N = 500
EXPECTED = sum(x * x for x in range(N))


def test_kubernetes_cluster_computes_scales_and_close_leaves_nothing(home, kube, operator):  # noqa: F811
    ns = operator
    name = unique("k")
    backend = {
        "kind": "kubernetes",
        "namespace": ns,
        "image": os.environ["MUSTER_K8S_DASK_IMAGE"],
        "image_pull_policy": "Never",
    }
    spec = dict(name=name, backend=backend, workers=1, worker={"cores": 1, "memory": "1GiB"})
    with MusterCluster(**spec, timeout="3m") as c, Client(c) as client:
        assert c._backend == "kubernetes"
        assert len(live_pods(kube, ns, name)) == 1
        assert sum_of_squares(client, N) == EXPECTED
        c.scale(2)
        client.wait_for_workers(2, timeout=120)
        wait_for("2 worker pods", lambda: len(live_pods(kube, ns, name)) == 2)
        assert kube.json("get", "daskcluster", name, "-n", ns)["spec"]["worker"]["replicas"] == 2
        assert sum_of_squares(client, N) == EXPECTED
        assert name in home.clusters()
    # close() ran muster's down, which waits until every pod is gone.
    assert kube.pods(ns, f"dask.org/cluster-name={name}") == []
    assert name not in [o["metadata"]["name"] for o in kube.json("get", "daskclusters", "-n", ns)["items"]]
    assert home.clusters() == []

