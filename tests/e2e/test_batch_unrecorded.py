"""Batch clusters without a registry record, on a real SLURM (issue 10):
every job muster submits carries its MUSTER_HOME's tag in its name, so
`get clusters` lists this home's clusters found in the queue (phase
Unrecorded) and `down --all` stops them, while the clusters of another home,
one of them with the very same name, are neither listed nor stopped. What
is left is checked in squeue itself, not through muster."""

import shutil
import sys

import pytest

from batch import active, queue, spec_file, start_slurm, unique
from conftest import Muster, wait_until


@pytest.fixture(scope="module", autouse=True)
def slurm():
    start_slurm()


@pytest.fixture
def other(muster_bin, tmp_path):
    """A second muster home on the same machine and queue."""
    m = Muster(muster_bin, tmp_path / "other-home", sys.executable)
    yield m
    for cluster in {c["name"] for c in m.json("get", "clusters")}:
        m.run("down", cluster, check=False)


def lose_the_record(m, name):
    # Its agent first: its next round would write the record again.
    m.kill_agent(name)
    shutil.rmtree(m.home / "clusters" / name)


def test_unrecorded_batch_clusters_are_this_homes_only(muster, other, tmp_path):
    # In this home: a cluster whose scheduler is a batch job too (nothing of
    # it runs on this host once its agent is gone: only the queue knows it),
    # and one whose scheduler runs here. The other home has a cluster of the
    # second one's name.
    queued_only = unique("uq")
    shared = unique("us")
    muster.run("up", "-f", spec_file(tmp_path, queued_only, "slurm", 1, extra=", placement: job"),
               "--timeout", "120s")
    muster.run("up", "-f", spec_file(tmp_path, shared, "slurm", 1), "--timeout", "120s")
    (tmp_path / "o").mkdir()
    other.run("up", "-f", spec_file(tmp_path / "o", shared, "slurm", 1), "--timeout", "120s")
    assert len(active(queued_only)) == 2  # its scheduler and its worker
    assert len(active(shared)) == 2  # one worker of each home
    theirs = {r[0] for r in active(shared)} - {
        w["name"].rsplit("-", 1)[1] for w in muster.json("get", "workers", shared)
    }
    assert len(theirs) == 1

    lose_the_record(muster, queued_only)
    lose_the_record(muster, shared)
    assert muster.processes(queued_only) == []

    listed = {c["name"]: c for c in muster.json("get", "clusters")}
    assert set(listed) == {queued_only, shared}, listed
    for name in (queued_only, shared):
        assert listed[name]["phase"] == "Unrecorded", listed[name]
        assert listed[name]["recorded"] is False
        assert listed[name]["backend"] == "slurm", listed[name]
    # Its scheduler job and its worker task, by muster job id.
    assert len(listed[queued_only]["found_jobs"]) == 2, listed[queued_only]
    # The shared name: this home's worker task and local scheduler, never
    # the other home's task.
    found = listed[shared]["found_jobs"]
    assert not any(j.endswith(f"-{t}") for t in theirs for j in found), (found, theirs)
    table = muster.run("get", "clusters").stdout
    assert queued_only in table and "Unrecorded" in table, table

    # The other home sees only its own cluster, recorded.
    assert [(c["name"], c["recorded"]) for c in other.json("get", "clusters")] == [(shared, True)]

    out = muster.run("down", "--all")
    assert f"cluster {queued_only} is down" in out.stdout, out.stdout + out.stderr
    assert f"cluster {shared} is down" in out.stdout, out.stdout + out.stderr
    # The queue itself: nothing of this home is left, the other home's job
    # runs on.
    wait_until(lambda: active(queued_only) == [], timeout=60, message="its jobs to leave the queue")
    assert [r[0] for r in active(shared)] == sorted(theirs), queue(shared)
    assert muster.processes() == []
    assert muster.json("get", "clusters") == []
    assert {c["name"]: c["phase"] for c in other.json("get", "clusters")} == {shared: "Running"}
    other.run("down", shared)
    assert active(shared) == []
