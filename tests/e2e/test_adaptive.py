"""Adaptive scaling end to end on the local backend with real Dask: the
per-cluster agent grows the cluster when a client submits work, shrinks it
back to the minimum when the work is done (retiring workers through the
scheduler, so no result is lost), survives being killed, replaces dead
workers, and never outlives `muster down`."""

import os
import signal
import threading
import time



from conftest import connect, wait_until


def _make_slow_square():
    # A local function: Dask ships it by value (the workers cannot import
    # this test module).
    def slow_square(x):
        import time

        time.sleep(0.5)
        return x * x

    return slow_square


slow_square = _make_slow_square()


def connected(client):
    return len(client.scheduler_info(n_workers=-1)["workers"])


def agent_pid(muster, name):
    view = muster.json("describe", name)["agent"]
    assert view["agent"] == "running", view
    return view["pid"]


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def events(muster, name):
    return muster.json("events", name)


def test_a_burst_grows_the_cluster_and_it_shrinks_back_without_losing_results(muster):
    up = muster.json(
        "up", "burst", "--adapt", "--min", 0, "--max", 6, "--scale-down-wait", "3s",
        "--python", muster.python,
    )
    assert up["workers"] == 0
    with connect(up["scheduler_address"], timeout=30) as client:
        assert connected(client) == 0
        samples = []
        done = threading.Event()

        def sample():
            while not done.is_set():
                samples.append(connected(client))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        futures = client.map(slow_square, range(200))
        results = client.gather(futures)
        done.set()
        sampler.join()
        assert results == [x * x for x in range(200)]
        peak = max(samples)
        assert peak > 1, f"the cluster never grew: {samples}"
        assert peak <= 6, f"more workers than the maximum: {samples}"

        # Keep the results on the cluster: with nothing to compute the agent
        # shrinks it, and the scheduler moves the data off every worker it
        # retires, so one worker remains holding all of it.
        wait_until(lambda: connected(client) == 1, timeout=60, message="shrinking to 1 worker")
        assert client.gather(futures) == [x * x for x in range(200)]
        holders = {a for addrs in client.who_has(futures).values() for a in addrs}
        assert len(holders) == 1

        # Release the results: back to the minimum, 0.
        del futures, results
        wait_until(lambda: connected(client) == 0, timeout=60, message="shrinking to 0 workers")

    wait_until(lambda: muster.json("get", "workers", "burst") == [], timeout=30,
               message="no worker jobs left")
    kinds = [e["kind"] for e in events(muster, "burst")]
    assert "scale-up" in kinds and "scale-down" in kinds and "retired" in kinds, kinds
    ups = [e["message"] for e in events(muster, "burst") if e["kind"] == "scale-up"]
    assert ups[0].startswith("target ") and "launching" in ups[0], ups
    # It grew once and shrank afterwards: no oscillation.
    directions = [k for k in kinds if k in ("scale-up", "scale-down")]
    first_down = directions.index("scale-down")
    assert "scale-up" not in directions[first_down:], directions
    assert muster.processes("burst"), "the scheduler and the agent run"
    muster.run("down", "burst")
    assert muster.processes("burst") == []


def test_a_killed_agent_is_reported_and_restarted_and_dead_workers_are_replaced(muster):
    muster.json("up", "heal", "--workers", 2, "--python", muster.python)
    old = agent_pid(muster, "heal")
    assert pid_alive(old)
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: not pid_alive(old), message="the agent to die")

    # describe reports the dead agent and leaves it dead (read-only).
    view = muster.json("describe", "heal")["agent"]
    assert view["agent"] == "dead" and view["pid"] == old, view
    assert view["restarted_pid"] is None, view
    again = muster.json("describe", "heal")["agent"]
    assert again["agent"] == "dead" and again["pid"] == old and not pid_alive(old), again
    assert not any("restarted" in e["message"] for e in events(muster, "heal"))
    # An explicit command restarts it.
    muster.json("scale", "heal", 2)
    new = agent_pid(muster, "heal")
    assert new and new != old and pid_alive(new)
    table = muster.run("describe", "heal").stdout
    assert f"Agent:        running (pid {new}" in table, table
    assert any("restarted" in e["message"] for e in events(muster, "heal"))

    # A worker job killed outright is replaced by a new one.
    jobs = muster.home / "clusters" / "heal" / "jobs"
    pid = int((jobs / "heal-w0.pid").read_text())
    os.killpg(pid, signal.SIGKILL)

    def replaced():
        ws = muster.json("get", "workers", "heal")
        names = {w["name"] for w in ws if w["connected"]}
        return len(names) == 2 and "heal-w0" not in names and names

    names = wait_until(replaced, timeout=60, message="the dead worker to be replaced")
    assert "heal-w2" in names
    kinds = [e["kind"] for e in events(muster, "heal")]
    assert "died" in kinds and "launched" in kinds, kinds
    muster.run("down", "heal")
    assert muster.processes("heal") == []


def test_adapt_on_and_off_and_scale_is_refused_while_adapting(muster):
    muster.json("up", "knob", "--workers", 1, "--python", muster.python)
    out = muster.json("adapt", "knob", "--min", 2, "--max", 3)
    assert out["adapt"]["minimum"] == 2 and out["adapt"]["maximum"] == 3
    wait_until(
        lambda: len([w for w in muster.json("get", "workers", "knob") if w["connected"]]) == 2,
        timeout=60, message="growing to the new minimum",
    )
    refused = muster.run("scale", "knob", 5, check=False)
    assert refused.returncode == 2 and "adapt knob --off" in refused.stderr, refused.stderr
    bad = muster.run("adapt", "knob", "--min", 4, "--max", 3, check=False)
    assert bad.returncode == 2 and "adapt.minimum" in bad.stderr, bad.stderr

    off = muster.json("adapt", "knob", "--off")
    assert off["adapt"] is None and off["workers"] == 2
    muster.run("scale", "knob", 1)
    assert len(muster.json("get", "workers", "knob")) == 1
    assert "fixed, 1 worker jobs" in muster.run("describe", "knob").stdout
    muster.run("down", "knob")


def test_down_during_a_burst_leaves_no_agent_and_nothing_relaunches(muster):
    up = muster.json("up", "race", "--adapt", "--max", 6, "--python", muster.python)
    agent = agent_pid(muster, "race")
    client = connect(up["scheduler_address"], timeout=30)
    try:
        futures = client.map(slow_square, range(400))
        wait_until(lambda: connected(client) >= 2, timeout=60, message="growing")
        muster.run("down", "race")
    finally:
        client.close(timeout=5)
    del futures
    assert not pid_alive(agent)
    assert muster.processes("race") == []
    # Nothing comes back: the agent is gone and no worker was relaunched.
    time.sleep(3)
    assert muster.processes("race") == []
    assert muster.json("get", "clusters") == []


def test_idle_timeout_brings_the_cluster_down_only_after_the_work(muster):
    up = muster.json(
        "up", "nap", "--adapt", "--max", 2, "--idle-timeout", "4s", "--python", muster.python,
    )
    with connect(up["scheduler_address"], timeout=30) as client:
        # Busy for longer than the idle timeout: the cluster must stay.
        futures = client.map(slow_square, range(24))
        assert client.gather(futures) == [x * x for x in range(24)]
        assert [c["name"] for c in muster.json("get", "clusters")] == ["nap"]
        del futures
    wait_until(lambda: muster.json("get", "clusters") == [], timeout=60,
               message="the idle cluster to be brought down")
    wait_until(lambda: muster.processes("nap") == [], timeout=15,
               message="every process of the idle cluster to end")


def test_describes_decision_is_current_after_adapt_and_scale(muster):
    """`describe` shows the decision made under the cluster's current
    settings: never one made before an `adapt --off` or a `scale`, though
    the agent was sleeping a long adaptive interval when they came."""
    name = "current"
    muster.run("up", name, "--workers", 1, "--python", muster.python)
    muster.run("adapt", name, "--min", 1, "--max", 3, "--interval", "60s")

    def decision():
        return muster.json("describe", name)["agent"]["last_decision"] or ""

    wait_until(lambda: decision().startswith("target"), timeout=30,
               message="the adaptive policy's first decision")
    muster.run("adapt", name, "--off")
    # At once: no decision of the adaptive settings survives them.
    assert not decision().startswith("target"), decision()
    wait_until(lambda: decision().startswith("fixed size 1"), timeout=20,
               message="a decision under the fixed size, well before the 60 s interval")
    muster.run("scale", name, 2, "--timeout", "120s")
    # `scale` decided itself: the new size is shown at once.
    assert decision().startswith("fixed size 2"), decision()
    text = muster.run("describe", name).stdout
    assert "Decision:     fixed size 2" in text, text
    muster.run("down", name)


CRASHY = """
import os, sys
if os.path.exists({mark!r}):
    sys.exit("crashy: the test asked this worker to fail at start")
"""


def test_a_worker_that_keeps_dying_is_replaced_later_each_time(muster, tmp_path):
    """A crash loop (every replacement dies at start) is not retried at full
    speed: the first death is replaced at once, later ones after longer and
    longer waits; once a replacement connects, the cluster is whole again."""
    mods, mark = tmp_path / "mods", tmp_path / "fail-now"
    mods.mkdir()
    (mods / "crashy.py").write_text(CRASHY.format(mark=str(mark)))
    spec = tmp_path / "loop.yaml"
    spec.write_text(
        f"name: loop\nworkers: 1\nworker:\n  python: {muster.python}\n"
        f"  env: {{PYTHONPATH: {mods}}}\n  extra_args: [--preload, crashy]\n"
    )
    muster.json("up", "-f", spec)
    jobs = muster.home / "clusters" / "loop" / "jobs"
    mark.write_text("")
    os.killpg(int((jobs / "loop-w0.pid").read_text()), signal.SIGKILL)

    def started():
        # When each worker job was started, from its pid file (muster writes
        # it as it spawns the job), oldest first.
        return sorted(p.stat().st_mtime for p in jobs.glob("loop-w*.pid"))

    wait_until(lambda: len(started()) >= 6, timeout=120, message="five replacements")
    mark.unlink()
    times = started()
    gaps = [b - a for a, b in zip(times[1:], times[2:])]
    # Each replacement died at start (the preload), and was replaced later
    # each time than the one before.
    by_start = sorted(jobs.glob("loop-w*.pid"), key=lambda p: p.stat().st_mtime)
    for job in by_start[1:5]:
        log = muster.home / "clusters" / "loop" / "logs" / f"{job.stem}.log"
        assert "crashy: the test asked" in log.read_text(), log
    assert gaps[-1] > gaps[0] + 1.0, f"gaps between replacements: {gaps}"
    kinds = [(e["kind"], e["message"]) for e in events(muster, "loop")]
    assert any(k == "backoff" and "died in" in m for k, m in kinds), kinds

    # The loop ends: the next replacement connects and the cluster holds 1.
    def whole():
        ws = muster.json("get", "workers", "loop")
        return [w["name"] for w in ws if w["connected"]]

    wait_until(whole, timeout=120, message="a replacement to connect")
    muster.run("down", "loop")
    assert muster.processes("loop") == []
