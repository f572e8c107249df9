"""dask-muster's dask-jobqueue drop-ins on the real test SLURM (and its
Torque-compatible PBS commands): dask-jobqueue example programs with only the
import changed compute; job_script() is muster render's text and what SLURM
actually received; parameters muster cannot honour raise, naming them."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, unique, wait_until

sys.path.insert(0, str(REPO / "tests" / "e2e"))
EXAMPLES = Path(__file__).parent / "examples"


@pytest.fixture(scope="module", autouse=True)
def slurm():
    import batch  # tests/e2e/batch.py: the same real SLURM the e2e tests start

    batch.start_slurm()


def squeue(prefix):
    out = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%i|%T|%j"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|") for line in out.splitlines() if line.split("|")[2].startswith(prefix)]


def live(prefix):
    return [r for r in squeue(prefix) if r[1] in ("PENDING", "RUNNING", "CONFIGURING")]


def migrated(example):
    """The example's text with only its import line switched to dask_muster."""
    text = (EXAMPLES / example).read_text()
    new = text.replace("from dask_jobqueue import", "from dask_muster import")
    changed = [(a, b) for a, b in zip(text.splitlines(), new.splitlines()) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("from dask_jobqueue import"), changed
    return new


@pytest.mark.parametrize("example", ["jobqueue_slurm.py", "jobqueue_pbs.py"])
def test_a_dask_jobqueue_example_with_only_the_import_changed_computes(home, example, tmp_path):
    program = tmp_path / example
    program.write_text(migrated(example))
    p = subprocess.run([sys.executable, str(program)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "RESULT 2664667000" in p.stdout, p.stdout
    name = re.search(r"muster_([a-z0-9-]+)_", p.stdout).group(1)
    # close() brought it down: nothing of it queued or running, no process, no record.
    wait_until(lambda: not live(f"muster_{name}_"), timeout=30, message="its jobs to leave the queue")
    assert home.processes(name) == [] and home.clusters() == []


def test_job_script_is_muster_render_and_what_slurm_received(home, tmp_path):
    from dask_muster import SLURMCluster

    name = unique("js")
    with SLURMCluster(name=name, queue="debug", cores=1, processes=1, memory="512MiB",
                      walltime="00:05:00", job_script_prologue=["echo prologue"]) as cluster:
        script = cluster.job_script()
        spec = tmp_path / "spec.yaml"
        spec.write_text(json.dumps(dict(cluster._spec, workers=1)))
        rendered = json.loads(home.muster("render", "-f", spec, "-o", "json").stdout)["items"]
        assert script in [i["text"] for i in rendered]
        assert "#SBATCH --partition=debug" in script and "echo prologue" in script
        cluster.scale(1)
        (job,) = [r[0] for r in live(f"muster_{name}_")]
        submitted = subprocess.run(["scontrol", "write", "batch_script", job.split("_")[0], "-"],
                                   capture_output=True, text=True, check=True).stdout
        assert submitted == script
    assert not live(f"muster_{name}_")


def test_jobqueue_config_defaults_apply_and_unsupported_parameters_raise(home):
    import dask.config

    from dask_muster import PBSCluster, SLURMCluster

    with pytest.raises(ValueError, match="cores= and memory= are required"):
        SLURMCluster(queue="debug")
    with pytest.raises(ValueError, match="security=True"):
        SLURMCluster(cores=1, memory="1GB", security=True)
    with pytest.raises(ValueError, match="worker_command='my.worker'"):
        SLURMCluster(cores=1, memory="1GB", worker_command="my.worker")
    with pytest.raises(TypeError, match="'resource_spec'"):
        SLURMCluster(cores=1, memory="1GB", resource_spec="select=1")
    with pytest.raises(TypeError, match="'job_mem'"):
        PBSCluster(cores=1, memory="1GB", job_mem="1GB")
    with pytest.raises(ValueError, match=r"scheduler_options\['protocol'\]"):
        SLURMCluster(cores=1, memory="1GB", scheduler_options={"protocol": "ucx"})
    assert home.clusters() == [] and home.processes() == []
    name = unique("cf")
    with dask.config.set({"jobqueue.slurm.cores": 2, "jobqueue.slurm.memory": "700MiB",
                          "jobqueue.slurm.queue": "debug", "jobqueue.slurm.job-script-prologue": ["echo from-config"]}):
        with SLURMCluster(name=name, processes=1) as cluster:
            script = cluster.job_script()
    assert "echo from-config" in script and "--cpus-per-task=2" in script and "#SBATCH --time=00:30:00" in script


def test_get_logs_includes_failed_and_queued_batch_jobs(home):
    """Jobs that never reach the scheduler still show in get_logs(), with
    their state and their own output."""
    from dask_muster import SLURMCluster
    from dask_muster._cli import MusterError

    name = unique("fl")
    with SLURMCluster(name=name, queue="debug", cores=1, processes=1, memory="512MiB", timeout="60s",
                      job_script_prologue=["echo about to fail >&2; exit 3"]) as cluster:
        with pytest.raises(MusterError, match="about to fail"):
            cluster.scale(1)
        seen = {}

        def failed_job_logged():
            logs = cluster.get_logs()
            jobs = {k: v for k, v in logs.items() if k.startswith(f"{name}-") and k != f"{name}-scheduler"}
            seen.update(jobs)
            return any(": Failed" in v.splitlines()[0] and "about to fail" in v for v in jobs.values())

        # The agent keeps replacing the failing job, so some job is always failed or queued.
        wait_until(failed_job_logged, timeout=60, interval=0.5, message=f"a failed job in get_logs ({seen})")
        assert all(v.startswith("[muster] worker job") for v in seen.values())
    assert not live(f"muster_{name}_")
