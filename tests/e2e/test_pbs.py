"""End to end with PBS commands: SLURM's Torque-compatible qsub/qstat/qdel
over the real SLURM (no real PBS server can be installed here; real PBS output
formats are covered by muster-hpc's parser tests). Workers are one `qsub -t`
array; the cluster computes, scales, comes down, and the queue holds nothing
of it."""

import subprocess

import pytest

from batch import active, spec_file, start_slurm, unique
from conftest import compute, scheduler_workers


@pytest.fixture(scope="module", autouse=True)
def slurm():
    start_slurm()


def qstat_active(cluster):
    """Jobs of the cluster qstat -f shows in a live state (Q, R, ...)."""
    out = subprocess.run(["qstat", "-f"], capture_output=True, text=True, timeout=60).stdout
    live, name = [], None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Job Id:"):
            job = line.split(":", 1)[1].strip()
        elif line.startswith("Job_Name = "):
            name = line.split(" = ", 1)[1]
        elif line.startswith("job_state = ") and name and name.startswith(f"muster_{cluster}_"):
            if line.split(" = ", 1)[1] not in ("C", "F", "X"):
                live.append(job)
    return live


def test_pbs_up_compute_scale_down(muster, tmp_path):
    name = unique("pb")
    up = muster.json("up", "-f", spec_file(tmp_path, name, "pbs", 4), "--timeout", "120s")
    assert (up["backend"], up["connected_workers"]) == ("pbs", 4)
    address = up["scheduler_address"]
    workers = muster.json("get", "workers", name)
    names = sorted(w["name"] for w in workers)
    # muster ids in PBS spelling, all tasks of ONE qsub array.
    arrays = {n.rsplit("-", 1)[1].split("[")[0] for n in names}
    assert len(arrays) == 1 and all(n.endswith("]") for n in names), names
    assert {r[1] for r in active(name)} == arrays
    assert len(qstat_active(name)) == 4
    assert scheduler_workers(address) == names

    compute(address, 2000)

    muster.run("scale", name, 8, "--timeout", "120s")
    workers8 = muster.json("get", "workers", name)
    assert len(workers8) == 8
    assert len({w["name"].rsplit("-", 1)[1].split("[")[0] for w in workers8}) == 2

    muster.run("scale", name, 2, "--timeout", "120s")
    kept = sorted(w["name"] for w in muster.json("get", "workers", name))
    assert len(kept) == 2
    assert scheduler_workers(address) == kept
    assert len(qstat_active(name)) == 2
    compute(address, 500)

    muster.run("down", name)
    assert qstat_active(name) == []
    assert [r for r in active(name) if r[2] != "COMPLETING"] == []
    assert muster.json("get", "clusters") == []
    assert "nothing to stop" in muster.run("down", name).stdout


def test_pbs_scheduler_in_a_job(muster, tmp_path):
    name = unique("pj")
    spec = spec_file(tmp_path, name, "pbs", 2, extra=", placement: job")
    up = muster.json("up", "-f", spec, "--timeout", "120s")
    assert up["connected_workers"] == 2
    # Three live jobs: the scheduler and two array tasks; no local scheduler.
    assert len(qstat_active(name)) == 3
    # The only local process of the cluster is its agent (issue 5).
    agent = muster.json("describe", name)["agent"]
    assert agent["agent"] == "running", agent
    assert muster.processes(name) == [agent["pid"]]
    compute(up["scheduler_address"], 1000)
    muster.run("down", name)
    assert qstat_active(name) == []
