"""Everyday accidents on the local backend with real Dask (issue 10 items 3-6):
Ctrl-C, SIGTERM and SIGKILL during `up` and `scale`, a lost registry, a dead
scheduler, a command waiting for another's lock, a taken port, and the exit
codes. Every "nothing is left" is checked in /proc and every size at the
scheduler itself, not by asking muster."""

import json
import os
import signal
import socket
import threading
import time

import pytest

from conftest import scheduler_workers, wait_until


def record(muster, name):
    path = muster.home / "clusters" / name / "cluster.json"
    return json.loads(path.read_text()) if path.exists() else None


def worker_pids(muster, name):
    """Live processes of the cluster's worker jobs, by job (from /proc)."""
    jobs = {}
    for pid in muster.processes(name):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(i.split(b"=", 1) for i in f.read().split(b"\0") if b"=" in i)
        except OSError:
            continue
        job = env.get(b"MUSTER_JOB", b"").decode()
        # The agent carries the cluster's marker but no job.
        if job and job != f"{name}-scheduler":
            jobs.setdefault(job, []).append(pid)
    return jobs


def job_pids(muster, name, job):
    out = []
    for pid in muster.processes(name):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"MUSTER_JOB={job}".encode() in f.read().split(b"\0"):
                    out.append(pid)
        except OSError:
            pass
    return out


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_up_rolls_back_and_says_so(muster, sig, code):
    name = f"int{code}"
    proc = muster.popen("up", name, "--workers", 3, "--python", muster.python)
    # Once the scheduler and a worker run, but before `up` has finished.
    wait_until(lambda: len(muster.processes(name)) >= 2, message="processes to start")
    assert proc.poll() is None, "up finished before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"interrupted by {signal.Signals(sig).name}" in err and "rolled back" in err, err
    assert muster.processes(name) == [], "nothing of the cluster may run after the rollback"
    assert record(muster, name) is None
    assert muster.json("get", "clusters") == []
    # The name is free again: a new `up` works at once.
    up = muster.json("up", name, "--workers", 1, "--python", muster.python)
    assert scheduler_workers(up["scheduler_address"]) == [f"{name}-w0"]
    muster.run("down", name)


def test_after_a_killed_up_the_next_commands_say_what_to_run(muster):
    name = "halfway"
    proc = muster.popen("up", name, "--workers", 3, "--python", muster.python)
    wait_until(lambda: len(muster.processes(name)) >= 2, message="processes to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert record(muster, name)["phase"] == "starting"  # the internal record
    again = muster.run("up", name, "--python", muster.python, check=False)
    assert again.returncode == 1
    assert "half-started" in again.stderr and f"muster down {name}" in again.stderr, again.stderr
    scale = muster.run("scale", name, 1, check=False)
    assert scale.returncode == 1
    assert f"muster down {name}" in scale.stderr, scale.stderr
    listed = {c["name"]: c for c in muster.json("get", "clusters")}
    assert listed[name]["phase"] == "Starting"
    muster.run("down", name)
    assert muster.processes(name) == []


def test_sigterm_during_scale_keeps_a_consistent_record(muster):
    name = "grow"
    up = muster.json("up", name, "--workers", 1, "--python", muster.python)
    proc = muster.popen("scale", name, 4)
    wait_until(lambda: len(worker_pids(muster, name)) >= 2, message="a new worker to start")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "keeps the new size, 4 worker jobs" in err, err
    # The agent finishes the change: 4 worker jobs, each the scheduler's.
    wait_until(lambda: len(scheduler_workers(up["scheduler_address"])) == 4, timeout=90,
               interval=1, message="the agent to finish growing to 4")
    rec = record(muster, name)
    assert rec["spec"]["workers"] == 4
    assert sorted(rec["workers"]) == scheduler_workers(up["scheduler_address"])
    assert sorted(worker_pids(muster, name)) == sorted(rec["workers"])
    muster.run("down", name)


def test_a_scale_killed_while_retiring_is_not_undone(muster):
    name = "shrink"
    up = muster.json("up", name, "--workers", 4, "--python", muster.python)
    before = record(muster, name)["next_worker_index"]
    proc = muster.popen("scale", name, 1)
    wait_until(lambda: len(scheduler_workers(up["scheduler_address"])) < 4, timeout=60,
               interval=0.2, message="a worker to be retired")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # The agent's rounds (every few seconds) finish the shrink and never
    # relaunch what was being removed.
    original = set(record(muster, name)["workers"]) if record(muster, name) else set()
    original |= {f"{name}-w{i}" for i in range(4)}
    jobs_seen, counts = set(), []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        jobs = worker_pids(muster, name)
        jobs_seen |= set(jobs)
        counts.append(len(jobs))
        if counts[-1] == 1 and len(scheduler_workers(up["scheduler_address"])) == 1:
            break
        time.sleep(0.5)
    assert counts[-1] == 1, counts
    time.sleep(6)  # more agent rounds: still one, nothing new launched
    jobs_seen |= set(worker_pids(muster, name))
    assert len(worker_pids(muster, name)) == 1
    assert jobs_seen <= original, f"workers were relaunched: {sorted(jobs_seen - original)}"
    assert record(muster, name)["next_worker_index"] == before
    muster.run("down", name)


def test_a_lost_registry_hides_nothing(muster):
    muster.run("up", "lost1", "--workers", 1, "--python", muster.python)
    muster.run("up", "kept", "--workers", 1, "--python", muster.python)
    import shutil
    muster.kill_agent("lost1")  # its next round would write the record again
    shutil.rmtree(muster.home / "clusters" / "lost1")
    listed = {c["name"]: c for c in muster.json("get", "clusters")}
    assert listed["lost1"]["recorded"] is False and listed["lost1"]["phase"] == "Unrecorded"
    assert sorted(listed["lost1"]["found_jobs"]) == ["lost1-scheduler", "lost1-w0"]
    assert listed["kept"]["recorded"] is True
    table = muster.run("get", "clusters").stdout
    assert "lost1" in table and "without a registry record" in table
    names = muster.run("get", "clusters", "-o", "name").stdout.split()
    assert sorted(names) == ["cluster/kept", "cluster/lost1"]
    down = muster.run("down", "--all")
    assert "found cluster lost1 without a registry record (2 jobs running on this host" in down.stderr, down.stderr
    assert muster.processes() == []
    assert muster.json("get", "clusters") == []


def test_down_of_an_unknown_name_says_where_it_looked(muster):
    r = muster.run("down", "nosuch")
    assert "not found" in r.stdout and "searched this host's processes" in r.stdout, r.stdout


def test_a_dead_scheduler_is_shown_and_scale_refuses(muster):
    name = "headless"
    up = muster.json("up", name, "--workers", 1, "--python", muster.python)
    sched = job_pids(muster, name, f"{name}-scheduler")
    assert sched
    for pid in sched:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: muster.json("get", "clusters")[0]["phase"] == "Failed", timeout=30,
               interval=0.5, message="the phase to show the dead scheduler")
    desc = muster.json("describe", name)
    assert desc["phase"] == "Failed" and desc["scheduler"]["job"] == f"{name}-scheduler"
    assert desc["scheduler"]["status"] in ("Failed", "Unknown", "Finished")
    r = muster.run("scale", name, 3, check=False)
    assert r.returncode == 1 and "scheduler job" in r.stderr and "nothing was changed" in r.stderr
    assert record(muster, name)["spec"]["workers"] == 1
    muster.run("down", name)
    assert muster.processes(name) == []
    del up


def test_a_command_waiting_for_the_lock_says_who_holds_it(muster):
    name = "busy"
    up = muster.popen("up", name, "--workers", 2, "--python", muster.python)
    wait_until(lambda: muster.processes(name), message="up to be under way")
    r = muster.run("scale", name, 1, check=False, timeout=180)
    assert up.wait(timeout=120) == 0, up.stderr.read()
    assert f"waiting for cluster {name}'s lock, held by pid {up.pid}" in r.stderr, r.stderr
    assert f"muster up {name}" in r.stderr or f"up {name}" in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr
    muster.run("down", name)


def test_a_taken_port_is_named_with_its_field(muster, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        spec = tmp_path / "c.yaml"
        spec.write_text(
            f"name: ported\nworkers: 1\nworker: {{python: {muster.python}}}\n"
            f"scheduler: {{dashboard_port: {port}}}\n"
        )
        r = muster.run("up", "-f", spec, check=False)
    assert r.returncode == 2, r.stderr
    assert f"scheduler.dashboard_port: port {port} on 127.0.0.1 is already in use" in r.stderr
    assert muster.processes() == []


def test_exit_codes_follow_one_rule(muster):
    for args in (["get", "workers", "nosuch"], ["describe", "nosuch"], ["scale", "nosuch", 2],
                 ["logs", "nosuch"], ["events", "nosuch"], ["up", "Bad_Name"]):
        r = muster.run(*args, check=False)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert muster.run("get", "nope", check=False).returncode == 2  # clap usage
    assert muster.run("down", "nosuch").returncode == 0


class Collected:
    """Everything a running command prints, read as it comes (so a test
    waits for what it expects instead of sleeping and hoping)."""

    def __init__(self, proc):
        self.proc, self.text = proc, ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.text += line

    def interrupt(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)


def test_kubectl_habits_follow_and_watch(muster):
    name = "habits"
    muster.run("up", name, "--workers", 1, "--python", muster.python)
    assert muster.run("get", "workers", name, "-o", "name").stdout == f"worker/{name}-w0\n"
    table = muster.run("get", "clusters").stdout
    assert "READY" in table and " 1/1 " in table, table
    watch = Collected(muster.popen("get", "clusters", "-w"))
    follow = Collected(muster.popen("logs", name, "-f"))  # the scheduler's log, as it grows
    wait_until(lambda: " 1/1 " in watch.text, timeout=60, message="the watch's first listing")
    muster.run("scale", name, 2)
    # The watch prints the listing again when READY goes to 2/2; the
    # followed log shows the worker that registered after it started.
    wait_until(lambda: " 2/2 " in watch.text, timeout=60, message="2/2 in the watch")
    wait_until(lambda: f"{name}-w1" in follow.text, timeout=60, message="the new worker in the followed log")
    for running in (watch, follow):
        running.interrupt()
    # The user's scale is in the timeline, beside the rounds' own events.
    kinds = [(e["kind"], e["message"]) for e in muster.json("events", name)]
    assert ("scale", "muster scale: 1 -> 2 worker jobs (done)") in kinds, kinds
    muster.run("down", name)
