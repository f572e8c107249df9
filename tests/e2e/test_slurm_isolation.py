"""The test SLURM never takes over the machine's own (issue 10, item 2).

A "machine" SLURM runs from /etc/slurm with another cluster name on SLURM's
default ports (tests/services/slurm/decoy.sh starts one when the machine has
none; a SLURM the machine really has is used as it is). Then a second test
SLURM instance (its own directory, ports and cluster name, through the same
start.sh/stop.sh as the suite's) is started, a muster cluster is brought up and
down on it, and the instance is stopped. Afterwards the decoy must be
untouched (same config bytes, same daemon pids and start times, its held job
still queued, still answering as its own cluster) and so must the suite's own
test SLURM. Each look is from the OS and SLURM's own commands, not muster."""

import os
import subprocess
from pathlib import Path

import pytest

from batch import SLURM_DIR, start_slurm, unique, spec_file
from conftest import REPO

SERVICES = REPO / "tests" / "services" / "slurm"
DECOY_STATE = "/run/muster-slurm-decoy"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SLURM daemons need root")


def run(*argv, env=None, check=True):
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    if check:
        assert proc.returncode == 0, f"{argv} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def cluster_name(conf):
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    if conf:
        env["SLURM_CONF"] = str(conf)
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, env=env,
                         timeout=30).stdout
    return next((line.split("=", 1)[1].strip() for line in out.splitlines()
                 if line.startswith("ClusterName")), None)


def squeue_names(conf):
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    if conf:
        env["SLURM_CONF"] = str(conf)
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%j"], capture_output=True, text=True,
                         env=env, timeout=30).stdout
    return out.split()


@pytest.fixture
def decoy():
    """The machine's SLURM: the real one if /etc/slurm has a config, else a decoy."""
    start_slurm()
    # Started by scripts/test.sh for the whole suite, or here for this test.
    mine = not os.path.exists(DECOY_STATE)
    run(SERVICES / "decoy.sh", "start")
    yield
    if mine:
        run(SERVICES / "decoy.sh", "stop")


def test_a_second_test_slurm_leaves_the_machines_and_the_suites_alone(decoy, muster, tmp_path):
    run(SERVICES / "decoy.sh", "check")
    suite_cluster = cluster_name(SLURM_DIR / "slurm.conf")
    assert suite_cluster and suite_cluster != cluster_name(None)

    # Under /run like the suite's (the munge user must reach its socket).
    other = Path(f"/run/{unique('muster-iso-slurm-')}")
    knobs = {"MUSTER_SLURM_DIR": str(other), "MUSTER_SLURM_PORT": "16837",
             "MUSTER_SLURM_CLUSTER": "musteriso"}
    conf = other / "slurm.conf"
    try:
        out = run(SERVICES / "start.sh", env=knobs).stdout
        assert f"SLURM_CONF={conf}" in out
        assert cluster_name(conf) == "musteriso"
        # muster follows SLURM_CONF: its jobs are in that instance, nowhere else.
        muster.env["SLURM_CONF"] = str(conf)
        name = unique("iso")
        up = muster.json("up", "-f", spec_file(tmp_path, name, "slurm", 1), "--timeout", "120s")
        assert up["connected_workers"] == 1
        prefix = f"muster_{name}_"
        assert any(j.startswith(prefix) for j in squeue_names(conf))
        assert not any(j.startswith(prefix) for j in squeue_names(SLURM_DIR / "slurm.conf"))
        assert not any(j.startswith(prefix) for j in squeue_names(None))
        muster.run("down", name)
    finally:
        run(SERVICES / "stop.sh", "--purge", env=knobs)
    assert not conf.exists()

    run(SERVICES / "decoy.sh", "check")
    assert cluster_name(SLURM_DIR / "slurm.conf") == suite_cluster

