"""The test Kubernetes itself, end to end (tests/services/kubernetes): a Dask
scheduler pod behind a Service and two worker pods from the Dask image run on
the real node (containerd + runc on the bridge kd0); a host-side
distributed.Client computes a known result through the Service's ClusterIP
(kube-proxy); the workers were given only the Service's DNS name (CoreDNS);
deleting the pods and the Service leaves nothing, as the API server reports.

This checks the cluster the Kubernetes backend's tests run on, not muster."""

import time

from conftest import compute, scheduler_workers, wait_until
from kube import dask_image, pod_ready

COMM, DASHBOARD = 8786, 8787


def scheduler_objects(image, label):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "scheduler", "labels": {"smoke": label, "role": "scheduler"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "scheduler",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["dask", "scheduler", "--port", str(COMM),
                                "--dashboard-address", f":{DASHBOARD}"],
                    "ports": [{"containerPort": COMM, "name": "comm"},
                              {"containerPort": DASHBOARD, "name": "dashboard"}],
                    "readinessProbe": {"tcpSocket": {"port": COMM}, "periodSeconds": 1},
                }
            ],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "dask-scheduler", "labels": {"smoke": label}},
        "spec": {
            "selector": {"smoke": label, "role": "scheduler"},
            "ports": [{"name": "comm", "port": COMM, "targetPort": COMM},
                      {"name": "dashboard", "port": DASHBOARD, "targetPort": DASHBOARD}],
        },
    }
    return pod, service


def worker_pod(image, label, name, scheduler_dns):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"smoke": label, "role": "worker"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "worker",
                    "image": image,
                    "imagePullPolicy": "Never",
                    # only the Service's DNS name: no IP is handed to the worker
                    "command": ["dask", "worker", f"tcp://{scheduler_dns}:{COMM}",
                                "--name", name, "--nthreads", "2",
                                "--memory-limit", "1GiB", "--death-timeout", "180"],
                }
            ],
        },
    }


def test_dask_on_real_pods_through_service_dns(kube, kube_namespace):
    image = dask_image()
    assert image, "no Dask image: run tests/services/kubernetes/images.sh"
    ns = kube_namespace
    label = ns
    scheduler_dns = f"dask-scheduler.{ns}.svc.cluster.local"

    t0 = time.monotonic()
    kube.apply(*scheduler_objects(image, label), namespace=ns)
    kube.apply(*(worker_pod(image, label, f"smoke-w{i}", scheduler_dns) for i in (0, 1)),
               namespace=ns)

    def ready_pods():
        pods = kube.pods(ns, f"smoke={label}")
        return pods if len(pods) == 3 and all(map(pod_ready, pods)) else None

    with kube.explained(ns):
        pods = wait_until(ready_pods, timeout=120, interval=0.2, message="3 pods Running and Ready")
    t_ready = time.monotonic() - t0
    assert {p["spec"]["nodeName"] for p in pods} == {kube.json("get", "nodes")["items"][0]["metadata"]["name"]}
    pod_ip = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    assert all(ip.startswith("10.244.0.") for ip in pod_ip.values()), pod_ip

    svc = kube.json("get", "service", "dask-scheduler", "-n", ns)
    cluster_ip = svc["spec"]["clusterIP"]
    assert cluster_ip.startswith("10.96."), cluster_ip
    # the Service's endpoints, as the API server has them: the scheduler pod
    slices = kube.json("get", "endpointslices", "-n", ns,
                       "-l", "kubernetes.io/service-name=dask-scheduler")["items"]
    endpoint_ips = {a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]}
    assert endpoint_ips == {pod_ip["scheduler"]}

    address = f"tcp://{cluster_ip}:{COMM}"
    with kube.explained(ns, logs_of=f"smoke={label}"):
        wait_until(lambda: scheduler_workers(address) == ["smoke-w0", "smoke-w1"], timeout=180,
                   interval=0.5, message="both workers registered with the scheduler")
    t_workers = time.monotonic() - t0
    out = compute(address, 2000)
    assert "smoke-w0" in out and "smoke-w1" in out, out

    from distributed import Client

    with Client(address, timeout=30) as client:
        seen = client.run(lambda dask_worker: dask_worker.scheduler.address)
        workers = client.scheduler_info(n_workers=-1)["workers"]
    # each worker reached the scheduler through the name it was given
    assert set(seen.values()) == {f"tcp://{scheduler_dns}:{COMM}"}, seen
    # and the scheduler knows them at their pod IPs
    assert {w["name"]: w["host"] for w in workers.values()} == {
        "smoke-w0": pod_ip["smoke-w0"], "smoke-w1": pod_ip["smoke-w1"]}

    t1 = time.monotonic()
    kube.kubectl("delete", "-n", ns, "pods,services", "-l", f"smoke={label}", "--wait=true",
                 timeout=120)
    wait_until(lambda: not kube.json("get", "pods,services,endpointslices", "-n", ns)["items"],
               timeout=60, message="no pod, service or endpointslice left in the namespace")
    t_gone = time.monotonic() - t1
    assert not kube.json("get", "pods", "-A", "-l", f"smoke={label}")["items"]
    print(f"pods Ready {t_ready:.1f}s after apply, 2 workers registered {t_workers:.1f}s, "
          f"deleted in {t_gone:.1f}s")


def test_service_account_token_reaches_api_server_from_a_pod(kube, kube_namespace):
    """An in-cluster client (as the operator will be) reaches kubernetes.default.svc
    with its service-account token and the cluster CA."""
    image = dask_image()
    assert image
    ns = kube_namespace
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "in-cluster"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", IN_CLUSTER_PROBE],
                }],
            },
        },
        namespace=ns,
    )

    def finished():
        pods = kube.pods(ns)
        phase = pods[0]["status"].get("phase") if pods else None
        return phase if phase in ("Succeeded", "Failed") else None

    with kube.explained(ns):
        phase = wait_until(finished, timeout=120, interval=0.3, message="in-cluster probe finished")
    log = kube.kubectl("logs", "-n", ns, "in-cluster").stdout
    assert phase == "Succeeded", log
    # the namespace's default service account may read nothing: 403 proves the
    # request reached the API server over TLS and was authenticated as it
    assert f"status 403 user system:serviceaccount:{ns}:default" in log, log


IN_CLUSTER_PROBE = r"""
import json, ssl, urllib.request, urllib.error
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
token = open(sa + "token").read()
ctx = ssl.create_default_context(cafile=sa + "ca.crt")
req = urllib.request.Request("https://kubernetes.default.svc/api/v1/namespaces/default/pods",
                             headers={"Authorization": "Bearer " + token})
try:
    urllib.request.urlopen(req, context=ctx, timeout=10)
    print("status 200")
except urllib.error.HTTPError as e:
    body = json.loads(e.read())
    user = body.get("message", "").split('"')[1]
    print("status", e.code, "user", user)
"""

