"""Shared pieces of the operator's end-to-end tests: the chart installed from
its Helm chart into a fresh namespace (the `operator` fixture), dask-kubernetes's
documented DaskCluster with the test image, and waits that read the API server."""

import hashlib
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


def helm():
    path = os.environ.get("MUSTER_K8S_HELM")
    if not path:
        pytest.fail("MUSTER_K8S_HELM unset (source /run/muster-k8s/env.sh)")
    return path


def image_tag(binary):
    """The operator image's tag: a digest of the binary it packs, so that two
    test runs with different builds never overwrite each other's image (a
    fixed tag did), and the same build always gets the same one."""
    h = hashlib.sha256()
    with open(binary, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "e2e-" + h.hexdigest()[:12]


def wait_for(what, check, timeout=120, every=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


@pytest.fixture
def operator(kube, kube_namespace, muster_bin):
    """The chart installed in a fresh namespace, its image packing the muster
    build the tests run (`muster_bin`: MUSTER_BIN in the e2e suite, the
    wheel's own binary in tests/python); yields the namespace."""
    tag = image_tag(muster_bin)
    subprocess.run(
        [
            str(REPO / "tests/services/kubernetes/mkimage.sh"),
            "--binary", str(muster_bin),
            "--tag", f"muster.test/muster-operator:{tag}",
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
            "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
            "--set", "rbac.cluster=false", "--wait", "--timeout", "120s",
            # Each reconcile's errors are at debug: operator_report shows them.
            "--set-string", "operator.logLevel=info\\,muster_kube=debug",
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


OPERATOR_PODS = "app.kubernetes.io/name=muster-operator"


def operator_report(kube, ns):
    """The operator's side of a failed test (conftest appends it to the
    failure): the namespace's pods and events, and each operator pod's log,
    with its previous container's when it restarted; the Dask pods' log
    tails and each failed Dask container's first lines."""
    parts = [kube.diagnose(ns, logs_of="dask.org/component")]
    for pod in kube.pods(ns, OPERATOR_PODS):
        name = pod["metadata"]["name"]
        for previous in (True, False):
            args = ["logs", "-n", ns, name, "--tail", "400", *(["--previous"] if previous else [])]
            out = kube.kubectl(*args, check=False, timeout=30)
            if previous and out.returncode != 0:
                continue  # it did not restart
            parts.append(f"$ kubectl {' '.join(args)}\n{out.stdout}{out.stderr}")
    return "\n".join(parts)


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


def live_pods(kube, ns, cluster, group=None):
    """The worker pods of `cluster` (of one group if given) not being deleted."""
    sel = f"dask.org/cluster-name={cluster},dask.org/component=worker"
    if group:
        sel += f",dask.org/workergroup-name={group}"
    return [p for p in kube.pods(ns, sel) if not p["metadata"].get("deletionTimestamp")]


def assert_workers(kube, ns, cluster, n, group=None, timeout=180):
    """Exactly n Running worker pods of the group (default: the cluster's default
    group), each named with its Dask worker name and owned by the group, and the
    scale subresource says n."""
    group = group or f"{cluster}-default"

    def settled():
        pods = live_pods(kube, ns, cluster, group)
        return pods if len(pods) == n and all(pod_ready(p) for p in pods) else None

    pods = wait_for(f"{n} worker pods of {group}", settled, timeout=timeout)
    obj = kube.json("get", "daskworkergroup", group, "-n", ns)
    for p in pods:
        name = p["metadata"]["name"]
        labels = p["metadata"]["labels"]
        assert labels["dask.org/workergroup-name"] == group
        env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
        assert env["DASK_WORKER_NAME"] == name
        assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://{cluster}-scheduler.{ns}.svc.cluster.local:8786"
        assert [o["uid"] for o in p["metadata"]["ownerReferences"]] == [obj["metadata"]["uid"]]
    path = (
        f"daskclusters/{cluster}" if group == f"{cluster}-default" else f"daskworkergroups/{group}"
    )
    wait_for(
        f"the scale subresource of {path} to report {n}",
        lambda: json.loads(
            kube.kubectl(
                "get", "--raw",
                f"/apis/kubernetes.dask.org/v1/namespaces/{ns}/{path}/scale",
            ).stdout
        )["status"].get("replicas") == n,
    )
    return pods


def wait_running(kube, ns, cluster, timeout=120):
    """The DaskCluster once its status says Running."""

    def running():
        dc = kube.json("get", "daskcluster", cluster, "-n", ns)
        return dc if dc.get("status", {}).get("phase") == "Running" else None

    return wait_for(f"DaskCluster {cluster} Running", running, timeout=timeout)


def scheduler_address(kube, ns, cluster):
    """tcp://<Service cluster IP>:8786 (the host reaches Service IPs directly)."""
    svc = kube.json("get", "service", f"{cluster}-scheduler", "-n", ns)
    return f"tcp://{svc['spec']['clusterIP']}:8786"


def reasons_about(kube, ns, name):
    """The reasons of the Events about the object `name`."""
    events = kube.json("get", "events.events.k8s.io", "-n", ns)["items"]
    return [e.get("reason") for e in events if e["regarding"]["name"] == name]


def nothing_left_of(kube, ns, cluster):
    """True when no pod, Service or worker group of `cluster` is left."""
    left = []
    for kind in ("pods", "services", "daskworkergroups"):
        items = kube.json("get", kind, "-n", ns, "-l", f"dask.org/cluster-name={cluster}")["items"]
        left += [
            f"{kind}/{i['metadata']['name']}"
            for i in items
            if i["metadata"].get("labels", {}).get("dask.org/component") != "job-runner"
        ]
    return not left


def operator_pod(kube, ns):
    pods = kube.pods(ns, "app.kubernetes.io/name=muster-operator")
    assert len(pods) == 1, pods
    return pods[0]
