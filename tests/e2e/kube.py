"""Access to the real test Kubernetes (tests/services/kubernetes) for the
end-to-end tests: a `kube` fixture that finds the running cluster through its
kubeconfig and talks to its API server with kubectl, and a `kube_namespace`
fixture giving each test a fresh namespace that is deleted (and waited for)
afterwards.

The cluster is started by scripts/test.sh, which also sets
MUSTER_REQUIRE_KUBERNETES=1: then a missing or broken cluster FAILS the tests
that need it; without the marker they are skipped with the reason."""

import contextlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "tests" / "services" / "kubernetes"
RUN = Path(os.environ.get("MUSTER_K8S_RUN", "/run/muster-k8s"))
CACHE = Path(os.environ.get("MUSTER_CACHE", Path.home() / ".cache" / "muster")) / "kubernetes"


def _lib_value(name):
    """A version variable of tests/services/kubernetes/lib.sh (one source of truth)."""
    for line in (SERVICE / "lib.sh").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].split()[0]
    raise KeyError(name)


def default_kubectl():
    return str(CACHE / "bin" / f"kubernetes-{_lib_value('K8S_VERSION')}" / "kubectl")


def dask_image():
    """The Dask image images.sh built (name:tag), as start.sh exports it."""
    image = os.environ.get("MUSTER_K8S_DASK_IMAGE")
    if image:
        return image
    ref = CACHE / "images" / "dask.ref"
    if ref.exists():
        return ref.read_text().split()[1]
    return None


class Kube:
    """kubectl against one cluster; every check goes through its API server."""

    def __init__(self, kubectl, kubeconfig):
        self.kubectl_bin = kubectl
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def kubectl(self, *args, input=None, check=True, timeout=120):
        proc = subprocess.run(
            [self.kubectl_bin, *map(str, args)],
            input=input,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def json(self, *args):
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, *objects, namespace=None):
        """Creates or updates objects (dicts) with `kubectl apply`."""
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
        ns = ["-n", namespace] if namespace else []
        return self.kubectl("apply", *ns, "-f", "-", input=doc)

    def pods(self, namespace, selector=None):
        sel = ["-l", selector] if selector else []
        return self.json("get", "pods", "-n", namespace, *sel)["items"]

    def node_problems(self):
        """Node conditions that keep pods off a node (DiskPressure, ...) and
        NoSchedule/NoExecute taints, as readable lines; empty when none."""
        problems = []
        for n in self.json("get", "nodes")["items"]:
            name = n["metadata"]["name"]
            for c in n["status"].get("conditions", []):
                if c["type"] != "Ready" and c["status"] == "True":
                    problems.append(f"node {name}: {c['type']} ({c.get('message', '')})")
            for t in n["spec"].get("taints", []):
                if t.get("effect") in ("NoSchedule", "NoExecute"):
                    problems.append(f"node {name}: taint {t['key']}:{t['effect']}")
        return problems

    def diagnose(self, namespace=None, logs_of=None):
        """What the API server says about the node, the pods and the events
        (and the last log lines of the pods labelled `logs_of`): appended to a
        failed wait so the log tells why pods did not come or did not connect."""
        ns = ["-n", namespace] if namespace else ["-A"]
        parts = [f"node problems: {self.node_problems() or 'none'}"]
        commands = [["get", "pods", "-o", "wide", *ns],
                    ["get", "events", "--sort-by=.lastTimestamp", *ns]]
        if logs_of:
            commands.append(["logs", *ns, "-l", logs_of, "--prefix", "--tail", "40"])
        for args in commands:
            out = self.kubectl(*args, check=False, timeout=30)
            parts.append(f"$ kubectl {' '.join(args)}\n{out.stdout}{out.stderr}")
        if logs_of:
            parts += self._failed_containers(ns, logs_of)
            parts += self._service_rules(ns)
        return "\n".join(parts)

    def _failed_containers(self, ns, selector):
        """Each container of those pods that ended non-zero: its exit, times
        and the first lines of its log (the tail above is the traceback's
        end; its cause is at the start)."""
        out = []
        listed = self.kubectl("get", "pods", *ns, "-l", selector, "-o", "json", check=False, timeout=30)
        try:
            pods = json.loads(listed.stdout)["items"]
        except ValueError:
            return [f"(pods not listed: {listed.stderr.strip()})"]
        for pod in pods:
            meta = pod["metadata"]
            for c in pod.get("status", {}).get("containerStatuses") or []:
                ended = c.get("state", {}).get("terminated") or c.get("lastState", {}).get("terminated")
                if not ended or ended.get("exitCode") == 0:
                    continue
                head = self.kubectl("logs", "-n", meta["namespace"], meta["name"], "-c", c["name"],
                                    check=False, timeout=30)
                lines = (head.stdout + head.stderr).splitlines()
                out.append(f"container {meta['name']}/{c['name']} ended: exit {ended.get('exitCode')} "
                           f"({ended.get('reason')}), started {ended.get('startedAt')}, finished "
                           f"{ended.get('finishedAt')}; first lines of its log:\n" + "\n".join(lines[:40]))
        return out

    def _service_rules(self, ns):
        """kube-proxy's NAT rules for the namespace's Services' cluster IPs
        (a rule left for a recycled IP once sent a Dask client to an HTTP
        port: the frame length it read was b'HTTP/1.1')."""
        listed = self.kubectl("get", "services", *ns, "-o", "json", check=False, timeout=30)
        try:
            ips = {s["spec"].get("clusterIP") for s in json.loads(listed.stdout)["items"]} - {None, "None"}
        except ValueError:
            return []
        rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True)
        hits = [line for line in rules.stdout.splitlines() if any(f"{ip}/32" in line for ip in ips)]
        return [f"$ iptables-save -t nat | grep {' '.join(sorted(ips))}\n" + "\n".join(hits)]

    @contextlib.contextmanager
    def explained(self, namespace, logs_of=None):
        """Appends diagnose() to an AssertionError raised inside (a wait that
        timed out), so the log says why the pods did not come."""
        try:
            yield
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnose(namespace, logs_of)}") from None

    def node_ready(self):
        nodes = self.json("get", "nodes")["items"]
        return bool(nodes) and all(
            c["status"] == "True"
            for n in nodes
            for c in n["status"].get("conditions", [])
            if c["type"] == "Ready"
        )


def pod_ready(pod):
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod["status"].get("conditions", [])
    )


def _unavailable(reason):
    if os.environ.get("MUSTER_REQUIRE_KUBERNETES") == "1":
        pytest.fail(f"test Kubernetes required but unavailable: {reason}")
    pytest.skip(f"no test Kubernetes ({reason}); run tests/services/kubernetes/start.sh")


@pytest.fixture(scope="session")
def kube():
    """The running test cluster; fails (MUSTER_REQUIRE_KUBERNETES=1) or skips without it."""
    kubeconfig = os.environ.get("KUBECONFIG", str(RUN / "admin.kubeconfig"))
    kubectl = os.environ.get("MUSTER_K8S_KUBECTL", default_kubectl())
    if not os.access(kubectl, os.X_OK):
        _unavailable(f"kubectl {kubectl} not built (tests/services/kubernetes/build.sh)")
    if not os.path.exists(kubeconfig):
        _unavailable(f"kubeconfig {kubeconfig} missing")
    k = Kube(kubectl, kubeconfig)
    ready = k.kubectl("get", "--raw", "/readyz", check=False, timeout=20)
    if ready.returncode != 0:
        _unavailable(f"API server not ready: {ready.stderr.strip()}")
    if not k.node_ready():
        _unavailable("no Ready node")
    problems = k.node_problems()
    if problems:
        # Pods would stay Pending and the tests time out with no reason given.
        pytest.fail("the test node cannot take pods: " + "; ".join(problems))
    return k


@pytest.fixture
def kube_namespace(kube):
    """A fresh namespace, deleted after the test; the test fails if it will not go."""
    name = f"muster-e2e-{uuid.uuid4().hex[:8]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while kube.kubectl("-n", name, "get", "serviceaccount", "default", check=False).returncode:
        assert time.monotonic() < deadline, f"namespace {name} got no default service account"
        time.sleep(0.2)
    yield name
    kube.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", timeout=180)
