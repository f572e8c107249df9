"""Adaptive scaling on the real SLURM: the same agent and policy as on the
local backend grow the cluster with array submissions when a client submits
a burst, and shrink it back to the minimum afterwards, retiring workers
through the scheduler and cancelling exactly their array tasks."""

import time

import pytest


from batch import active, spec_file, start_slurm, unique
from conftest import connect, wait_until


@pytest.fixture(scope="module", autouse=True)
def slurm():
    start_slurm()


def _make_slow_square():
    def slow_square(x):  # shipped by value: workers cannot import this module
        import time

        time.sleep(0.5)
        return x * x

    return slow_square


def connected(client):
    return len(client.scheduler_info(n_workers=-1)["workers"])


def test_a_burst_on_slurm_grows_with_arrays_and_shrinks_back(muster, tmp_path):
    name = unique("adapt")
    spec = spec_file(tmp_path, name, "slurm", 0)
    up = muster.json(
        "up", "-f", spec, "--adapt", "--min", 0, "--max", 6, "--scale-down-wait", "3s",
        "--timeout", "3m",
    )
    assert up["workers"] == 0
    slow_square = _make_slow_square()
    with connect(up["scheduler_address"], timeout=60) as client:
        futures = client.map(slow_square, range(120))
        peak = 0
        deadline = time.monotonic() + 240
        while not all(f.done() for f in futures):
            peak = max(peak, connected(client))
            assert time.monotonic() < deadline, "the burst did not finish"
            time.sleep(0.2)
        assert client.gather(futures) == [x * x for x in range(120)]
        assert 1 < peak <= 6, peak
        del futures
        wait_until(lambda: connected(client) == 0, timeout=120, message="shrinking to 0 workers")

    # Every worker job the agent launched is gone from the queue.
    wait_until(lambda: active(name) == [], timeout=60, message="no active worker array tasks")
    # The agent writes "retired" once its cancel has returned, which may be
    # a moment after the queue empties.
    events = wait_until(
        lambda: (ev := muster.json("events", name)) and any(e["kind"] == "retired" for e in ev) and ev,
        timeout=30,
        message="the retire event",
    )
    ups = [e["message"] for e in events if e["kind"] == "scale-up"]
    assert ups and all("launching" in m for m in ups), ups
    muster.run("down", name)
    assert active(name) == []
    assert muster.processes(name) == []
