"""dask-muster's SSHCluster drop-in on the real test SSH hosts (sshd in
network namespaces, tests/services/sshhosts): distributed's documentation
example with only the import changed computes across the hosts, and nothing
of the cluster is left in any host's namespace afterwards."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, wait_until

EXAMPLES = Path(__file__).parent / "examples"
ADDR = {k: f"10.200.0.{10 + k}" for k in (1, 2, 3)}


@pytest.fixture(scope="module", autouse=True)
def hosts():
    subprocess.run([str(REPO / "tests" / "services" / "sshhosts" / "start.sh"), "3"], check=True,
                   capture_output=True, timeout=300)


def namespace_pids(k, marker):
    """Live processes in host hK's namespace whose environment carries marker."""
    out = subprocess.run(["ip", "netns", "pids", f"mh{k}"], capture_output=True, text=True).stdout
    found = []
    for pid in out.split():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and any(e.startswith(b"MUSTER_CLUSTER=" + marker.encode()) for e in env):
            found.append(int(pid))
    return found


def test_distributed_sshcluster_docs_example_with_only_the_import_changed(home, tmp_path):
    text = (EXAMPLES / "ssh_cluster.py").read_text()
    new = text.replace("from dask.distributed import SSHCluster", "from dask_muster import SSHCluster")
    assert sum(a != b for a, b in zip(text.splitlines(), new.splitlines())) == 1
    program = tmp_path / "ssh_cluster.py"
    program.write_text(new)
    p = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    out = dict(line.split(" ", 1) for line in p.stdout.splitlines() if line.split(" ", 1)[0].isupper())
    assert out["SCHEDULER"].startswith(f"tls://{ADDR[1]}:"), out
    assert out["WORKERS"] == str(sorted([ADDR[2], ADDR[3]])), out
    assert out["RESULT"] == str(sum(x * x for x in range(1000)))
    # close() brought it down everywhere: no process with a dask- cluster marker on any host.
    wait_until(lambda: not any(namespace_pids(k, "dask-") for k in (1, 2, 3)), timeout=30,
               message="the cluster's processes on the hosts to exit")
    assert home.clusters() == []


def test_parameters_muster_cannot_honour_raise_naming_them(home):
    from dask_muster import SSHCluster

    with pytest.raises(ValueError, match=r"connect_options\['agent_forwarding'\]"):
        SSHCluster(["h1", "h2"], connect_options={"agent_forwarding": True})
    with pytest.raises(ValueError, match=r"worker_options\['resources'\]"):
        SSHCluster(["h1", "h2"], worker_options={"resources": {"GPU": 1}})
    with pytest.raises(ValueError, match="worker_class='my.Worker'"):
        SSHCluster(["h1", "h2"], worker_class="my.Worker")
    with pytest.raises(TypeError, match="'silence_logs'"):
        SSHCluster(["h1", "h2"], silence_logs=False)
    assert home.clusters() == []
