"""The default worker layout (`worker.warm_start: true`): each worker job is
ONE interpreter, muster's launcher, that imports distributed, forks a warm
forkserver from itself and runs Dask's own nanny, whose worker process is a
fork of that server. These tests check, on local, SSH and SLURM, that the
guarantees of Dask's plain layout still hold, looking at /proc (never at
muster): the worker processes really are forks (no second interpreter); a
worker killed with SIGKILL and one over its memory limit are restarted by
their nanny; `scale` down stops exactly the retired jobs' processes and leaves
the others' untouched; `down` leaves no process."""

import os
import signal
import subprocess
import sys

import pytest

from batch import active, start_slurm, unique
from conftest import compute, connect, wait_until

HOSTS_DIR = os.path.join(os.path.dirname(__file__), "..", "services", "sshhosts")
SSH_STATE = os.environ.get("MUSTER_SSH_STATE", "/tmp/muster-sshhosts")


def proc_info(pid):
    """(environ dict, ppid, argv) of a live, non-zombie process, or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return {k.decode(): v.decode(errors="replace") for k, v in env.items()}, int(fields[1]), argv


def alive(pid):
    return proc_info(pid) is not None


def processes_by_job(belongs, pids=None):
    """{MUSTER_JOB: {pid, ...}} of live processes whose environment `belongs`."""
    jobs = {}
    for pid in pids if pids is not None else filter(str.isdigit, os.listdir("/proc")):
        info = proc_info(pid)
        if info and belongs(info[0]) and "MUSTER_JOB" in info[0]:
            jobs.setdefault(info[0]["MUSTER_JOB"], set()).add(int(pid))
    return jobs


def worker_pids(client):
    """{worker name: (address, pid)} as the scheduler and the workers say.
    A worker just killed is still listed until the scheduler notices; it
    cannot answer and is left out."""
    names = {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
    pids = client.run(os.getpid, on_error="ignore")
    return {names[a]: (a, pid) for a, pid in pids.items() if a in names}


def check_forked(job_pids, pid):
    """The worker process `pid` is a fork of its job's launcher: its parent is
    the warm forkserver, whose parent is the job's nanny process, all three in
    the job's process set, none of them a fresh `spawn` interpreter."""
    _, server, argv = proc_info(pid)
    assert server in job_pids and proc_info(server), (pid, server, job_pids)
    nanny = proc_info(server)[1]
    assert nanny in job_pids, (pid, server, nanny, job_pids)
    for p in (pid, server, nanny):
        text = " ".join(proc_info(p)[2])
        assert "spawn_main" not in text and "multiprocessing.forkserver import main" not in text, text
        assert "warm_forkserver" in text, f"{p} is not the launcher or a fork of it: {text[:200]}"
    return nanny


def check_restarts(client, name, memory_limit):
    """SIGKILL of worker `name`'s process, then a task over its memory limit:
    after each, the same nanny brings back a worker of that name with a new
    pid and the old pid is gone from /proc."""
    from distributed import wait as _  # noqa: F401  (distributed is importable)

    addr, victim = worker_pids(client)[name]
    os.kill(victim, signal.SIGKILL)

    def back(old_addr, old_pid):
        def check():
            now = worker_pids(client).get(name)
            return now if now and now[0] != old_addr and now[1] != old_pid and not alive(old_pid) else None

        return check

    addr2, pid2 = wait_until(back(addr, victim), timeout=90, message=f"the nanny to restart {name} after SIGKILL")

    def hog(n):
        import time

        block = b"\1" * n
        time.sleep(60)
        return len(block)

    future = client.submit(hog, memory_limit + 200 * 2**20, workers=[addr2], pure=False)
    addr3, pid3 = wait_until(back(addr2, pid2), timeout=90, message=f"the nanny to restart {name} over its memory limit")
    future.cancel()
    assert not alive(pid2) and alive(pid3)
    return pid3


def exercise(client, jobs_now, scale_to, memory_limit):
    """The common part: every worker forked, restarts (SIGKILL, memory), then
    `scale_to()` and exactly the retired jobs' processes are gone."""
    before = jobs_now()
    workers = worker_pids(client)
    assert workers and len(workers) == len(before), (workers, before)
    nannies = {}
    for name, (_, pid) in workers.items():
        job = next(j for j, pids in before.items() if pid in pids)
        nannies[name] = check_forked(before[job], pid)
    name = sorted(workers)[0]
    new_pid = check_restarts(client, name, memory_limit)
    after = jobs_now()
    job = next(j for j, pids in after.items() if new_pid in pids)
    assert nannies[name] in after[job], "the same nanny process restarted it"
    check_forked(after[job], new_pid)

    scale_to()
    kept = jobs_now()
    assert len(kept) == 1 and set(kept) < set(after), (kept, after)
    (job,) = kept
    assert kept[job] == after[job], "the kept job's processes are untouched"
    for gone in set(after) - set(kept):
        assert not any(alive(p) for p in after[gone]), f"{gone}'s processes outlive its retirement"


def test_local_default_layout_keeps_every_guarantee(muster, tmp_path):
    spec = tmp_path / "c.yaml"
    spec.write_text(f"name: warm\nworker: {{python: {muster.python}, memory: 512MiB}}\nworkers: 3\n")
    render = muster.run("render", "-f", spec).stdout
    assert "warm_forkserver" in render and "distributed.cli.dask_worker" not in render, render
    up = muster.json("up", "-f", spec)
    home = str(muster.home)

    def jobs_now():
        found = processes_by_job(lambda e: e.get("MUSTER_HOME") == home and e.get("MUSTER_CLUSTER") == "warm")
        found.pop("warm-scheduler", None)
        return found

    with connect(up["scheduler_address"]) as c:
        exercise(c, jobs_now, lambda: muster.run("scale", "warm", 1), 512 * 2**20)
    compute(up["scheduler_address"], 300)
    muster.run("down", "warm")
    assert muster.processes("warm") == []


def test_local_plain_layout_is_one_flag_away(muster, tmp_path):
    """`worker.warm_start: false` runs Dask's module as is: the nanny spawns
    a fresh interpreter."""
    spec = tmp_path / "c.yaml"
    spec.write_text(f"name: plain\nworker: {{python: {muster.python}, warm_start: false}}\nworkers: 1\n")
    up = muster.json("up", "-f", spec)
    with connect(up["scheduler_address"]) as c:
        ((_, pid),) = worker_pids(c).values()
        assert "spawn_main" in " ".join(proc_info(pid)[2])
    muster.run("down", "plain")
    assert muster.processes("plain") == []


def ssh_pids():
    pids = []
    for k in (1, 2, 3):
        out = subprocess.run(["ip", "netns", "pids", f"mh{k}"], capture_output=True, text=True)
        pids += out.stdout.split()
    return pids


@pytest.mark.skipif(os.geteuid() != 0, reason="SSH test hosts need root")
def test_ssh_default_layout_keeps_every_guarantee(muster, tmp_path):
    subprocess.run([os.path.join(HOSTS_DIR, "start.sh"), "3"], check=True, capture_output=True, timeout=120)
    name = unique("sw")
    spec = tmp_path / "c.yaml"
    spec.write_text(
        f"""
name: {name}
backend:
  kind: ssh
  hosts: [h1, h2, h3]
  ssh_config: {SSH_STATE}/ssh_config
  workers_per_host: 1
  connect_timeout: 3s
  command_timeout: 30s
  state_dir: {tmp_path / 'remote-state'}
worker: {{python: {sys.executable}, death_timeout: 20s, memory: 512MiB}}
workers: 3
"""
    )
    up = muster.json("up", "-f", spec)

    def jobs_now():
        found = processes_by_job(lambda e: e.get("MUSTER_CLUSTER") == name, ssh_pids())
        return {j: p for j, p in found.items() if "-scheduler" not in j}

    try:
        with connect(up["scheduler_address"]) as c:
            exercise(c, jobs_now, lambda: muster.run("scale", name, 1), 512 * 2**20)
        compute(up["scheduler_address"], 300)
    finally:
        muster.run("down", name)
    assert processes_by_job(lambda e: e.get("MUSTER_CLUSTER") == name, ssh_pids()) == {}
    assert not [p for p in ssh_pids() if (i := proc_info(p)) and i[0].get("MUSTER_CLUSTER") == name]


def test_slurm_default_layout_keeps_every_guarantee(muster, tmp_path):
    start_slurm()
    name = unique("sw")
    spec = tmp_path / "c.yaml"
    spec.write_text(
        f"name: {name}\nbackend: {{kind: slurm}}\nscheduler: {{host: 127.0.0.1}}\n"
        f"worker: {{python: {sys.executable}, memory: 512MiB, cores: 1}}\nworkers: 3\n"
    )
    up = muster.json("up", "-f", spec, "--timeout", "120s")

    def mine(env):
        return env.get("SLURM_JOB_NAME", "").startswith(f"muster_{name}_")

    try:
        with connect(up["scheduler_address"]) as c:
            exercise(c, lambda: {j: p for j, p in processes_by_job(mine).items() if "scheduler" not in j}, lambda: muster.run("scale", name, 1, "--timeout", "120s"),
                     512 * 2**20)
        compute(up["scheduler_address"], 300)
    finally:
        muster.run("down", name)
    assert active(name) == []
    wait_until(lambda: processes_by_job(mine) == {} or None, timeout=60, message="the jobs' processes to end")
    assert muster.processes(name) == []
