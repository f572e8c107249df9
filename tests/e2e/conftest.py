"""Fixtures for muster's end-to-end tests: the muster binary, a private
MUSTER_HOME per test, and an independent look at the OS for processes that
carry a cluster's marker (so "nothing is left" is checked without trusting
muster's own discovery)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded from tests/python
from kube import kube, kube_namespace  # noqa: F401  (fixtures for the Kubernetes tests)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import artifacts  # noqa: E402  (scripts/artifacts.py: where cargo put the build)


def built(name, env_var):
    """An executable of the release build: from `env_var` (scripts/setup.sh
    exports them), else from cargo itself (which builds it if needed)."""
    path = os.environ.get(env_var) or artifacts.build().get(name)
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{name} executable {path!r} not found: run scripts/setup.sh first")
    return path


def marked_processes(home, cluster=None):
    """Pids whose environment says they belong to this muster home (and cluster)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(
                    item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item
                )
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("Z", "X"):
            continue
        if env.get(b"MUSTER_HOME") != str(home).encode():
            continue
        if cluster is not None and env.get(b"MUSTER_CLUSTER") != cluster.encode():
            continue
        found.append(int(entry))
    return found


# The client credentials of every TLS cluster a test's `muster` documents
# named, by scheduler address (muster/v1 documents carry `tls`: the client's
# CA, certificate and key files). Clients below use them, as a user's would.
CREDENTIALS = {}


def remember_credentials(doc):
    """Notes the `tls` files of a muster/v1 document (or list of them)."""
    for item in doc if isinstance(doc, list) else [doc]:
        if isinstance(item, dict) and item.get("tls") and item.get("scheduler_address"):
            CREDENTIALS[item["scheduler_address"]] = item["tls"]


def security_for(address):
    """The distributed Security for the cluster at `address` (none for a
    plain-TCP cluster)."""
    from distributed.security import Security

    tls = CREDENTIALS.get(address)
    if tls is None:
        return Security()
    return Security(
        tls_ca_file=tls["ca_file"],
        tls_client_cert=tls["cert_file"],
        tls_client_key=tls["key_file"],
        require_encryption=True,
    )


def client_env(address):
    """Dask's configuration variables for a client of the cluster at
    `address` (what `muster env` prints)."""
    tls = CREDENTIALS.get(address)
    if tls is None:
        return {}
    return {
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": tls["ca_file"],
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": tls["cert_file"],
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": tls["key_file"],
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
    }


def connect(address, timeout=30, **kwargs):
    """A distributed Client of the cluster at `address`, with its credentials."""
    from distributed import Client

    return Client(address, timeout=timeout, security=security_for(address), **kwargs)


_TRY_CLIENT = """
import json, sys
from distributed import Client
from distributed.security import Security
address, tls = sys.argv[1], json.loads(sys.argv[2])
security = Security(
    tls_ca_file=tls.get("ca"), tls_client_cert=tls.get("cert"), tls_client_key=tls.get("key"),
    require_encryption=tls.get("require", False),
)
try:
    with Client(address, timeout=5, security=security) as c:
        c.scheduler_info()
except Exception as e:
    print("REFUSED", repr(e))
else:
    print("GOT-IN")
"""


def assert_other_clusters_credentials_refused(address, tls, other):
    """The scheduler at `address` (credentials `tls`, an `up -o json` doc's
    "tls") refuses another cluster's client credentials (`other`: that
    cluster's `up -o json` doc), and also its client certificate beside this
    cluster's CA; the other cluster itself still takes its own."""
    from distributed.security import Security

    o = other["tls"]
    foreign = Security(tls_ca_file=o["ca_file"], tls_client_cert=o["cert_file"],
                       tls_client_key=o["key_file"], require_encryption=True)
    assert refused(address, foreign), "another cluster's credentials got in"
    mixed = Security(tls_ca_file=tls["ca_file"], tls_client_cert=o["cert_file"],
                     tls_client_key=o["key_file"], require_encryption=True)
    assert refused(address, mixed), "a certificate of another cluster's CA got in"
    assert not refused(other["scheduler_address"], foreign)


def refused(address, security=None):
    """How the scheduler at `address` refused a Dask client with `security`
    (a distributed Security, default none): the client's error, or None when
    it got in. Tried in a fresh interpreter: a Client whose constructor
    failed is collected later, and its __del__ closing it can deadlock a
    Client being started in the same process (distributed 2026.8: the
    LoopRunner lock); a CI run hung on that for good."""
    tls = {}
    if security is not None:
        tls = {
            "ca": security.tls_ca_file,
            "cert": security.tls_client_cert,
            "key": security.tls_client_key,
            "require": bool(security.require_encryption),
        }
    proc = subprocess.run(
        [sys.executable, "-c", _TRY_CLIENT, address, json.dumps(tls)],
        capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.startswith(("REFUSED", "GOT-IN")):
        raise AssertionError(f"the client probe failed (exit {proc.returncode}): {proc.stdout}{proc.stderr}")
    return None if out.startswith("GOT-IN") else out


def compute(address, n):
    """Runs examples/compute.py (a real Dask computation) against a cluster and
    checks its answer."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "compute.py"), address, str(n)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **client_env(address)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = (n - 1) * n * (2 * n - 1) // 6
    assert f"sum of squares below {n} = {expected} (correct)" in proc.stdout
    return proc.stdout


def scheduler_workers(address):
    """The names of the Dask workers the scheduler at `address` knows, sorted."""
    with connect(address) as c:
        return sorted(w["name"] for w in c.scheduler_info(n_workers=-1)["workers"].values())


def as_at_a_terminal():
    """In a child before exec: SIGINT's default action, as a command typed at
    a terminal has it. A test run started in the background (`cmd &` in a
    non-interactive shell, as CI scripts do) inherits SIGINT ignored, and
    so would every muster it starts: Ctrl-C tests would then test nothing
    (muster's `get -w` and `logs -f` rightly keep an inherited SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until(predicate, timeout=30.0, interval=0.1, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class Muster:
    """Runs the muster binary against one private state directory."""

    def __init__(self, binary, home, python):
        self.binary = binary
        self.home = home
        self.python = python
        self.env = {**os.environ, "MUSTER_HOME": str(home)}

    def run(self, *args, check=True, timeout=180, env=None):
        proc = subprocess.run(
            [self.binary, *map(str, args)],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"muster {' '.join(map(str, args))} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def json(self, *args):
        """A command's `-o json` document (contract muster/v1: an object with
        `schema` and `kind`); a list document's items."""
        doc = json.loads(self.run(*args, "-o", "json").stdout)
        assert isinstance(doc, dict) and doc.get("schema") == "muster/v1", doc
        doc = doc["items"] if doc.get("kind", "").endswith("List") else doc
        remember_credentials(doc)
        return doc

    def popen(self, *args):
        return subprocess.Popen(
            [self.binary, *map(str, args)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=as_at_a_terminal,
        )

    def processes(self, cluster=None):
        return marked_processes(self.home, cluster)

    def kill_agent(self, cluster):
        """SIGKILLs the cluster's agent (its marked process without a job),
        e.g. before deleting the registry, which its next round would write
        again."""
        for pid in self.processes(cluster):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if not any(e.startswith(b"MUSTER_JOB=") for e in env):
                os.kill(pid, 9)


def _in_completing_job(pid):
    """True when the process runs in a SLURM job squeue shows COMPLETING."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return True  # gone meanwhile: the next look no longer lists it
    job = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"SLURM_JOB_ID=")), None)
    if job is None:
        return False
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip() == "COMPLETING"


def _argv(pid):
    """A process's command line, for messages ("?" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:300]
    except OSError:
        return "?"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed operator test carries the operator's log and the namespace's
    pods and events, read before the fixtures tear the namespace down."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and {"operator", "kube"} <= item.funcargs.keys():
        from operator_kit import operator_report

        report.sections.append(("the operator after the failure",
                                operator_report(item.funcargs["kube"], item.funcargs["operator"])))


@pytest.fixture(scope="session")
def muster_bin():
    return built("muster", "MUSTER_BIN")


@pytest.fixture
def muster(muster_bin, tmp_path):
    home = tmp_path / "home"
    m = Muster(muster_bin, home, sys.executable)
    yield m
    # Whatever a test left, take it down, and fail loudly if processes remain.
    for cluster in {c["name"] for c in m.json("get", "clusters")}:
        m.run("down", cluster, check=False)
    leftover = m.processes()
    # A batch job's processes outlive their job's queue entry while SLURM is
    # still killing them (COMPLETING). SLURM's Torque qstat, which the PBS
    # backend reads here, shows such a job as done (C: its base state is
    # CANCELLED), where a real PBS shows E until it has exited. Those, and
    # only those, get a moment to go.
    deadline = time.monotonic() + 30
    while leftover and time.monotonic() < deadline and all(map(_in_completing_job, leftover)):
        time.sleep(0.5)
        leftover = m.processes()
    described = {pid: _argv(pid) for pid in leftover}  # before they are killed, to say what they were
    for pid in leftover:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not leftover, f"processes left behind by the test: {described}"
