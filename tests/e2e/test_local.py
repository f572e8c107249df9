"""End to end on the local backend with real Dask: the CLI brings clusters up,
a Python client computes on them, they scale and come down, and nothing of
them remains."""

import json
import os
import signal
import subprocess
import sys

import pytest
from distributed import wait

from conftest import built, compute, connect, scheduler_workers, wait_until



def test_up_compute_scale_down_leaves_nothing(muster):
    up = muster.json("up", "demo", "--workers", 2, "--python", muster.python)
    assert up["name"] == "demo"
    assert up["backend"] == "local"
    assert up["workers"] == 2
    assert up["scheduler_address"].startswith("tls://127.0.0.1:")
    assert up["dashboard_url"].startswith("https://127.0.0.1:")
    address = up["scheduler_address"]
    assert scheduler_workers(address) == ["demo-w0", "demo-w1"]

    compute(address, 2000)

    workers = muster.json("get", "workers", "demo")
    assert [(w["name"], w["status"], w["connected"]) for w in workers] == [
        ("demo-w0", "Running", True),
        ("demo-w1", "Running", True),
    ]

    muster.run("scale", "demo", 4)
    assert scheduler_workers(address) == ["demo-w0", "demo-w1", "demo-w2", "demo-w3"]

    # Data held on the workers survives scaling down: the scheduler moves it
    # off the retired workers before muster stops them.
    with connect(address, timeout=30) as client:
        futures = client.map(lambda x: x + 1, range(200), pure=False)
        wait(futures)
        holders = {addr for addrs in dict(client.who_has(futures)).values() for addr in addrs}
        assert len(holders) > 1, "the data should be spread over several workers"
        muster.run("scale", "demo", 1)
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
        assert sum(client.gather(futures)) == sum(range(1, 201))

    assert scheduler_workers(address) == ["demo-w0"]
    remaining = muster.json("get", "workers", "demo")
    assert [w["name"] for w in remaining] == ["demo-w0"]
    compute(address, 500)

    clusters = muster.json("get", "clusters")
    assert [(c["name"], c["phase"], c["workers"]) for c in clusters] == [("demo", "Running", 1)]

    assert muster.processes("demo"), "the cluster's processes should be visible to the OS"
    muster.run("down", "demo")
    assert muster.processes("demo") == []
    assert muster.json("get", "clusters") == []
    # Idempotent.
    again = muster.run("down", "demo")
    assert "nothing to stop" in again.stdout


def test_kill_9_during_up_then_down_leaves_nothing(muster):
    proc = muster.popen("up", "crash", "--workers", 3, "--python", muster.python)
    # Kill the CLI once it has launched processes but before it has finished.
    wait_until(lambda: len(muster.processes("crash")) >= 2, message="processes to start")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert muster.processes("crash"), "the launched processes outlive the killed CLI"

    down = muster.run("down", "crash")
    assert "is down" in down.stdout
    assert muster.processes("crash") == []
    muster.run("down", "crash")


def test_jobs_of_a_launch_interrupted_before_recording_are_adopted(muster):
    """A CLI killed after starting workers but before writing their ids
    leaves the record's `launching` mark; the next command holding the
    cluster's lock (the agent's round or `scale`) adopts the live jobs
    instead of leaving them unmanaged.
    The killed CLI's state is recreated exactly: one live worker dropped
    from the record, the mark set."""
    up = muster.json("up", "lost", "--workers", 2, "--python", muster.python)
    path = muster.home / "clusters" / "lost" / "cluster.json"
    record = json.loads(path.read_text())
    dropped = record["workers"].pop()
    record["launching"] = True
    path.write_text(json.dumps(record))
    # No check of `get workers` here: the cluster's agent runs a round every
    # few seconds and may adopt the job first, which is just as right. Either
    # way, nothing new may be launched.

    muster.run("scale", "lost", 2)
    after = json.loads(path.read_text())
    assert sorted(after["workers"]) == sorted(record["workers"] + [dropped])
    assert "launching" not in after
    assert after["next_worker_index"] == record["next_worker_index"], "nothing new was launched"
    assert sorted(scheduler_workers(up["scheduler_address"])) == sorted(after["workers"])

    # The adopted job is managed like any other: scaled away, then down.
    muster.run("scale", "lost", 1)
    assert len(muster.json("get", "workers", "lost")) == 1
    muster.run("down", "lost")
    assert muster.processes("lost") == []


def test_down_finds_processes_even_without_the_registry(muster):
    muster.run("up", "orphan", "--workers", 1, "--python", muster.python)
    # Lose the registry entirely: down must find the processes from the OS.
    muster.kill_agent("orphan")  # its next round would write the record again
    subprocess.run(["rm", "-rf", str(muster.home / "clusters")], check=True)
    # Listed from its processes' markers, not hidden.
    (listed,) = muster.json("get", "clusters")
    assert (listed["name"], listed["recorded"], listed["phase"]) == ("orphan", False, "Unrecorded")
    assert muster.processes("orphan")
    down = muster.run("down", "orphan")
    assert "is down" in down.stdout
    assert muster.processes("orphan") == []


def test_processes_outlive_the_cli_in_their_own_session(muster):
    up = muster.json("up", "detached", "--workers", 1, "--python", muster.python)
    ours = os.getsid(0)
    for pid in muster.processes("detached"):
        assert os.getsid(pid) != ours
    # Still serving after the CLI has exited.
    assert scheduler_workers(up["scheduler_address"]) == ["detached-w0"]


@pytest.mark.parametrize(
    "args, field",
    [
        (["up", "Bad_Name"], "name"),
        (["up", "ok", "--workers", "0", "--processes", "3"], "worker.processes"),
        (["up", "ok", "--memory", "2XB"], "--memory"),
        (["up", "ok", "--backend", "mainframe"], "--backend"),
        (["up", "ok", "-f", "/nonexistent/spec.yaml"], "/nonexistent/spec.yaml"),
    ],
)
def test_bad_input_exits_2_names_the_field_and_launches_nothing(muster, args, field):
    proc = muster.run(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr
    assert muster.processes() == []
    assert muster.json("get", "clusters") == []


def test_every_unknown_key_is_named_at_once_and_nothing_starts(muster, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"name: unk\nwrokers: 2\nworker: {{python: {muster.python}, coress: 2, cores: 0}}\n"
    )
    proc = muster.run("up", "-f", bad, check=False)
    assert proc.returncode == 2, proc.stderr
    # Both unknown keys and the bad value, each by its full path, in one error.
    assert "wrokers: unknown field" in proc.stderr, proc.stderr
    assert "worker.coress: unknown field" in proc.stderr, proc.stderr
    assert "worker.cores" in proc.stderr, proc.stderr
    assert muster.processes() == []
    assert muster.json("get", "clusters") == []


def test_hostile_spec_values_are_rejected_or_inert(muster, tmp_path):
    marker = tmp_path / "pwned"
    spec = tmp_path / "c.yaml"
    spec.write_text(
        f"""
name: hostile
workers: 1
worker:
  python: {muster.python}
  env: {{NOTE: "$(touch {marker}) `touch {marker}`"}}
  local_directory: "{tmp_path}/dir $(touch {marker}) `touch {marker}`; touch {marker}"
  extra_args: ["--resources", "X=1"]
"""
    )
    muster.run("up", "-f", spec)
    muster.run("down", "hostile")
    assert not marker.exists(), "a spec value was interpreted by a shell"
    # The directory was created under its literal name.
    assert any(p.name.startswith("dir $(touch") for p in tmp_path.iterdir())

    bad = tmp_path / "bad.yaml"
    bad.write_text('name: x\nworker: {extra_args: ["a\\nb"], env: {"A;B": "1"}}\n')
    proc = muster.run("up", "-f", bad, check=False)
    assert proc.returncode == 2
    assert "worker.extra_args[0]" in proc.stderr and "worker.env.A;B" in proc.stderr

    # Flags muster sets itself are refused, each naming the field to use instead.
    dup = tmp_path / "dup.yaml"
    dup.write_text('name: dup\nworker: {extra_args: ["--nworkers", "4", "--memory-limit=1GB"]}\n')
    proc = muster.run("up", "-f", dup, check=False)
    assert proc.returncode == 2
    assert "worker.extra_args[0]" in proc.stderr and "worker.processes" in proc.stderr
    assert "worker.extra_args[2]" in proc.stderr and "worker.memory" in proc.stderr
    assert muster.json("get", "clusters") == []


def test_missing_dask_is_explained_before_anything_starts(muster, tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    proc = muster.run("up", "nodask", "--python", venv / "bin" / "python", check=False)
    assert proc.returncode == 1
    assert "cannot import distributed" in proc.stderr
    assert "pip install 'dask[distributed]'" in proc.stderr
    assert muster.processes() == []
    assert muster.json("get", "clusters") == []


def test_a_failing_worker_fails_up_with_its_log_and_cleans_up(muster):
    spec = muster.home.parent / "c.yaml"
    spec.write_text(
        f"name: broken\nworkers: 1\nworker: {{python: {muster.python}, extra_args: [--preload, no-such-module]}}\n"
    )
    proc = muster.run("up", "-f", spec, "--timeout", "60s", check=False)
    assert proc.returncode == 1
    assert "worker job broken-w0 failed" in proc.stderr
    assert "No module named 'no-such-module'" in proc.stderr  # the tail of the worker's log
    assert muster.processes() == []
    assert muster.json("get", "clusters") == []


def test_up_twice_refuses_and_leaves_the_first_alone(muster):
    first = muster.json("up", "twice", "--workers", 1, "--python", muster.python)
    proc = muster.run("up", "twice", "--python", muster.python, check=False)
    assert proc.returncode == 1
    assert "already exists" in proc.stderr
    assert scheduler_workers(first["scheduler_address"]) == ["twice-w0"]


def test_concurrent_scales_are_serialised(muster):
    up = muster.json("up", "race", "--workers", 1, "--python", muster.python)
    a = muster.popen("scale", "race", 3)
    b = muster.popen("scale", "race", 2)
    assert a.wait(timeout=120) == 0, a.stderr.read()
    assert b.wait(timeout=120) == 0, b.stderr.read()
    recorded = [w["name"] for w in muster.json("get", "workers", "race")]
    assert len(recorded) in (2, 3)
    assert sorted(scheduler_workers(up["scheduler_address"])) == sorted(recorded)
    assert len(set(recorded)) == len(recorded)


def test_inspection_commands(muster):
    muster.run("up", "look", "--workers", 2, "--python", muster.python)
    describe = muster.run("describe", "look").stdout
    for expected in ["Name:         look", "Phase:        Running", "API:          reachable", "look-w1"]:
        assert expected in describe
    full = muster.json("describe", "look")
    assert full["connected_workers"] == 2 and full["spec"]["workers"] == 2

    assert "Scheduler at" in muster.run("logs", "look").stdout
    tail = muster.run("logs", "look", "--worker", "w1", "--tail", "3").stdout
    assert len(tail.strip().splitlines()) <= 3
    assert "look-w1" in muster.run("logs", "look", "--worker", "w1").stdout
    assert muster.run("logs", "look", "--worker", "w9", check=False).returncode != 0

    wide = muster.run("get", "clusters", "-o", "wide").stdout
    assert "DASHBOARD" in wide and "look" in wide
    import yaml  # dask depends on PyYAML

    listed = yaml.safe_load(muster.run("get", "workers", "look", "-o", "yaml").stdout)
    assert (listed["schema"], listed["kind"]) == ("muster/v1", "WorkerList")
    assert [w["name"] for w in listed["items"]] == ["look-w0", "look-w1"]
    every = muster.json("logs", "look", "--all")
    assert [(i["job"], i["role"], i["status"]) for i in every] == [
        ("look-scheduler", "scheduler", "Running"), ("look-w0", "worker", "Running"), ("look-w1", "worker", "Running")]
    assert "Scheduler at" in every[0]["text"] and "Registered to" in every[2]["text"]


def test_render_shows_the_exact_commands_and_launches_nothing(muster):
    out = muster.run("render", "plan", "--workers", 2, "--python", "/opt/py dir/python").stdout
    assert "distributed.cli.dask_scheduler" in out
    # Workers start through muster's launcher (worker.warm_start, the default).
    assert out.count("def warm_forkserver") == 2
    assert "distributed.cli.dask_worker" not in out
    assert "'/opt/py dir/python'" in out
    assert "MUSTER_CLUSTER=plan" in out
    assert muster.processes() == []
    assert muster.json("get", "clusters") == []
    items = muster.json("render", "plan", "--workers", 1)["items"]
    assert [i["title"].split()[0] for i in items] == ["plan-scheduler", "plan-w0"]


def test_help_has_examples(muster):
    top = muster.run("--help").stdout
    assert "Examples:" in top and "muster up" in top
    assert "Examples:" in muster.run("up", "--help").stdout


def test_library_example(muster):
    example = built("library", "MUSTER_LIBRARY_EXAMPLE")
    proc = subprocess.run(
        [example, muster.python],
        env=muster.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "scheduler: tls://" in proc.stdout
    assert "workers connected after scale(3): 3" in proc.stdout
    assert muster.processes() == []
