"""Benchmark: adaptive scaling under one burst of work, muster against
distributed's own LocalCluster(...).adapt(), in one run.

Both start with 0 workers and may grow to 6 (one thread each). A client
submits 200 tasks of 0.5 s at once, gathers the results, then releases them.
A sampler thread asks the scheduler for its worker count every 100 ms.
Reported, per system:

  first extra    seconds from submission to the first worker beyond the start
  peak           seconds from submission until the highest count was reached (and that count)
  work done      seconds from submission until every result was gathered
  to minimum     seconds from the release of the results until the count is back at 0
  direction changes  how often the count turned from rising to falling or back
                 (1 = grew, then shrank; more means oscillation)

muster runs with its defaults (adapt 0..6: observe every 500 ms, shrink after
`adapt.scale_down_wait` below target: 2 s since issue 15, 5 s before) and
tuned (workers without nannies, shrink after 3 s);
LocalCluster with Adaptive's defaults (interval 1 s, wait_count 3). For muster
it also reads the event timeline: seconds from submission until the agent had
launched the workers (the rest of "first extra" is the workers' own start).
With --old-bin, muster's defaults also with an older muster, right after
MUSTER_BIN's in every round: both against LocalCluster, and new/old as the
median of the per-round ratios. With --rounds R > 1 every figure is the median
of R interleaved rounds (traces for each round). Prints figures and ratios;
asserts nothing.

Usage: python bench/adaptive_burst.py [--tasks 200] [--seconds 0.5] [--rounds 1] [--old-bin PATH]
       (MUSTER_BIN and MUSTER_PYTHON from `. scripts/setup.sh`)
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from distributed import Client
from distributed.security import Security

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import artifacts  # noqa: E402  (where cargo put the build)

MUSTER = os.environ.get("MUSTER_BIN") or artifacts.build()["muster"]
PYTHON = os.environ.get("MUSTER_PYTHON", sys.executable)
MAXIMUM = 6

LOCALCLUSTER = f"""
import sys
from distributed import LocalCluster
cluster = LocalCluster(n_workers=0, threads_per_worker=1, dashboard_address=":0")
cluster.adapt(minimum=0, maximum={MAXIMUM})
print(cluster.scheduler_address, flush=True)
sys.stdin.readline()
cluster.close()
"""


def make_task(seconds):
    def task(x):
        import time

        time.sleep(seconds)
        return x * x

    return task


def measure(address, tasks, seconds, security=None):
    """Runs the burst against a scheduler and returns the timings."""
    samples = []  # (seconds since submission, workers)
    stop = threading.Event()
    with Client(address, timeout=30, security=security) as client:
        start_count = len(client.scheduler_info(n_workers=-1)["workers"])
        wall0 = time.time()
        t0 = time.perf_counter()

        def sample():
            while not stop.is_set():
                n = len(client.scheduler_info(n_workers=-1)["workers"])
                samples.append((time.perf_counter() - t0, n))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        futures = client.map(make_task(seconds), range(tasks))
        sampler.start()
        results = client.gather(futures)
        done = time.perf_counter() - t0
        assert results == [x * x for x in range(tasks)], "wrong results"
        del futures, results
        released = time.perf_counter() - t0
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            if samples and samples[-1][0] > released and samples[-1][1] == 0:
                break
            time.sleep(0.1)
        stop.set()
        sampler.join()

    first_extra = next((t for t, n in samples if n > start_count), None)
    peak = max(n for _, n in samples)
    peak_at = next(t for t, n in samples if n == peak)
    at_min = next(
        (t for t, n in samples if t > released and n == 0 and all(m == 0 for s, m in samples if s >= t)),
        None,
    )
    counts = [n for _, n in samples]
    changes, direction = 0, 0
    for a, b in zip(counts, counts[1:]):
        d = (b > a) - (b < a)
        if d and direction and d != direction:
            changes += 1
        if d:
            direction = d
    return {
        "first_extra": first_extra,
        "peak": peak,
        "peak_at": peak_at,
        "work_done": done,
        "to_minimum": None if at_min is None else at_min - released,
        "direction_changes": changes,
        "trace": compress(samples),
        "wall0": wall0,
    }


def compress(samples):
    """The sample series as `count@second` at each change."""
    out, last = [], None
    for t, n in samples:
        if n != last:
            out.append(f"{n}@{t:.1f}")
            last = n
    return " ".join(out)


def run_muster(tasks, seconds, tuned=False, muster=MUSTER):
    """muster with its defaults, or tuned: workers without nannies (one
    interpreter start per worker instead of two) and a 3 s scale-down wait."""
    home = tempfile.mkdtemp(prefix="muster-bench-adapt-")
    env = {**os.environ, "MUSTER_HOME": home}
    spec = Path(home) / "spec.yaml"
    spec.write_text(
        json.dumps({
            "name": "burst",
            "worker": {"python": PYTHON, "nanny": not tuned},
            "adapt": {"minimum": 0, "maximum": MAXIMUM, **({"scale_down_wait": "3s"} if tuned else {})},
        })
    )
    try:
        up = subprocess.run(
            [muster, "up", "-f", str(spec), "-o", "json"],
            env=env, check=True, capture_output=True, text=True,
        )
        doc = json.loads(up.stdout)
        # muster's default is TLS: the client uses the cluster's own files.
        tls = doc.get("tls")
        security = tls and Security(tls_ca_file=tls["ca_file"], tls_client_cert=tls["cert_file"],
                                    tls_client_key=tls["key_file"], require_encryption=True)
        result = measure(doc["scheduler_address"], tasks, seconds, security or None)
        events = json.loads(subprocess.run(
            [muster, "events", "burst", "-o", "json"], env=env, check=True,
            capture_output=True, text=True,
        ).stdout)["items"]
        launched = [e["time"] for e in events if e["kind"] == "launched" and e["time"] >= result["wall0"]]
        result["decided"] = launched[0] - result["wall0"] if launched else None
        return result
    finally:
        subprocess.run([muster, "down", "burst"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def run_localcluster(tasks, seconds):
    proc = subprocess.Popen(
        [PYTHON, "-c", LOCALCLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )
    try:
        address = proc.stdout.readline().strip()
        return measure(address, tasks, seconds)
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=60)


def fmt(v, unit="s"):
    return "-" if v is None else (f"{v:.1f}{unit}" if isinstance(v, float) else str(v))


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def summarize(runs):
    """Each figure's median over the rounds (rounds where it is missing left out)."""
    out = {}
    for key in ("first_extra", "peak_at", "work_done", "to_minimum", "decided", "peak", "direction_changes"):
        vals = [r[key] for r in runs if r.get(key) is not None]
        median = statistics.median_low if key in ("peak", "direction_changes") else statistics.median
        out[key] = median(vals) if vals else None
    return out


def per_round(new, old, key):
    """Median of new/old over the rounds where both have the figure."""
    pairs = [a[key] / b[key] for a, b in zip(new, old) if a[key] is not None and b[key]]
    return f"{statistics.median(pairs):.2f}x" if pairs else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--old-bin", help="also run muster's defaults with this (older) muster, "
                    "alternating with MUSTER_BIN in every round")
    args = ap.parse_args()
    each = "one run each" if args.rounds == 1 else f"median of {args.rounds} interleaved rounds"
    print(f"burst: {args.tasks} tasks of {args.seconds}s, adapt 0..{MAXIMUM}, {each}")
    runs = {"muster": [], "old": [], "lc": [], "tuned": []}
    for _ in range(args.rounds):
        runs["muster"].append(run_muster(args.tasks, args.seconds))
        if args.old_bin:
            runs["old"].append(run_muster(args.tasks, args.seconds, muster=args.old_bin))
        runs["lc"].append(run_localcluster(args.tasks, args.seconds))
        runs["tuned"].append(run_muster(args.tasks, args.seconds, tuned=True))
    m, lc, mt = summarize(runs["muster"]), summarize(runs["lc"]), summarize(runs["tuned"])
    old = summarize(runs["old"]) if args.old_bin else None
    rows = [
        ("submission -> first extra worker", "first_extra"),
        ("submission -> peak", "peak_at"),
        ("submission -> all results", "work_done"),
        ("results released -> minimum (0)", "to_minimum"),
    ]
    print(f"{'':36} {'muster':>9} {'LocalCluster':>13} {'muster/LC':>10} {'muster tuned':>13} {'tuned/LC':>9}"
          + (f" {'--old-bin':>10} {'old/LC':>7} {'new/old':>8}" if old else ""))
    for label, key in rows:
        print(
            f"{label:36} {fmt(m[key]):>9} {fmt(lc[key]):>13} {ratio(m[key], lc[key]):>10}"
            f" {fmt(mt[key]):>13} {ratio(mt[key], lc[key]):>9}"
            + (f" {fmt(old[key]):>10} {ratio(old[key], lc[key]):>7}"
               f" {per_round(runs['muster'], runs['old'], key):>8}" if old else "")
        )
    print(f"{'peak workers':36} {m['peak']:>9} {lc['peak']:>13} {'':>10} {mt['peak']:>13}"
          + (f" {'':>9} {old['peak']:>10}" if old else ""))
    print(
        f"{'direction changes (1 = no oscillation)':36} {m['direction_changes']:>9}"
        f" {lc['direction_changes']:>13} {'':>10} {mt['direction_changes']:>13}"
        + (f" {'':>9} {old['direction_changes']:>10}" if old else "")
    )
    print(f"{'submission -> agent launched workers':36} {fmt(m['decided']):>9} {'':>13} {'':>10} {fmt(mt['decided']):>13}"
          + (f" {'':>9} {fmt(old['decided']):>10}" if old else ""))
    for label, key in (("muster trace:", "muster"), ("--old-bin trace:", "old"),
                       ("LocalCluster trace:", "lc"), ("tuned trace:", "tuned")):
        for run in runs[key]:
            print(f"{label:19} {run['trace']}")
    if old:
        print("new/old = median over the rounds of muster's figure / --old-bin's in the same round")
    print("tuned = worker.nanny: false and adapt.scale_down_wait: 3s")


if __name__ == "__main__":
    main()
