"""Benchmark: memory per connected Dask worker, muster's layouts against
LocalCluster's, in one run.

For each layout, `muster up --workers 4` (local backend), then the RSS and
PSS (proportional set size, which splits pages shared between a fork and its
parent, from /proc/PID/smaps_rollup) of every process of the worker jobs
(found by their MUSTER_* environment, the scheduler left out) summed and
divided by the connected workers. LocalCluster(n_workers=4): its process
(which also holds the scheduler and the nannies) and its children. With
--old-bin, the default layout also with an older muster, right after
MUSTER_BIN's in every round: both against LocalCluster, and new/old RSS as
the median of the per-round ratios. Prints figures; asserts nothing.

Usage: python bench/worker_memory.py [--layouts default,plain] [--rounds 3] [--old-bin PATH]
       (MUSTER_BIN and MUSTER_PYTHON from `. scripts/setup.sh`; `plain` is
       `worker.warm_start: false`, which binaries before issue 15 refuse)
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MUSTER = os.environ["MUSTER_BIN"]
PYTHON = os.environ.get("MUSTER_PYTHON", sys.executable)
N = 4
SPECS = {"default": "", "plain": ", warm_start: false"}  # extra worker fields

LOCALCLUSTER = f"""
import sys
from distributed import LocalCluster, Client
cluster = LocalCluster(n_workers={N}, threads_per_worker=1, dashboard_address=":0")
client = Client(cluster)
client.wait_for_workers({N})
print("READY", flush=True)
sys.stdin.readline()
"""


def mem(pid):
    """(rss, pss) in bytes from /proc/PID/smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def environ(pid):
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)


def children(pid):
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
        except OSError:
            pass
    return out + [g for c in out for g in children(c)]


def muster_round(home, layout, i, muster=MUSTER):
    env = {**os.environ, "MUSTER_HOME": home}
    spec = os.path.join(home, f"{layout}.yaml")
    os.makedirs(home, exist_ok=True)
    with open(spec, "w") as f:
        f.write(f"name: mem{i}\nworker: {{python: {PYTHON}{SPECS[layout]}}}\nworkers: {N}\n")
    subprocess.run([muster, "up", "-f", spec], env=env, check=True, capture_output=True)
    try:
        time.sleep(2)  # let the workers settle after their start
        total_rss = total_pss = 0
        found = 0
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                e = environ(p)
                if e.get(b"MUSTER_HOME") != home.encode() or e.get(b"MUSTER_JOB", b"").endswith(b"scheduler"):
                    continue
                if b"MUSTER_JOB" not in e:
                    continue
                rss, pss = mem(p)
            except OSError:
                continue
            total_rss += rss
            total_pss += pss
            found += 1
    finally:
        subprocess.run([muster, "down", f"mem{i}"], env=env, check=True, capture_output=True)
    if not found:
        # 0 MiB per worker would read as a win; it means the markers were not found
        raise SystemExit(f"{muster} ({layout}): no worker process of mem{i} found in /proc")
    return total_rss / N, total_pss / N


def localcluster_round():
    p = subprocess.Popen([PYTHON, "-c", LOCALCLUSTER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert p.stdout.readline().strip() == "READY"
    time.sleep(2)
    total_rss = total_pss = 0
    for pid in [p.pid, *children(p.pid)]:
        try:
            rss, pss = mem(pid)
        except OSError:
            continue
        total_rss += rss
        total_pss += pss
    p.stdin.write("\n")
    p.stdin.flush()
    p.wait(timeout=60)
    return total_rss / N, total_pss / N


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layouts", default="default,plain")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--old-bin", help="also measure the default layout with this (older) muster, "
                    "alternating with MUSTER_BIN in every round")
    args = ap.parse_args()
    layouts = args.layouts.split(",")
    work = tempfile.mkdtemp(prefix="muster-bench-mem-")
    results = {k: [] for k in [*layouts, *["old"] * bool(args.old_bin), "localcluster"]}
    try:
        for i in range(args.rounds):
            for layout in layouts:
                results[layout].append(muster_round(os.path.join(work, layout), layout, i))
            if args.old_bin:
                results["old"].append(muster_round(os.path.join(work, "old"), "default", i, args.old_bin))
            results["localcluster"].append(localcluster_round())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mib = 2**20
    print(f"memory per connected worker, {N} workers, median of {args.rounds} rounds")
    for k, v in results.items():
        rss = statistics.median(r for r, _ in v) / mib
        pss = statistics.median(p for _, p in v) / mib
        what = {"localcluster": "LocalCluster (its process incl. scheduler + children)",
                "old": "--old-bin, muster default"}.get(k, f"muster {k}")
        print(f"  {what:55s} RSS {rss:6.1f} MiB   PSS {pss:6.1f} MiB")
    if args.old_bin:
        lc = statistics.median(r for r, _ in results["localcluster"])
        for k in ("default", "old"):
            if k in results:
                rss = statistics.median(r for r, _ in results[k])
                print(f"  {k} RSS / LocalCluster's: {rss / lc:.2f}")
        if "default" in results:
            pairs = [a / b for (a, _), (b, _) in zip(results["default"], results["old"])]
            print(f"  default / --old-bin RSS, same round: median {statistics.median(pairs):.2f} "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in pairs)})")


if __name__ == "__main__":
    main()
