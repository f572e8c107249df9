"""Benchmark: scaling a Dask cluster on the real SLURM from 0 to 8 and from 0
to 32 connected workers, muster against dask-jobqueue's SLURMCluster, in one
run on the same SLURM.

  muster        `muster up --workers 0` (scheduler on this host), then the wall
                time of `muster scale NAME n`, which returns once the scheduler
                reports n workers;
  dask-jobqueue SLURMCluster with the same worker shape (1 core, 512MiB, one
                process, nanny), timed from `cluster.scale(n)` until
                `client.wait_for_workers(n)` returns.

Then the same from nothing: `muster up --workers N` against a fresh Python
interpreter creating a SLURMCluster, scaling it and waiting (the wait a user
sees when starting work).

Each measurement uses a fresh cluster (reusing one SLURMCluster after
scale(0) lost a worker to a name clash in dask-jobqueue here), and they
alternate muster / dask-jobqueue per N so machine noise hits both alike.

Both submit through a counting `sbatch` shim first on PATH, so the number of
submissions each makes is counted, not inferred. Prints figures and ratios;
asserts nothing about time.

With --start-method fork both tools set Dask's
distributed.worker.multiprocessing-method to fork (muster through worker.env,
dask-jobqueue through job_script_prologue): the nanny then forks its worker
instead of starting a fresh interpreter, which halves start-up here.

With --old-bin, both muster measurements are also made with an older muster
(its own MUSTER_HOME), next to MUSTER_BIN's in every round: both against
dask-jobqueue, and muster/old as the median of the per-round ratios.

Usage: python bench/slurm_scale.py [--rounds N] [--start-method spawn|fork] [--no-up] [--old-bin PATH]
       (MUSTER_BIN, MUSTER_PYTHON from scripts/setup.sh;
       starts SLURM with tests/services/slurm/start.sh)
"""

import argparse
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import artifacts  # noqa: E402  (where cargo put the build)

MUSTER = os.environ.get("MUSTER_BIN") or artifacts.build()["muster"]
PYTHON = os.environ.get("MUSTER_PYTHON", sys.executable)
# The test SLURM's own configuration (tests/services/slurm/env.sh), for muster,
# dask-jobqueue and the sbatch/squeue calls here alike.
SLURM_DIR = Path(os.environ.get("MUSTER_SLURM_DIR", "/run/muster-test-slurm"))
os.environ["SLURM_CONF"] = str(SLURM_DIR / "slurm.conf")
SIZES = (8, 32)
# Dask's multiprocessing method for the nanny's worker process, applied to
# both tools alike (--start-method); Dask's default is spawn.
START = {"method": "spawn"}
START_ENV = "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"


def muster_worker():
    env = f", env: {{{START_ENV}: {START['method']}}}" if START["method"] != "spawn" else ""
    return f"worker: {{python: {PYTHON}, cores: 1, memory: 512MiB{env}}}"


def jobqueue_prologue():
    return [f"export {START_ENV}={START['method']}"] if START["method"] != "spawn" else []
SHIM = """#!/bin/sh
echo x >> "{counter}"
exec {sbatch} "$@"
"""


def active_jobs(prefix):
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i|%T|%j"], capture_output=True, text=True, check=True
    ).stdout
    return [l for l in out.splitlines() if l.split("|", 2)[2].startswith(prefix)]


def wait_no_jobs(prefix, timeout=120):
    deadline = time.monotonic() + timeout
    while active_jobs(prefix):
        if time.monotonic() > deadline:
            raise SystemExit(f"jobs {prefix}* did not leave the queue")
        time.sleep(0.2)


class Counter:
    def __init__(self, path):
        self.path = path

    def read(self):
        try:
            return len(self.path.read_text().splitlines())
        except FileNotFoundError:
            return 0


def bench_muster(tmp, env, counter, n, muster=MUSTER, label="muster"):
    """A fresh muster cluster with 0 workers; times `muster scale NAME n`."""
    name = f"bm{uuid.uuid4().hex[:5]}"
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\nbackend: {{kind: slurm}}\nscheduler: {{host: 127.0.0.1}}\n"
        f"{muster_worker()}\nworkers: 0\n"
    )
    run = lambda *a: subprocess.run([muster, *a], env=env, check=True, capture_output=True, text=True)
    run("up", "-f", str(spec), "--timeout", "5m")
    try:
        before = counter.read()
        t0 = time.perf_counter()
        run("scale", name, str(n), "--timeout", "5m")
        elapsed = time.perf_counter() - t0
        calls = counter.read() - before
    finally:
        run("down", name)
    wait_no_jobs(f"muster_{name}_")
    print(f"  {label:<13} 0 -> {n:2d}: {elapsed:6.2f} s, {calls} submission(s)", flush=True)
    return elapsed, calls


def bench_jobqueue(tmp, counter, n):
    """A fresh SLURMCluster; times scale(n) + client.wait_for_workers(n)."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    job_name = f"jq{uuid.uuid4().hex[:5]}"
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="512MiB",
        python=PYTHON,
        job_name=job_name,
        log_directory=str(tmp / "jq-logs"),
        scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
        death_timeout=60,
        job_script_prologue=jobqueue_prologue(),
    )
    client = Client(cluster)
    try:
        before = counter.read()
        t0 = time.perf_counter()
        cluster.scale(n)
        client.wait_for_workers(n, timeout=300)
        elapsed = time.perf_counter() - t0
        calls = counter.read() - before
    finally:
        client.close()
        cluster.close()
    wait_no_jobs(job_name)
    print(f"  dask-jobqueue 0 -> {n:2d}: {elapsed:6.2f} s, {calls} submission(s)", flush=True)
    return elapsed, calls


JOBQUEUE_UP = """
import sys
from dask_jobqueue import SLURMCluster
from distributed import Client
cluster = SLURMCluster(cores=1, processes=1, memory="512MiB", python=sys.executable,
                       job_name=sys.argv[2], log_directory=sys.argv[3], death_timeout=60,
                       job_script_prologue=sys.argv[4:],
                       scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"})
client = Client(cluster)
cluster.scale(int(sys.argv[1]))
client.wait_for_workers(int(sys.argv[1]), timeout=300)
print("READY", flush=True)
sys.stdin.readline()
client.close(); cluster.close()
"""


def up_muster(tmp, env, counter, n, muster=MUSTER, label="muster up"):
    """`muster up --workers n` from nothing: the scheduler and the workers start together."""
    name = f"um{uuid.uuid4().hex[:5]}"
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\nbackend: {{kind: slurm}}\nscheduler: {{host: 127.0.0.1}}\n"
        f"{muster_worker()}\nworkers: {n}\n"
    )
    before = counter.read()
    t0 = time.perf_counter()
    try:
        subprocess.run([muster, "up", "-f", str(spec), "--timeout", "5m"], env=env, check=True,
                       capture_output=True)
        elapsed = time.perf_counter() - t0
        calls = counter.read() - before
    finally:
        subprocess.run([muster, "down", name], env=env, check=True, capture_output=True)
    wait_no_jobs(f"muster_{name}_")
    print(f"  {label:<16} {n:2d}: {elapsed:6.2f} s, {calls} submission(s)", flush=True)
    return elapsed, calls


def up_jobqueue(tmp, counter, n):
    """A fresh interpreter: SLURMCluster + scale(n) + wait_for_workers(n)."""
    job_name = f"uj{uuid.uuid4().hex[:5]}"
    before = counter.read()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, "-c", JOBQUEUE_UP, str(n), job_name, str(tmp / "jq-logs"), *jobqueue_prologue()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - t0
    calls = counter.read() - before
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=120)
    wait_no_jobs(job_name)
    if line.strip() != "READY":
        raise SystemExit("dask-jobqueue did not come up")
    print(f"  dask-jobqueue up {n:2d}: {elapsed:6.2f} s, {calls} submission(s)", flush=True)
    return elapsed, calls


def probe_start_latency(n):
    """SLURM alone: seconds until n `sleep` jobs are RUNNING, as one array
    and as n single submissions (the floor under each tool's figure)."""
    def running(name):
        out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%T"], capture_output=True, text=True).stdout
        return out.split().count("RUNNING")

    figures = {}
    for kind in ("array", "singles"):
        name = f"probe{uuid.uuid4().hex[:5]}"
        t0 = time.perf_counter()
        base = ["sbatch", "--parsable", "-J", name, "-o", "/dev/null", "--mem=10M"]
        if kind == "array":
            subprocess.run([*base, f"--array=0-{n - 1}", "--wrap", "sleep 60"], check=True, capture_output=True)
        else:
            for _ in range(n):
                subprocess.run([*base, "--wrap", "sleep 60"], check=True, capture_output=True)
        while running(name) < n:
            time.sleep(0.02)
        figures[kind] = time.perf_counter() - t0
        subprocess.run(["scancel", "-n", name], check=True)
        wait_no_jobs(name)
    print(f"  SLURM alone, {n} sleep jobs RUNNING: array {figures['array']:.2f} s, "
          f"{n} single submissions {figures['singles']:.2f} s", flush=True)
    return figures


def per_round(new, old):
    """Median over the rounds of new's time / old's in the same round."""
    return statistics.median(a / b for (a, _), (b, _) in zip(new, old))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="measurements per tool and N (medians)")
    parser.add_argument("--start-method", choices=["spawn", "fork"], default="spawn",
                        help="Dask's worker multiprocessing method, for both tools (default: Dask's, spawn)")
    parser.add_argument("--no-up", action="store_true", help="skip the from-nothing (up) comparison")
    parser.add_argument("--old-bin", help="also time muster with this (older) muster, "
                        "alternating with MUSTER_BIN in every round")
    args = parser.parse_args()
    START["method"] = args.start_method
    subprocess.run([str(REPO / "tests/services/slurm/start.sh")], check=True, capture_output=True)
    tmp = Path(tempfile.mkdtemp(prefix="muster-slurm-bench-"))
    try:
        counter = Counter(tmp / "sbatch-calls")
        shim_dir = tmp / "bin"
        shim_dir.mkdir()
        shim = shim_dir / "sbatch"
        shim.write_text(SHIM.format(counter=counter.path, sbatch=shutil.which("sbatch")))
        shim.chmod(0o755)
        os.environ["PATH"] = f"{shim_dir}:{os.environ['PATH']}"
        env = {**os.environ, "MUSTER_HOME": str(tmp / "home")}
        old_env = {**os.environ, "MUSTER_HOME": str(tmp / "home-old")}
        old = args.old_bin

        print(f"scaling from 0 workers to N connected workers on the real SLURM "
              f"(worker start method {START['method']} for both tools)")
        runs_m = {n: [] for n in SIZES}
        runs_j = {n: [] for n in SIZES}
        runs_o = {n: [] for n in SIZES}
        floor = {n: probe_start_latency(n) for n in SIZES}
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            for n in SIZES:
                steps = [lambda: runs_m[n].append(bench_muster(tmp, env, counter, n))]
                if old:
                    steps.append(lambda: runs_o[n].append(
                        bench_muster(tmp, old_env, counter, n, old, "--old-bin")))
                steps.append(lambda: runs_j[n].append(bench_jobqueue(tmp, counter, n)))
                # Alternate who goes first so drift hits all alike.
                for step in steps if r % 2 == 0 else steps[::-1]:
                    step()
        med = lambda runs: (statistics.median(t for t, _ in runs), max(c for _, c in runs))
        m = {n: med(runs_m[n]) for n in SIZES}
        j = {n: med(runs_j[n]) for n in SIZES}
        o = {n: med(runs_o[n]) for n in SIZES} if old else {}
        mo = {n: per_round(runs_m[n], runs_o[n]) for n in SIZES} if old else {}
        old_head = f"  {'old s':>9}  {'old/jobqueue':>12}  {'muster/old':>10}  {'old calls':>9}" if old else ""
        print()
        print(f"medians over {args.rounds} round(s)" + ("; muster/old: median of per-round ratios" if old else ""))
        print(f"{'N':>3}  {'muster s':>9}  {'jobqueue s':>10}  {'muster/jobqueue':>15}  {'sbatch calls m/jq':>17}"
              + old_head)
        for n in SIZES:
            print(
                f"{n:>3}  {m[n][0]:>9.2f}  {j[n][0]:>10.2f}  {m[n][0] / j[n][0]:>15.2f}  "
                f"{m[n][1]:>8} / {j[n][1]:<7}"
                + (f"  {o[n][0]:>9.2f}  {o[n][0] / j[n][0]:>12.2f}  {mo[n]:>10.2f}  {o[n][1]:>9}" if old else "")
            )
        scale = {"muster": m, "dask_jobqueue": j, **({"old": o, "muster_over_old": mo} if old else {})}
        if args.no_up:
            print(json.dumps({"scale": scale, "slurm_floor": floor}))
            return
        # From nothing to a ready cluster of N workers (the user's wait at `up`).
        print("\nfrom nothing to N connected workers (muster up vs a fresh SLURMCluster + scale + wait)")
        ups_m = {n: [] for n in SIZES}
        ups_j = {n: [] for n in SIZES}
        ups_o = {n: [] for n in SIZES}
        for r in range(args.rounds):
            for n in SIZES:
                steps = [lambda: ups_m[n].append(up_muster(tmp, env, counter, n))]
                if old:
                    steps.append(lambda: ups_o[n].append(
                        up_muster(tmp, old_env, counter, n, old, "--old-bin up")))
                steps.append(lambda: ups_j[n].append(up_jobqueue(tmp, counter, n)))
                for step in steps if r % 2 == 0 else steps[::-1]:
                    step()
        um = {n: med(ups_m[n]) for n in SIZES}
        uj = {n: med(ups_j[n]) for n in SIZES}
        uo = {n: med(ups_o[n]) for n in SIZES} if old else {}
        umo = {n: per_round(ups_m[n], ups_o[n]) for n in SIZES} if old else {}
        print(f"medians over {args.rounds} round(s)" + ("; muster/old: median of per-round ratios" if old else ""))
        print(f"{'N':>3}  {'muster up s':>11}  {'jobqueue s':>10}  {'muster/jobqueue':>15}  {'sbatch calls m/jq':>17}"
              + old_head)
        for n in SIZES:
            print(
                f"{n:>3}  {um[n][0]:>11.2f}  {uj[n][0]:>10.2f}  {um[n][0] / uj[n][0]:>15.2f}  "
                f"{um[n][1]:>8} / {uj[n][1]:<7}"
                + (f"  {uo[n][0]:>9.2f}  {uo[n][0] / uj[n][0]:>12.2f}  {umo[n]:>10.2f}  {uo[n][1]:>9}" if old else "")
            )
        up = {"muster": um, "dask_jobqueue": uj, **({"old": uo, "muster_over_old": umo} if old else {})}
        print(json.dumps({"scale": scale, "up": up, "slurm_floor": floor}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
