"""Benchmark: what TLS costs `muster up`, in one run.

Interleaved rounds of, on the local backend with real Dask:

  tls    `muster up --workers N` with the default `scheduler.security: tls`
         (muster makes the cluster's CA and three certificates, the scheduler
         and workers start with TLS, every comm and HTTP call does a handshake);
  none   the same with `scheduler.security: none` (plain TCP);

wall time of the command (it returns once the scheduler reports N workers),
then `muster down`. Also times the credentials alone: `muster up --workers 0`
both ways (scheduler only), and a client's connect + one task both ways.
Prints medians, the difference and the ratio; asserts nothing about time.

With --kubernetes NAMESPACE the same on `backend: {kind: kubernetes}` in that
namespace of the test Kubernetes (`. /run/muster-k8s/env.sh`; muster's operator
installed there, e.g. `helm install ... -n NAMESPACE --set rbac.cluster=false`;
image MUSTER_K8S_DASK_IMAGE): tls there also creates the Secret and mounts it.

With --yarn the same on `backend: {kind: yarn}` against the test YARN
(`eval "$(tests/services/yarn/start.sh)"`, MUSTER_YARN_RM): tls there also
lists the credentials as STATIC config files that the NodeManager localises
into every container.

Usage: python bench/tls_up.py [--rounds N] [--workers N] [--kubernetes NAMESPACE | --yarn]
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import artifacts  # noqa: E402  (where cargo put the build)

MUSTER = os.environ.get("MUSTER_BIN") or artifacts.build()["muster"]
PYTHON = os.environ.get("MUSTER_PYTHON", sys.executable)

CLIENT = """
import sys, time
from distributed import Client
from distributed.security import Security
addr, ca, cert, key = sys.argv[1:5]
sec = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key,
               require_encryption=True) if ca else Security()
t0 = time.perf_counter()
with Client(addr, timeout=30, security=sec) as c:
    assert c.submit(sum, [1, 2]).result() == 3
print(time.perf_counter() - t0)
"""


def up(home, name, workers, spec):
    env = {**os.environ, "MUSTER_HOME": home}
    t0 = time.perf_counter()
    out = subprocess.run(
        [MUSTER, "up", name, "-f", spec, "--workers", str(workers), "--python", PYTHON, "-o", "json"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return time.perf_counter() - t0, json.loads(out)


def down(home, name):
    env = {**os.environ, "MUSTER_HOME": home}
    subprocess.run([MUSTER, "down", name], env=env, check=True, capture_output=True)


def client_time(doc):
    tls = doc.get("tls") or {}
    out = subprocess.run(
        [PYTHON, "-c", CLIENT, doc["scheduler_address"], tls.get("ca_file", ""),
         tls.get("cert_file", ""), tls.get("key_file", "")],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    return float(out.strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--kubernetes", metavar="NAMESPACE")
    ap.add_argument("--yarn", action="store_true")
    args = ap.parse_args()
    backend = ""
    ports = ""
    if args.yarn:
        rm = os.environ.get("MUSTER_YARN_RM", "http://127.0.0.1:23088")
        backend = (
            "worker: {memory: 512MiB}\n"
            f"backend: {{kind: yarn, resource_manager: '{rm}', scheduler_memory: 512MiB}}\n"
        )
        # YARN needs fixed ports; the rounds run one cluster at a time.
        ports = ", port: 23798, dashboard_port: 23799"
    elif args.kubernetes:
        backend = (
            "worker: {cores: 1, memory: 1GiB}\n"
            f"backend: {{kind: kubernetes, namespace: {args.kubernetes}, "
            f"image: '{os.environ['MUSTER_K8S_DASK_IMAGE']}', image_pull_policy: Never}}\n"
        )
    work = tempfile.mkdtemp(prefix="muster-bench-tls-")
    home = os.path.join(work, "home")
    specs = {}
    for mode in ("tls", "none"):
        specs[mode] = os.path.join(work, f"{mode}.yaml")
        with open(specs[mode], "w") as f:
            f.write(f"scheduler: {{security: {mode}{ports}}}\n{backend}")
    res = {f"{what}_{mode}": [] for what in ("up", "up0", "client") for mode in ("tls", "none")}
    try:
        for i in range(args.rounds):
            for mode in (("tls", "none") if i % 2 == 0 else ("none", "tls")):
                t, doc = up(home, f"b-{mode}-{i}", args.workers, specs[mode])
                res[f"up_{mode}"].append(t)
                res[f"client_{mode}"].append(client_time(doc))
                down(home, f"b-{mode}-{i}")
                t0, _ = up(home, f"s-{mode}-{i}", 0, specs[mode])
                res[f"up0_{mode}"].append(t0)
                down(home, f"s-{mode}-{i}")
            print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]:.3f}s" for k, v in res.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in res.items()}
    print()
    where = (f"kubernetes, namespace {args.kubernetes}" if args.kubernetes
             else "test YARN 3.4.2" if args.yarn else "local backend")
    print(f"median of {args.rounds} interleaved rounds ({where}, real Dask)")
    for what, label in (("up", f"muster up --workers {args.workers}"),
                        ("up0", "muster up --workers 0 (scheduler only)"),
                        ("client", "client connect + 1 task")):
        t, n = med[f"{what}_tls"], med[f"{what}_none"]
        print(f"  {label:40s} tls {t:.3f} s   none {n:.3f} s   "
              f"tls - none {1000 * (t - n):+.0f} ms   tls / none {t / n:.3f}")


if __name__ == "__main__":
    main()
