"""A dask-jobqueue user's options ask the real SLURM for what dask-jobqueue
asks (issue 16). What SLURM granted is read back with `scontrol show job`,
what runs from /proc; muster's own view is not trusted. Under the Torque
commands too (PBS_ACCOUNT, the prologue)."""

import os
import re
import subprocess
import sys

import pytest

from batch import active, start_slurm, unique
from conftest import wait_until
from test_slurm import is_worker_command


@pytest.fixture(scope="module", autouse=True)
def slurm():
    start_slurm()


def write(tmp_path, name, backend, worker="", scheduler="{host: 127.0.0.1}", cores=1):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\n"
        f"backend: {backend}\n"
        f"scheduler: {scheduler}\n"
        f"worker: {{python: {sys.executable}, cores: {cores}{worker}}}\n"
        f"workers: 1\n"
    )
    return path


def granted(cluster):
    """`scontrol show job` of the cluster's first worker task, as a dict."""
    (array,) = {r[1] for r in active(cluster)}
    out = subprocess.run(["scontrol", "show", "job", "-o", array], capture_output=True,
                         text=True, check=True).stdout
    line = out.splitlines()[0]
    fields = {}
    for word in line.split():
        if "=" in word:
            k, v = word.split("=", 1)
            fields.setdefault(k, v)
    return fields


def worker_argv(cluster):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if (env.get(b"SLURM_JOB_NAME", b"").startswith(f"muster_{cluster}_".encode())
                and is_worker_command(argv)):
            return argv
    return None


def test_job_mem_skip_and_prologue_as_dask_jobqueue(muster, tmp_path):
    # job_mem 8GB: SLURM reads it as 8 GiB (dask-jobqueue passes it as written);
    # a skip written for dask-jobqueue's `-A` drops muster's --account; a
    # failing prologue line does not stop the job.
    name = unique("jm")
    spec = write(tmp_path, name,
                 "{kind: slurm, job_mem: 8GB, account: proj42, job_directives_skip: ['-A'], "
                 "job_script_prologue: ['module load python', 'echo prologue-went-on']}",
                 worker=", memory: 512MiB")
    up = muster.json("up", "-f", spec, "--timeout", "120s")
    assert up["connected_workers"] == 1, "the worker started despite the failing prologue line"
    job = granted(name)
    assert job["MinMemoryNode"] == "8G", job
    assert job["Account"] == "(null)", job
    muster.run("down", name)

    # job_mem 8000: megabytes, SLURM's default unit; the account asked for is granted.
    name = unique("jm")
    spec = write(tmp_path, name, "{kind: slurm, job_mem: 8000, account: proj42}",
                 worker=", memory: 512MiB")
    muster.json("up", "-f", spec, "--timeout", "120s")
    job = granted(name)
    assert job["MinMemoryNode"] == "8000M", job
    assert job["Account"] == "proj42", job
    muster.run("down", name)


def test_a_dask_jobqueue_config_is_read_as_dask_jobqueue_reads_it(muster, tmp_path):
    config = tmp_path / "dask"
    config.mkdir()
    (config / "jobqueue.yaml").write_text(
        "jobqueue:\n  slurm:\n"
        "    name: mywk\n    header-skip: ['-A']\n    account: proj9\n"
        "    walltime: UNLIMITED\n    memory: 4e9\n    death-timeout: 1.5\n"
    )
    muster.env["DASK_CONFIG"] = str(config)
    name = unique("cf")
    spec = write(tmp_path, name, "{kind: slurm}")
    muster.json("up", "-f", spec, "--timeout", "120s")
    job = granted(name)
    assert re.fullmatch(rf"muster_{name}_s[0-9a-f]{{8}}_mywk", job["JobName"]), job
    assert job["TimeLimit"] == "UNLIMITED", job
    assert job["Account"] == "(null)", job
    assert job["MinMemoryNode"] == f"{-(-4_000_000_000 // (1 << 20))}M", job
    argv = wait_until(lambda: worker_argv(name), message="the worker process")
    assert argv[argv.index("--death-timeout") + 1] == "1.5", argv
    muster.run("down", name)


def test_refusals_name_the_option_and_submit_nothing(muster, tmp_path):
    name = unique("rf")
    spec = write(tmp_path, name, "{kind: slurm}", worker=", memory: 1GiB, nanny: false, processes: 2", cores=2)
    r = muster.run("up", "-f", spec, "--timeout", "60s", check=False)
    assert r.returncode == 2 and "worker.nanny" in r.stderr, r.stderr
    spec = write(tmp_path, name, "{kind: slurm, job_directives_skip: ['-J']}", worker=", memory: 512MiB")
    r = muster.run("up", "-f", spec, "--timeout", "60s", check=False)
    assert r.returncode != 0 and "backend.job_directives_skip[0]" in r.stderr, r.stderr
    assert active(name) == []


def test_the_scheduler_uses_the_workers_interface(muster, tmp_path):
    # No scheduler host: like dask-jobqueue, the scheduler listens on the
    # workers' interface (here lo, so 127.0.0.1).
    name = unique("if")
    spec = write(tmp_path, name, "{kind: slurm}", worker=", memory: 512MiB, interface: lo",
                 scheduler="{placement: host}")
    up = muster.json("up", "-f", spec, "--timeout", "120s")
    assert up["scheduler_address"].startswith("tls://127.0.0.1:"), up  # TLS by default
    assert up["connected_workers"] == 1
    argv = wait_until(lambda: worker_argv(name), message="the worker process")
    assert argv[argv.index("--interface") + 1] == "lo"
    muster.run("down", name)


def test_pbs_account_falls_back_to_PBS_ACCOUNT_and_the_prologue_goes_on(muster, tmp_path):
    name = unique("pa")
    spec = write(tmp_path, name, "{kind: pbs, job_script_prologue: ['module load python']}",
                 worker=", memory: 512MiB")
    muster.env["PBS_ACCOUNT"] = "proj5"
    up = muster.json("up", "-f", spec, "--timeout", "120s")
    assert up["connected_workers"] == 1
    job = granted(name)
    assert job["Account"] == "proj5", job
    muster.run("down", name)
