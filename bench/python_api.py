"""Benchmark: dask-muster's Python API against the tools it replaces, in one
run on this machine. Prints figures and ratios; asserts nothing about time.

  local   MusterCluster(backend local, 4 workers) until 4 workers are
          connected, against distributed's LocalCluster(n_workers=4), both
          1 thread per worker, timed from the constructor until
          client.wait_for_workers(4) returns, in this process after imports;
  import  a fresh interpreter's `import dask_muster`, `from dask_muster
          import MusterCluster` (which loads distributed), and `import
          distributed` alone;
  slurm   dask_muster.SLURMCluster(...).scale(32) until 32 workers are
          connected, against dask-jobqueue's SLURMCluster with the same
          parameters (1 core, 1 process, 512MiB), each through a counting
          `sbatch` shim first on PATH so submissions are counted, not inferred.

Rounds alternate the tools so machine noise hits both alike; medians shown.
Run it with the venv the wheel is installed in (scripts/python-wheel.sh):
  $MUSTER_WHEEL_PYTHON bench/python_api.py [--rounds N] [--workers 32] [--no-slurm] [--no-start-slurm]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_local(kind):
    from distributed import Client, LocalCluster

    from dask_muster import MusterCluster

    t0 = time.perf_counter()
    if kind == "muster":
        cluster = MusterCluster(name=f"bl-{uuid.uuid4().hex[:5]}", workers=4, worker={"cores": 1})
    else:
        cluster = LocalCluster(n_workers=4, threads_per_worker=1, dashboard_address=":0")
    client = Client(cluster)
    client.wait_for_workers(4, timeout=120)
    elapsed = time.perf_counter() - t0
    client.close()
    cluster.close()
    return elapsed


def import_time(stmt, rounds):
    code = f"import time; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"
    return statistics.median(
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(rounds)
    )


SHIM = '#!/bin/sh\necho x >> "{counter}"\nexec {sbatch} "$@"\n'


def timed_slurm(kind, n, tmp, counter):
    from distributed import Client

    if kind == "muster":
        from dask_muster import SLURMCluster
    else:
        from dask_jobqueue import SLURMCluster
    job_name = f"bp{uuid.uuid4().hex[:5]}"
    cluster = SLURMCluster(cores=1, processes=1, memory="512MiB", python=sys.executable, queue="debug",
                           job_name=job_name, log_directory=str(tmp / f"{kind}-logs"), death_timeout=60,
                           scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"})
    client = Client(cluster)
    try:
        before = counter.read_text().count("x") if counter.exists() else 0
        t0 = time.perf_counter()
        cluster.scale(n)
        client.wait_for_workers(n, timeout=600)
        elapsed = time.perf_counter() - t0
        calls = (counter.read_text().count("x") if counter.exists() else 0) - before
    finally:
        client.close()
        cluster.close()
    deadline = time.monotonic() + 120
    while job_name in subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout:
        if time.monotonic() > deadline:
            raise SystemExit(f"{kind}'s jobs did not leave the queue")
        time.sleep(0.2)
    return elapsed, calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=32, help="SLURM scale target")
    ap.add_argument("--no-slurm", action="store_true")
    ap.add_argument("--no-start-slurm", action="store_true", help="use the SLURM already running (SLURM_CONF)")
    args = ap.parse_args()
    import distributed

    import dask_muster

    print(f"dask-muster {dask_muster.__version__} ({dask_muster.find_muster_bin()}), "
          f"distributed {distributed.__version__}, python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    home = Path(tempfile.mkdtemp(prefix="muster-pybench-"))
    os.environ["MUSTER_HOME"] = str(home / "home")

    print("import (fresh interpreter, median of 5):")
    t_mod = import_time("import dask_muster", 5)
    t_cls = import_time("from dask_muster import MusterCluster", 5)
    t_dist = import_time("import distributed", 5)
    print(f"  import dask_muster                      {t_mod * 1000:7.1f} ms")
    print(f"  from dask_muster import MusterCluster   {t_cls * 1000:7.1f} ms")
    print(f"  import distributed (for comparison)     {t_dist * 1000:7.1f} ms")

    print(f"local, 4 workers connected ({args.rounds} rounds, alternating):")
    times = {"muster": [], "local": []}
    for _ in range(args.rounds):
        for kind in times:
            times[kind].append(timed_local(kind))
            print(f"  {kind:7s} {times[kind][-1]:6.2f} s", flush=True)
    m, l = statistics.median(times["muster"]), statistics.median(times["local"])
    print(f"  median: MusterCluster {m:.2f} s, LocalCluster {l:.2f} s  (ratio {m / l:.2f}x)")

    if not args.no_slurm:
        if not args.no_start_slurm:
            subprocess.run([str(REPO / "tests/services/slurm/start.sh")], check=True, capture_output=True)
        n = args.workers
        shim_dir = home / "bin"
        shim_dir.mkdir()
        counter = home / "sbatch-calls"
        (shim_dir / "sbatch").write_text(SHIM.format(counter=counter, sbatch=shutil.which("sbatch")))
        (shim_dir / "sbatch").chmod(0o755)
        os.environ["PATH"] = f"{shim_dir}:{os.environ['PATH']}"
        print(f"SLURM, SLURMCluster(...).scale({n}) until {n} connected ({args.rounds} rounds, alternating):")
        res = {"dask_muster": [], "dask_jobqueue": []}
        for _ in range(args.rounds):
            for kind in res:
                res[kind].append(timed_slurm("muster" if kind == "dask_muster" else "jobqueue", n, home, counter))
                e, c = res[kind][-1]
                print(f"  {kind:13s} {e:6.2f} s, {c} sbatch call(s)", flush=True)
        mm = statistics.median(e for e, _ in res["dask_muster"])
        jj = statistics.median(e for e, _ in res["dask_jobqueue"])
        print(f"  median: dask_muster {mm:.2f} s ({res['dask_muster'][0][1]} sbatch), "
              f"dask_jobqueue {jj:.2f} s ({res['dask_jobqueue'][0][1]} sbatch)  (ratio {mm / jj:.2f}x)")


if __name__ == "__main__":
    main()
