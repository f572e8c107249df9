"""End to end through a login node: `backend.submit_host` makes the SLURM and
PBS backends run every batch command (and read every shared file) on another
host over SSH. The login node is SSH test host h1 (tests/services/sshhosts),
made a SLURM login node by tests/services/slurm/login-node.sh; the real
SLURM's controller and compute node are on this machine. SLURM records the
host each job was submitted from (`SLURM_SUBMIT_HOST`), so the tests check that every
job of the cluster came from h1, not from here; muster reaches the
scheduler's HTTP API through an SSH tunnel via h1. Also: a login node whose
host key is not known stops `up` before anything is submitted, and a spec
that cannot work through a login node is refused naming its fields."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from batch import active, start_slurm, unique
from conftest import REPO, compute, scheduler_workers

STATE = Path(os.environ.get("MUSTER_SSH_STATE", "/tmp/muster-sshhosts"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SSH test hosts and SLURM need root")


@pytest.fixture(scope="module", autouse=True)
def login_node():
    start_slurm()
    for script in ("sshhosts/start.sh", "slurm/login-node.sh"):
        subprocess.run(
            [str(REPO / "tests" / "services" / script), "3" if "sshhosts" in script else "1"],
            check=True, timeout=300,
        )


def write_spec(tmp_path, name, kind, workers, ssh=None, placement="job", logs=True):
    ssh = ssh or f"{{ssh_config: {STATE / 'ssh_config'}}}"
    log_line = f"  log_directory: {tmp_path / 'shared'}\n" if logs else ""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"backend:\n"
        f"  kind: {kind}\n"
        f"  submit_host: h1\n"
        f"  ssh: {ssh}\n"
        f"{log_line}"
        # The bridge address: the compute node (this machine) and the login
        # node h1 both reach it, so muster's tunnel through h1 does too.
        f"scheduler: {{host: 10.200.0.1, placement: {placement}}}\n"
        f"worker: {{python: {sys.executable}, memory: 512MiB, cores: 1}}\n"
        f"workers: {workers}\n"
    )
    return path


def submitted_from(cluster):
    """The hosts the cluster's running jobs were submitted from, as SLURM
    tells each job (`SLURM_SUBMIT_HOST` in the environment of its
    processes, found by job name in /proc, without asking muster)."""
    hosts = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if env.get(b"SLURM_JOB_NAME", b"").startswith(f"muster_{cluster}_".encode()):
            hosts.add(env.get(b"SLURM_SUBMIT_HOST", b"?").decode())
    return hosts


def left_behind(cluster, kind):
    """Active jobs of the cluster. Torque's qstat (what muster asks under
    pbs) already calls a COMPLETING job complete, as test_pbs.py notes."""
    return [r for r in active(cluster) if kind == "slurm" or r[2] != "COMPLETING"]


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_a_cluster_driven_through_a_login_node(muster, tmp_path, kind):
    name = unique("lg")
    spec = write_spec(tmp_path, name, kind, 2)
    try:
        drive(muster, name, spec, kind)
    finally:
        muster.run("down", name, check=False)
    assert left_behind(name, kind) == []
    assert muster.json("get", "clusters") == []


def drive(muster, name, spec, kind):
    up = muster.json("up", "-f", spec, "--timeout", "180s")
    assert (up["backend"], up["connected_workers"]) == (kind, 2)
    address = up["scheduler_address"]
    # The scheduler job and the worker array were submitted on h1.
    assert len(active(name)) == 3
    assert submitted_from(name) == {"h1"}
    compute(address, 1000)

    # muster reaches the scheduler's HTTP API through a tunnel via h1.
    scaled = muster.run("scale", name, 3, "--timeout", "180s", env={"MUSTER_LOG": "muster_ssh=debug"})
    assert "ssh tunnel open" in scaled.stderr and "to=10.200.0.1:" in scaled.stderr, scaled.stderr
    workers = muster.json("get", "workers", name)
    assert [w["status"] for w in workers] == ["Running"] * 3
    assert scheduler_workers(address) == sorted(w["name"] for w in workers)
    assert submitted_from(name) == {"h1"}

    # A job's output is read on the login node.
    logged = muster.run("logs", name, "--worker", workers[0]["name"], env={"MUSTER_LOG": "muster_ssh=debug"})
    assert "distributed.worker" in logged.stdout
    assert "ssh run" in logged.stderr and '"cat"' in logged.stderr

    muster.run("scale", name, 1, "--timeout", "180s")
    (kept,) = muster.json("get", "workers", name)
    assert scheduler_workers(address) == [kept["name"]]
    compute(address, 200)

    down = muster.run("down", name, env={"MUSTER_LOG": "muster_ssh=debug"})
    assert '"scancel"' in down.stderr or '"qdel"' in down.stderr, down.stderr
    assert left_behind(name, kind) == []


def test_an_unknown_login_node_key_stops_up_before_anything_is_submitted(muster, tmp_path):
    name = unique("lk")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    ssh = f"{{ssh_config: {STATE / 'ssh_config'}, known_hosts: {empty}}}"
    spec = write_spec(tmp_path, name, "slurm", 2, ssh=ssh)
    res = muster.run("up", "-f", spec, "--timeout", "60s", check=False)
    assert res.returncode == 1, res
    assert "h1" in res.stderr and "known" in res.stderr.lower(), res.stderr
    assert active(name) == []
    assert muster.json("get", "clusters") == []
    assert empty.read_text() == "", "nothing may be trusted without accept_new_host_keys"


def test_specs_that_cannot_work_through_a_login_node_are_refused(muster, tmp_path):
    name = unique("lv")
    spec = write_spec(tmp_path, name, "slurm", 2, placement="host", logs=False)
    res = muster.run("up", "-f", spec, check=False)
    assert res.returncode == 2, res
    assert "scheduler.placement" in res.stderr and "backend.log_directory" in res.stderr, res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("submit_host: h1", "submit_host: 'h1;reboot'"))
    res = muster.run("up", "-f", bad, check=False)
    assert res.returncode == 2 and "backend.submit_host" in res.stderr, res.stderr
    assert active(name) == []
