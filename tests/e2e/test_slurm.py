"""End to end on a real SLURM (22.05, Debian packages) with real Dask: the CLI
submits workers as one job array, a Python client computes on them, the
cluster scales up and down (retired workers' array tasks, and only those,
leave the queue), comes down, and the queue holds nothing of it. Also the
scheduler running as a batch job, and a CLI killed during `up`."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from batch import active, queue, spec_file, start_slurm, unique
from conftest import compute, connect, refused, scheduler_workers, wait_until


@pytest.fixture(scope="module", autouse=True)
def slurm():
    start_slurm()


def arrays_of(workers):
    """The SLURM array ids behind muster worker ids such as demo-41_3."""
    return {w["name"].rsplit("-", 1)[1].split("_")[0] for w in workers}


def test_slurm_up_compute_scale_down(muster, tmp_path):
    name = unique("sl")
    up = muster.json("up", "-f", spec_file(tmp_path, name, "slurm", 4), "--timeout", "120s")
    assert (up["backend"], up["workers"], up["connected_workers"]) == ("slurm", 4, 4)
    address = up["scheduler_address"]

    workers = muster.json("get", "workers", name)
    assert [w["status"] for w in workers] == ["Running"] * 4
    # Four workers are ONE array submission: one array id, four tasks, in the queue itself.
    (array,) = arrays_of(workers)
    assert sorted(r[0] for r in active(name)) == [f"{array}_{i}" for i in range(4)]
    assert {r[1] for r in active(name)} == {array}
    # Dask worker names are muster's job ids.
    assert scheduler_workers(address) == sorted(w["name"] for w in workers)
    # `muster render` printed exactly the script SLURM holds for the array.
    rendered = muster.json("render", "-f", spec_file(tmp_path, name, "slurm", 4))["items"]
    held = subprocess.run(
        ["scontrol", "write", "batch_script", array, "-"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert rendered[1]["text"] == held

    compute(address, 2000)

    muster.run("scale", name, 8, "--timeout", "120s")
    workers8 = muster.json("get", "workers", name)
    assert len(workers8) == 8
    assert len(arrays_of(workers8)) == 2, "adding 4 workers is one more array submission"
    assert scheduler_workers(address) == sorted(w["name"] for w in workers8)

    muster.run("scale", name, 2, "--timeout", "120s")
    workers2 = muster.json("get", "workers", name)
    assert len(workers2) == 2
    kept = sorted(w["name"] for w in workers2)
    assert scheduler_workers(address) == kept
    # Exactly the removed array tasks left the queue.
    live = sorted(f"{name}-{r[0]}" for r in active(name))
    assert live == kept
    compute(address, 500)

    muster.run("down", name)
    assert active(name) == []
    assert muster.json("get", "clusters") == []
    assert muster.processes(name) == []
    # Idempotent.
    again = muster.run("down", name)
    assert "nothing to stop" in again.stdout


def test_scheduler_in_a_job(muster, tmp_path):
    name = unique("sj")
    spec = spec_file(tmp_path, name, "slurm", 2, extra=", placement: job")
    up = muster.json("up", "-f", spec, "--timeout", "120s")
    assert up["connected_workers"] == 2
    jobs = queue(name)
    running = {(r[0], r[2]) for r in jobs}
    # The scheduler is a batch job of its own, not a process of this session.
    sched = [r for r in jobs if "_" not in r[0]]
    assert len(sched) == 1 and sched[0][2] == "RUNNING", running
    # The only local process of the cluster is its agent (issue 5).
    agent = muster.json("describe", name)["agent"]
    assert agent["agent"] == "running", agent
    assert muster.processes(name) == [agent["pid"]]
    compute(up["scheduler_address"], 1000)

    # Found again by name: the registry points at the job.
    described = muster.run("describe", name).stdout
    assert f"{name}-{sched[0][0]}" in described
    assert muster.json("get", "clusters")[0]["scheduler_address"] == up["scheduler_address"]

    muster.run("scale", name, 3, "--timeout", "120s")
    assert len(scheduler_workers(up["scheduler_address"])) == 3
    muster.run("down", name)
    assert active(name) == []


def test_killed_cli_during_up_leaves_nothing_after_down(muster, tmp_path):
    name = unique("sk")
    proc = muster.popen("up", "-f", spec_file(tmp_path, name, "slurm", 4), "--timeout", "120s")
    try:
        # Kill it once its jobs are in the queue, before it has seen them connect.
        wait_until(lambda: active(name), timeout=60, interval=0.05, message="jobs in the queue")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert active(name), "the jobs outlive the killed CLI"
    muster.run("down", name)
    assert active(name) == []
    assert muster.processes(name) == []
    assert muster.json("get", "clusters") == []


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_up_rolls_back_the_queue(muster, tmp_path, sig, code):
    """Ctrl-C (or SIGTERM) once the array is queued: `up` cancels it and its
    scheduler, forgets the cluster and says so; squeue holds nothing of it."""
    name = unique("si")
    proc = muster.popen("up", "-f", spec_file(tmp_path, name, "slurm", 4), "--timeout", "120s")
    try:
        wait_until(lambda: active(name), timeout=60, interval=0.05, message="jobs in the queue")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "rolled back" in err, err
    assert active(name) == [], "squeue still runs or queues the cluster's jobs"
    assert muster.processes(name) == []
    assert muster.json("get", "clusters") == []


def test_invalid_batch_options_are_named_before_anything_runs(muster, tmp_path):
    name = unique("sv")
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"name: {name}\n"
        "backend: {kind: slurm, queue: 'debug; id', walltime: '$(id)', "
        "job_script_prologue: [\"a\\nb\"]}\n"
        "worker: {memory: 1GiB}\n"
    )
    r = muster.run("up", "-f", path, check=False)
    assert r.returncode == 2, r.stderr
    for field in ("backend.queue", "backend.walltime", "backend.job_script_prologue[0]"):
        assert field in r.stderr
    assert queue(name) == []


def test_render_prints_the_exact_job_script(muster, tmp_path):
    name = unique("sr")
    r = muster.run("render", "-f", spec_file(tmp_path, name, "slurm", 3))
    assert re.search(rf"#SBATCH --job-name=muster_{name}_s[0-9a-f]{{8}}_w\n", r.stdout), r.stdout
    assert "sbatch --parsable '--array=0-2'" in r.stdout
    assert queue(name) == []


def test_down_without_the_registry_finds_jobs_by_marker(muster, tmp_path):
    name = unique("sl")
    muster.run("up", "-f", spec_file(tmp_path, name, "slurm", 2), "--timeout", "120s")
    assert len(active(name)) == 2
    # Lose the registry: the queue and the OS still know the cluster. Its
    # agent goes first (it would write the record again at its next round).
    muster.kill_agent(name)
    import shutil
    shutil.rmtree(muster.home / "clusters" / name)
    # Listed from its scheduler's processes' markers and its jobs' names.
    listed = {c["name"]: c for c in muster.json("get", "clusters")}
    assert listed[name]["recorded"] is False and listed[name]["phase"] == "Unrecorded"
    assert listed[name]["backend"] == "slurm"
    # No --backend: `down` searches this host and every queue it can (here
    # SLURM's), so the array tasks go too (issue 10: it used to stop only
    # the local scheduler and say "is down").
    out = muster.run("down", name).stdout
    assert f"cluster {name} is down" in out, out
    assert active(name) == []
    assert muster.processes(name) == []
    gone = muster.run("down", name).stdout
    assert "not found" in gone and "the slurm queue (squeue)" in gone, gone


def test_a_job_failing_at_start_is_reported_with_reason_and_stderr(muster, tmp_path):
    name = unique("sf")
    path = tmp_path / "fail.yaml"
    path.write_text(
        f"name: {name}\n"
        "backend: {kind: slurm, job_script_prologue: ['echo no-such-module >&2', 'exit 3']}\n"
        "scheduler: {host: 127.0.0.1}\n"
        f"worker: {{python: {sys.executable}, memory: 512MiB}}\n"
        "workers: 2\n"
    )
    r = muster.run("up", "-f", path, "--timeout", "120s", check=False)
    assert r.returncode == 1, r.stderr
    assert "FAILED (NonZeroExitCode); stderr: " in r.stderr, r.stderr
    assert ".err" in r.stderr and "no-such-module" in r.stderr, r.stderr
    # The failed up cleaned up after itself.
    assert active(name) == []
    assert muster.json("get", "clusters") == []


def test_hostile_strings_reach_the_job_literally(muster, tmp_path):
    name = unique("sh")
    canary = tmp_path / "pwned"
    evil = f"$(touch {canary}) `touch {canary}` 'single' \"double\" ; touch {canary}"
    path = tmp_path / "hostile.yaml"
    path.write_text(
        f"name: {name}\n"
        "backend:\n"
        "  kind: slurm\n"
        "  job_extra_directives: ['--comment=$(id)`id`']\n"
        "scheduler: {host: 127.0.0.1}\n"
        "worker:\n"
        f"  python: {sys.executable}\n"
        "  memory: 512MiB\n"
        f"  env: {{EVIL: {json.dumps(evil)}}}\n"
        "workers: 1\n"
    )
    up = muster.json("up", "-f", path, "--timeout", "120s")

    with connect(up["scheduler_address"], timeout=30) as c:
        seen = list(c.run(lambda: os.environ["EVIL"]).values())
    assert seen == [evil]
    assert not canary.exists()
    # The directive reached SLURM as text, not as a command's output.
    array = muster.json("get", "workers", name)[0]["name"].rsplit("-", 1)[1].split("_")[0]
    shown = subprocess.run(
        ["scontrol", "show", "job", array], capture_output=True, text=True, check=True
    ).stdout
    assert "Comment=$(id)`id`" in shown
    muster.run("down", name)
    assert active(name) == []


def test_queued_jobs_cap_refuses_a_scale_up(muster, tmp_path):
    name = unique("sq")
    path = tmp_path / "cap.yaml"
    # Held jobs stay PENDING: a queue that does not drain.
    path.write_text(
        f"name: {name}\n"
        "backend: {kind: slurm, max_queued_jobs: 3, job_extra_directives: ['--hold']}\n"
        "scheduler: {host: 127.0.0.1}\n"
        f"worker: {{python: {sys.executable}, memory: 512MiB}}\n"
        "workers: 0\n"
    )
    muster.run("up", "-f", path, "--timeout", "60s")
    r = muster.run("scale", name, 2, "--timeout", "3s", check=False)
    assert r.returncode == 1 and "timed out" in r.stderr, r.stderr
    assert [r[2] for r in active(name)] == ["PENDING"]  # one array record, two tasks
    r = muster.run("scale", name, 4, check=False)
    assert r.returncode != 0
    assert "max_queued_jobs is 3: 2 worker jobs are queued already, adding 2 would exceed it" in r.stderr
    assert len(active(name)) == 1, "nothing more was submitted"
    muster.run("down", name)
    assert active(name) == []


def is_worker_command(argv):
    """`python -m distributed.cli.dask_worker ...`, or muster's launcher
    (`python -c <launcher> ...`, the default) and the forks it makes."""
    return "distributed.cli.dask_worker" in argv or (len(argv) > 2 and argv[1] == "-c" and "def warm_forkserver" in argv[2])


def worker_cmdlines(cluster):
    """The command lines of the cluster's running `dask worker` processes (from
    /proc, by the SLURM job name in their environment)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if env.get(b"SLURM_JOB_NAME", b"").startswith(f"muster_{cluster}_".encode()) and is_worker_command(argv):
            found.append(argv)
    return found


def test_host_scheduler_publishes_its_file_in_the_shared_log_directory(muster, tmp_path):
    """Compute nodes may not share $MUSTER_HOME: with the scheduler on the
    submit host, workers read its file from backend.log_directory, as they do
    for a job-placed scheduler (issue 10, item 7)."""
    name = unique("sf")
    shared = tmp_path / "shared"
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\n"
        f"backend: {{kind: slurm, log_directory: {shared}}}\n"
        f"scheduler: {{host: 127.0.0.1, placement: host}}\n"
        f"worker: {{python: {sys.executable}, memory: 512MiB, cores: 1}}\n"
        f"workers: 2\n"
    )
    up = muster.json("up", "-f", spec, "--timeout", "120s")
    assert up["connected_workers"] == 2
    published = shared / name / "scheduler.json"
    assert json.loads(published.read_text())["address"] == up["scheduler_address"]
    assert not list(muster.home.rglob("scheduler.json")), "nothing published under MUSTER_HOME"
    # What SLURM runs: the array's script and the workers' processes name the shared file.
    (array,) = {r[1] for r in active(name)}
    held = subprocess.run(["scontrol", "write", "batch_script", array, "-"],
                          capture_output=True, text=True, check=True).stdout
    assert str(published) in held and str(muster.home) not in held
    argvs = wait_until(lambda: worker_cmdlines(name), message="worker processes")
    for argv in argvs:
        assert argv[argv.index("--scheduler-file") + 1] == str(published), argv
    compute(up["scheduler_address"], 300)
    muster.run("down", name)
    assert active(name) == []


def test_tls_credentials_are_owner_only_files_the_job_script_names(muster, tmp_path):
    import stat
    from pathlib import Path

    name = unique("st")
    # The scheduler as a job too: both kinds of job script carry TLS.
    spec = spec_file(tmp_path, name, "slurm", 2, extra=", placement: job")
    up = muster.json("up", "-f", spec, "--timeout", "120s")
    address = up["scheduler_address"]
    assert address.startswith("tls://"), up
    compute(address, 500)

    tls = muster.home / "clusters" / name / "logs" / "tls"
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    assert {p.name for p in tls.iterdir()} == {
        "ca.pem", "scheduler.pem", "scheduler-key.pem", "worker.pem", "worker-key.pem"
    }
    for p in tls.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    # The scripts SLURM holds name the files; they never contain a key.
    arrays = {j[1] for j in active(name)}
    assert len(arrays) == 2, active(name)
    for array in arrays:
        held = subprocess.run(
            ["scontrol", "write", "batch_script", array, "-"],
            capture_output=True, text=True, check=True,
        ).stdout
        assert f"'--tls-ca-file' '{tls}/ca.pem'" in held, held
        assert "PRIVATE KEY" not in held and "BEGIN CERTIFICATE" not in held
    # Without the credentials, or in plain TCP: refused.
    for addr in (address, address.replace("tls://", "tcp://")):
        assert refused(addr), f"a client without credentials got in at {addr}"

    muster.run("down", name)
    assert active(name) == []
    assert not Path(up["tls"]["ca_file"]).exists()
    assert not tls.exists()
