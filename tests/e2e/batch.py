"""Helpers for the end-to-end tests of the batch backends (SLURM, PBS): the
real SLURM started by tests/services/slurm/start.sh, an independent look at
its queue (so "nothing is left" is checked without trusting muster's own
discovery), spec files, and a real Dask computation on a cluster."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import REPO

# The test SLURM's own configuration (tests/services/slurm/env.sh): every
# sbatch/squeue/qsub the tests run, and muster itself, reach that SLURM and
# never the machine's (whatever SLURM_CONF the caller's shell had).
SLURM_DIR = Path(os.environ.get("MUSTER_SLURM_DIR", "/run/muster-test-slurm"))
os.environ["SLURM_CONF"] = str(SLURM_DIR / "slurm.conf")

ACTIVE = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED",
    "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
}


def start_slurm():
    subprocess.run([str(REPO / "tests" / "services" / "slurm" / "start.sh")], check=True, timeout=600)


def unique(prefix):
    """A fresh cluster name: finished jobs stay listed for 300 s."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def queue(cluster):
    """This cluster's jobs as squeue lists them: (display id, array id, state)."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%i|%F|%T|%j"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    rows = []
    for line in out.splitlines():
        display, array, state, name = line.split("|", 3)
        if name.startswith(f"muster_{cluster}_"):
            rows.append((display, array, state))
    return rows


def active(cluster):
    return [r for r in queue(cluster) if r[2] in ACTIVE]


def spec_file(tmp_path, name, kind, workers, extra=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"backend: {{kind: {kind}}}\n"
        f"scheduler: {{host: 127.0.0.1{extra}}}\n"
        f"worker: {{python: {sys.executable}, memory: 512MiB, cores: 1}}\n"
        f"workers: {workers}\n"
    )
    return path


