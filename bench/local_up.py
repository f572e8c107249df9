"""Benchmark: how long until 4 Dask workers are registered, several ways, in one run.

  muster      `muster up --workers 4` (wall time of the command, which returns
              once the scheduler reports 4 workers), then `muster down`;
  raw Dask    the same scheduler and 4 worker processes started directly with
              subprocess (same flags, same scheduler-file trick), polling the
              scheduler's API every 50 ms: the floor of Dask's own start-up;
  LocalCluster distributed's LocalCluster(n_workers=4) in a fresh interpreter,
              from interpreter start until Client.wait_for_workers(4) returns;
  muster without nannies, to show what the nanny processes cost;
  muster, one job of 4 processes (`--workers 1 --processes 4 --cores 4`):
              one interpreter for all 4 workers, scaled 4 at a time;
  --old-bin   the default layout (`muster up --workers 4`) with an older
              muster, next to MUSTER_BIN's in every round (which of the two
              goes first alternates); printed
              against LocalCluster like muster's, and new/old as the median
              of the per-round ratios;
  --plain     the default layout with a spec of `scheduler: {security: none}`
              (TLS off; a spec, not `--security none`, which older binaries
              lack), to separate TLS's cost from the rest.

Rounds interleave them all so machine noise hits them alike. Also times
`muster get clusters` with one cluster up. Prints medians and ratios; asserts
nothing about time.

Usage: python bench/local_up.py [--rounds N] [--old-bin PATH] [--plain]
       (MUSTER_BIN, MUSTER_PYTHON from scripts/setup.sh)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import artifacts  # noqa: E402  (where cargo put the build)

MUSTER = os.environ.get("MUSTER_BIN") or artifacts.build()["muster"]
PYTHON = os.environ.get("MUSTER_PYTHON", sys.executable)
N = 4
ROUTES = (
    '["distributed.http.scheduler.prometheus", "distributed.http.scheduler.info", '
    '"distributed.http.scheduler.json", "distributed.http.health", "distributed.http.proxy", '
    '"distributed.http.statics", "distributed.http.scheduler.api"]'
)

LOCALCLUSTER = f"""
import sys
from distributed import LocalCluster, Client
cluster = LocalCluster(n_workers={N}, threads_per_worker=1, dashboard_address=":0")
client = Client(cluster)
client.wait_for_workers({N})
print("READY", flush=True)
sys.stdin.readline()
client.close(); cluster.close()
"""


def time_muster(home, i, extra=(), workers=N, muster=MUSTER):
    env = {**os.environ, "MUSTER_HOME": home}
    name = f"bench-{i}"
    t0 = time.perf_counter()
    subprocess.run(
        [muster, "up", name, "--workers", str(workers), "--python", PYTHON, "-o", "json", *map(str, extra)],
        env=env, check=True, capture_output=True,
    )
    elapsed = time.perf_counter() - t0
    subprocess.run([muster, "down", name], env=env, check=True, capture_output=True)
    return elapsed


def time_raw(workdir):
    sfile = Path(workdir) / "raw-scheduler.json"
    sfile.unlink(missing_ok=True)
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": ROUTES}
    t0 = time.perf_counter()
    procs = [subprocess.Popen(
        [PYTHON, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sfile)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    for w in range(N):
        procs.append(subprocess.Popen(
            [PYTHON, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sfile),
             "--name", f"raw-w{w}", "--nthreads", "1", "--memory-limit", "auto",
             "--death-timeout", "60"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    url = None
    deadline = t0 + 120
    while True:
        if time.perf_counter() > deadline:
            for p in procs:
                os.killpg(p.pid, 9)
            raise SystemExit(f"raw dask: {N} workers not connected in 120 s")
        if url is None and sfile.exists():
            try:
                info = json.loads(sfile.read_text())
                url = f"http://127.0.0.1:{info['services']['dashboard']}/api/v1/get_workers"
            except (ValueError, KeyError):
                pass
        if url:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if json.load(r)["num_workers"] == N:
                        break
            except OSError:
                pass
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    for p in procs:
        try:
            os.killpg(p.pid, 15)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
    return elapsed


def time_localcluster():
    t0 = time.perf_counter()
    p = subprocess.Popen([PYTHON, "-c", LOCALCLUSTER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    elapsed = time.perf_counter() - t0
    assert line.strip() == "READY", line
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait(timeout=60)
    return elapsed


def time_get_clusters(home, reps=30):
    env = {**os.environ, "MUSTER_HOME": home}
    subprocess.run([MUSTER, "up", "bench-get", "--workers", "1", "--python", PYTHON],
                   env=env, check=True, capture_output=True)
    times = []
    try:
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run([MUSTER, "get", "clusters"], env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
    finally:
        subprocess.run([MUSTER, "down", "bench-get"], env=env, check=True, capture_output=True)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--old-bin", help="also time the default layout with this (older) muster, "
                    "alternating with MUSTER_BIN in every round")
    ap.add_argument("--plain", action="store_true",
                    help="also time the default layout with `scheduler: {security: none}` "
                    "(TLS off), to separate TLS's cost from the rest")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="muster-bench-")
    home = os.path.join(work, "home")
    old_home = os.path.join(work, "home-old")  # the older binary keeps its own registry
    results = {"muster": [], "raw": [], "localcluster": [], "muster_no_nanny": [], "muster_x4": []}
    if args.old_bin:
        results["old"] = []
    if args.plain:
        results["plain"] = []
    no_nanny = os.path.join(work, "no-nanny.yaml")
    with open(no_nanny, "w") as f:
        f.write("worker: {nanny: false}\n")
    plain = os.path.join(work, "plain.yaml")
    with open(plain, "w") as f:
        f.write("scheduler: {security: none}\n")
    try:
        time_raw(work)  # warm the page cache for the Python imports
        for i in range(args.rounds):
            # new and old back to back, the order reversed every other round (the
            # second of a pair can gain from the first's warm caches)
            pair = [("muster", home, MUSTER)] + [("old", old_home, args.old_bin)] * bool(args.old_bin)
            for key, h, binary in (pair if i % 2 == 0 else pair[::-1]):
                results[key].append(time_muster(h, i, muster=binary))
            if args.plain:
                results["plain"].append(time_muster(home, i, ("-f", plain)))
            results["raw"].append(time_raw(work))
            results["localcluster"].append(time_localcluster())
            results["muster_no_nanny"].append(time_muster(home, i, ("-f", no_nanny)))
            results["muster_x4"].append(time_muster(home, i, ("--processes", N, "--cores", N), workers=1))
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]:.3f}s" for k, v in results.items()), flush=True)
        gets = time_get_clusters(home)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    print()
    print(f"time until {N} workers are registered (median of {args.rounds} interleaved rounds)")
    print(f"  muster up --workers {N}          {med['muster']:.3f} s")
    print(f"  raw Dask processes (floor)       {med['raw']:.3f} s")
    print(f"  LocalCluster(n_workers={N})       {med['localcluster']:.3f} s")
    print(f"  muster / raw Dask                {med['muster'] / med['raw']:.3f}  (overhead {100 * (med['muster'] / med['raw'] - 1):+.1f}%)")
    print(f"  muster / LocalCluster            {med['muster'] / med['localcluster']:.3f}")
    print(f"  muster up, worker.nanny: false   {med['muster_no_nanny']:.3f} s"
          f"  (/ LocalCluster {med['muster_no_nanny'] / med['localcluster']:.3f};"
          " LocalCluster's nannies live in its own process, muster's are separate processes)")
    print(f"  muster up --workers 1 --processes {N} {med['muster_x4']:.3f} s"
          f"  (/ LocalCluster {med['muster_x4'] / med['localcluster']:.3f}; one job, scaled {N} at a time)")
    if "old" in med:
        print(f"  --old-bin, muster up --workers {N} {med['old']:.3f} s"
              f"  (/ LocalCluster {med['old'] / med['localcluster']:.3f})")
    if "plain" in med:
        print(f"  muster up, scheduler.security none {med['plain']:.3f} s"
              f"  (/ LocalCluster {med['plain'] / med['localcluster']:.3f})")
    for key in ("muster", "plain"):
        if "old" in results and key in results:
            pairs = [a / b for a, b in zip(results[key], results["old"])]
            print(f"  {key} / --old-bin, same round: median {statistics.median(pairs):.3f} "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in pairs)})")
    print("load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    g = sorted(gets)
    print(f"muster get clusters latency: median {1000 * statistics.median(g):.1f} ms, "
          f"p90 {1000 * g[int(0.9 * (len(g) - 1))]:.1f} ms over {len(g)} runs")


if __name__ == "__main__":
    main()
