"""End-to-end compatibility: dask-kubernetes's own Python client
(`dask_kubernetes.operator.KubeCluster`, from PyPI, pinned in
tests/requirements.txt) creates, scales, adapts and closes a cluster that
muster's operator serves (installed from its chart: operator_kit's fixture).
KubeCluster is used unchanged except for the spec's commands: the test image's
distributed has no `dask-scheduler`/`dask-worker` scripts, so the spec made by
dask-kubernetes's own `make_cluster_spec` gets `dask scheduler`/`dask worker`.
From this host KubeCluster reaches the scheduler through its own port-forward
(kr8s, through the API server and the kubelet). Checks read the API server."""

import os

from kube import pod_ready
from operator_kit import (  # noqa: F401  (operator is a fixture)
    assert_workers,
    live_pods,
    nothing_left_of,
    operator,
    operator_pod,
    wait_for,
)


def test_dask_kubernetes_kubecluster_on_musters_operator(kube, operator, monkeypatch):
    from dask_kubernetes.operator import KubeCluster, make_cluster_spec
    from distributed import Client

    ns = operator
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    image = os.environ["MUSTER_K8S_DASK_IMAGE"]
    spec = make_cluster_spec(name="kc", image=image, n_workers=1, worker_command="dask worker")
    sched = spec["spec"]["scheduler"]["spec"]["containers"][0]
    assert sched["args"][0] == "dask-scheduler", sched["args"]
    sched["args"] = ["dask", "scheduler", *sched["args"][1:]]
    for role in ("scheduler", "worker"):
        spec["spec"][role]["spec"]["containers"][0]["imagePullPolicy"] = "Never"
    cluster = KubeCluster(custom_cluster_spec=spec, namespace=ns, resource_timeout=120)
    try:
        dc = kube.json("get", "daskcluster", "kc", "-n", ns)
        assert dc["status"]["phase"] == "Running"
        assert_workers(kube, ns, "kc", 1)
        with Client(cluster) as client:
            assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
            cluster.scale(3)
            assert_workers(kube, ns, "kc", 3)
            client.wait_for_workers(3, timeout=120)
            # KubeCluster.scale writes the default group; the cluster's own field
            # stays, and muster's operator must not copy it back.
            assert kube.json("get", "daskworkergroup", "kc-default", "-n", ns)["spec"][
                "worker"]["replicas"] == 3
            cluster.scale(1)
            assert_workers(kube, ns, "kc", 1)
            assert client.submit(sum, [4, 5]).result(timeout=60) == 9
            # adapt() makes a DaskAutoscaler that muster's operator drives.
            cluster.adapt(minimum=2, maximum=3)
            a = wait_for("the autoscaler's decision",
                         lambda: kube.json("get", "daskautoscaler", "kc", "-n", ns)
                         .get("status", {}).get("lastDecision") and
                         kube.json("get", "daskautoscaler", "kc", "-n", ns))
            assert a["status"]["workerGroup"] == "kc-default"
            assert_workers(kube, ns, "kc", 2)
            logs = cluster.get_logs()
            assert any("kc-scheduler" in k for k in logs), list(logs)
    finally:
        cluster.close()
    wait_for("KubeCluster.close to remove everything", lambda: nothing_left_of(kube, ns, "kc")
             and kube.kubectl("get", "daskcluster", "kc", "-n", ns, check=False).returncode != 0)
    op = operator_pod(kube, ns)
    assert pod_ready(op) and op["status"]["containerStatuses"][0]["restartCount"] == 0
