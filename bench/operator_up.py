"""Benchmark: muster's operator against dask-kubernetes's (kopf, from PyPI), on
the same test Kubernetes (tests/services/kubernetes), in one run, one operator
at a time, each in its own fresh namespace and run OUTSIDE the cluster from
this host with the admin kubeconfig (so both are measured the same way).

Rows, per operator:
  idle RSS          the operator process's VmRSS 10 s after it started, no cluster;
  apply → 2         `kubectl apply` of a DaskCluster (2 workers, the test image)
                    until 2 workers are connected to its scheduler;
  scale 2 → N       `kubectl scale daskcluster --replicas N` until N connected
                    (N = --workers, default 100; workers run `dask worker
                    --nthreads 1 --no-nanny --no-dashboard`, ~80 MB each);
  RSS at N          VmRSS with N workers connected (and VmHWM, its peak);
  CPU 2 → N         the operator's user+system CPU seconds during that scale;
  CPU steady/min    its CPU seconds per minute with N workers and nothing to do
                    (30 s sampled);
  CPU per reconcile (muster only) that steady CPU divided by the reconciles its
                    /metrics counted in the same 30 s: an upper bound on one
                    reconcile of the N-worker cluster (all of the process's CPU,
                    watches and Lease renewals too, is charged to them);
  delete → 0 pods   `kubectl delete daskcluster` until no pod of it is left;
  apply → N         then a fresh DaskCluster of N: `kubectl apply` until N
                    connected, and its delete until no pod is left.
Workers are counted through the scheduler (distributed's Client on the
Service's cluster IP, which this host reaches); pods through the API server.
Asserts nothing about time. Needs: `. /run/muster-k8s/env.sh`, the CRDs applied
(the chart's crds/), a muster binary (--muster, default target/release/muster),
and for the peer `pip install dask-kubernetes` in the Python given by --kopf-python.

Usage: python bench/operator_up.py [--workers 100] [--muster BIN] [--kopf-python PY | --no-kopf]
"""

import argparse
import json
import os
import re
import socket
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
KUBECTL = os.environ.get("MUSTER_K8S_KUBECTL", "kubectl")
IMAGE = os.environ.get("MUSTER_K8S_DASK_IMAGE", "muster.test/dask:2026.8.0")


def kubectl(*args, input=None, check=True):
    return subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True,
                          check=check)


def proc_status(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024  # MiB
    return out


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reconciles(metrics_url):
    """muster's reconcile counter summed over kinds (None without /metrics)."""
    import urllib.request

    if not metrics_url:
        return None
    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        text = r.read().decode()
    return sum(float(m) for m in re.findall(
        r"^muster_operator_reconciles_total\{[^}]*\} (\S+)$", text, re.M))


def cluster_doc(name, replicas):
    doc = yaml.safe_load((REPO / "crates/muster-kube/tests/examples/daskcluster.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["worker"]["replicas"] = replicas
    w = doc["spec"]["worker"]["spec"]["containers"][0]
    w["args"] = ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "1",
                 "--no-nanny", "--no-dashboard"]
    w.pop("ports", None)
    s = doc["spec"]["scheduler"]["spec"]["containers"][0]
    s["args"] = ["dask", "scheduler"]
    for c in (w, s):
        c["image"] = IMAGE
        c["imagePullPolicy"] = "Never"
    doc["spec"]["scheduler"]["service"]["type"] = "ClusterIP"
    doc["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] = name
    return doc


def wait(what, check, timeout, every=0.25):
    start = time.monotonic()
    while True:
        v = check()
        if v:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


def connected(ns, name):
    """Workers connected to the scheduler (None while it cannot be reached)."""
    from distributed import Client

    proc = kubectl("get", "service", f"{name}-scheduler", "-n", ns, "-o", "json", check=False)
    if proc.returncode:
        return None
    ip = json.loads(proc.stdout)["spec"].get("clusterIP")
    try:
        with Client(f"tcp://{ip}:8786", timeout=5) as c:
            return len(c.scheduler_info(n_workers=-1)["workers"])
    except Exception:
        return None


def pods_of(ns, name):
    out = kubectl("get", "pods", "-n", ns, "-l", f"dask.org/cluster-name={name}", "-o", "name")
    return [p for p in out.stdout.split() if p]


def run_one(label, argv, ns, workers, env, metrics_url=None):
    kubectl("create", "namespace", ns)
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{label}-", suffix=".log", delete=False)
    op = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                          start_new_session=True)
    rows = {}
    try:
        time.sleep(10)
        assert op.poll() is None, f"{label} operator exited; see {log.name}"
        rows["idle RSS (MiB)"] = proc_status(op.pid)["VmRSS"]
        name = "bench"
        t0 = time.monotonic()
        kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(cluster_doc(name, 2)))
        wait("2 workers", lambda: (connected(ns, name) or 0) >= 2, 300)
        rows["apply → 2 connected (s)"] = time.monotonic() - t0
        cpu0 = cpu_seconds(op.pid)
        t0 = time.monotonic()
        kubectl("scale", "-n", ns, f"daskcluster/{name}", "--replicas", str(workers))
        try:
            wait(f"{workers} workers", lambda: (connected(ns, name) or 0) >= workers, 900, every=1)
            rows[f"scale 2 → {workers} connected (s)"] = time.monotonic() - t0
        except TimeoutError:
            rows[f"scale 2 → {workers} connected (s)"] = (
                f"not reached in 900 s ({connected(ns, name)} connected)")
        rows[f"CPU during 2 → {workers} (s)"] = cpu_seconds(op.pid) - cpu0
        st = proc_status(op.pid)
        rows[f"RSS at {workers} (MiB)"] = st["VmRSS"]
        cpu0, n0 = cpu_seconds(op.pid), reconciles(metrics_url)
        time.sleep(30)
        steady = cpu_seconds(op.pid) - cpu0
        rows[f"CPU steady at {workers} (s/min)"] = steady * 2
        if metrics_url:
            n = reconciles(metrics_url) - n0
            rows["reconciles in those 30 s"] = n
            rows[f"CPU per reconcile at {workers} (ms)"] = (
                1000 * steady / n if n else "no reconcile counted")
        rows["peak RSS (MiB)"] = proc_status(op.pid)["VmHWM"]
        t0 = time.monotonic()
        kubectl("delete", "-n", ns, "daskcluster", name, "--wait=false")
        wait("no pods", lambda: not pods_of(ns, name), 600, every=0.5)
        rows["delete → 0 pods (s)"] = time.monotonic() - t0
        # the issue's own row: a fresh DaskCluster of N, from apply to N connected
        name = "bench-n"
        t0 = time.monotonic()
        kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(cluster_doc(name, workers)))
        try:
            wait(f"{workers} workers", lambda: (connected(ns, name) or 0) >= workers, 900, every=1)
            rows[f"apply → {workers} connected (s)"] = time.monotonic() - t0
        except TimeoutError:
            rows[f"apply → {workers} connected (s)"] = (
                f"not reached in 900 s ({connected(ns, name)} connected)")
        t0 = time.monotonic()
        kubectl("delete", "-n", ns, "daskcluster", name, "--wait=false")
        wait("no pods", lambda: not pods_of(ns, name), 600, every=0.5)
        rows[f"delete {workers} → 0 pods (s)"] = time.monotonic() - t0
    finally:
        os.killpg(op.pid, signal.SIGTERM)
        try:
            op.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(op.pid, signal.SIGKILL)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
        print(f"# {label} log: {log.name}", file=sys.stderr)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=100)
    ap.add_argument("--muster", default=str(REPO / "target/release/muster"))
    ap.add_argument("--kopf-python", default=None)
    ap.add_argument("--no-kopf", action="store_true")
    a = ap.parse_args()
    env = {**os.environ}
    results = {}
    tag = os.getpid()
    listen = f"127.0.0.1:{free_port()}"
    results["muster"] = run_one(
        "muster",
        [a.muster, "operator", "--namespace", f"bench-muster-{tag}", "--no-leader-election",
         "--listen", listen],
        f"bench-muster-{tag}", a.workers, {**env, "RUST_LOG": "info"},
        metrics_url=f"http://{listen}/metrics")
    if not a.no_kopf:
        py = a.kopf_python or sys.executable
        results["dask-kubernetes (kopf)"] = run_one(
            "kopf",
            [py, "-m", "kopf", "run", "--standalone", "--namespace", f"bench-kopf-{tag}",
             "-m", "dask_kubernetes.operator.controller"],
            f"bench-kopf-{tag}", a.workers, env)
    labels = list(dict.fromkeys(k for r in results.values() for k in r))
    names = list(results)
    print(f"{'':34}" + "".join(f"{n:>26}" for n in names))
    for row in labels:
        cells = []
        for n in names:
            v = results[n].get(row, "-")
            cells.append(f"{v:>26.2f}" if isinstance(v, float) else f"{str(v):>26}")
        print(f"{row:34}" + "".join(cells))
    if len(names) == 2:
        m, k = (results[n] for n in names)
        for row in labels:
            if isinstance(m.get(row), float) and isinstance(k.get(row), float) and k[row]:
                print(f"ratio muster/kopf  {row}: {m[row] / k[row]:.2f}")


if __name__ == "__main__":
    main()
