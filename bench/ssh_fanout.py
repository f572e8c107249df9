"""Benchmark: how muster's SSH backend fans out over many hosts (issue 4:
"connections made in parallel with a bound, so tens of hosts come up in
about the time of one").

The operation timed is the one that must touch every host and involves no
Dask start-up: `muster down NAME -f spec.yaml` for a cluster with no
registry entry, which connects to every host of the spec and scans it for
the cluster's processes (connect, handshake, key check, authentication, one
remote helper run per host). Timed three ways, rounds interleaved:

  1 host        a spec with h1 only;
  N, parallel   a spec with h1..hN and muster's default bound (32 at once);
  N, serial     the same hosts with `parallelism: 1` (one at a time),
                i.e. what the fan-out saves.

The test hosts are network namespaces on this one machine, so every remote
shell (root's .bashrc runs pyenv, 0.1-0.2 s of CPU) and helper competes for
the same 2 cores: on real hosts that work runs on the hosts themselves.
Prints medians and ratios; asserts nothing about time.

Usage: python bench/ssh_fanout.py [--hosts N] [--rounds R]
  (run scripts/setup.sh first; needs root for the test hosts)
"""

import argparse
import os
import resource
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
STATE = Path(os.environ.get("MUSTER_SSH_STATE", "/tmp/muster-sshhosts"))


def spec(path, hosts, parallelism=None):
    extra = f"  parallelism: {parallelism}\n" if parallelism else ""
    path.write_text(
        "backend:\n"
        "  kind: ssh\n"
        f"  hosts: {hosts}\n"
        f"  ssh_config: {STATE / 'ssh_config'}\n"
        f"  state_dir: {path.parent / 'remote'}\n"
        f"{extra}"
        f"worker: {{python: {PYTHON}}}\n"
    )
    return path


def time_down(home, spec_path):
    env = {**os.environ, "MUSTER_HOME": home, "MUSTER_LOG": "muster_ssh=debug"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [MUSTER, "down", "fanout", "-f", str(spec_path)], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"muster down failed:\n{out.stderr}")
    connects = out.stderr.count("ssh connect")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, connects, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.hosts
    subprocess.run([str(REPO / "tests/services/sshhosts/start.sh"), str(n)],
                   check=True, capture_output=True)
    names = [f"h{k}" for k in range(1, n + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        one = spec(Path(tmp) / "one.yaml", names[:1])
        many = spec(Path(tmp) / "many.yaml", names)
        serial = spec(Path(tmp) / "serial.yaml", names, parallelism=1)
        home = str(Path(tmp) / "home")
        times = {"one": [], "many": [], "serial": []}
        cpus = {"one": [], "many": [], "serial": []}
        for i in range(args.rounds):
            line = []
            for key, path, hosts in (("one", one, 1), ("many", many, n), ("serial", serial, n)):
                t, connects, cpu = time_down(home, path)
                if connects < hosts:
                    raise SystemExit(f"{key}: only {connects} of {hosts} hosts were connected")
                times[key].append(t)
                cpus[key].append(cpu)
                line.append(f"{key} {t:.2f}s")
            print(f"round {i + 1}: " + "  ".join(line), flush=True)
    o, m, s = (statistics.median(times[k]) for k in ("one", "many", "serial"))
    print(f"\nreaching every host of a spec (`muster down -f`, nothing running), median of {args.rounds}:")
    print(f"  1 host                          {o:6.2f} s")
    print(f"  {n} hosts, in parallel (default) {m:6.2f} s   = {m / o:.1f}x one host")
    print(f"  {n} hosts, one at a time         {s:6.2f} s   = {s / o:.1f}x one host; parallel saves {1 - m / s:.0%}")
    mc = statistics.median(cpus["many"])
    print(f"  muster's own CPU time for the {n} hosts: {mc:.2f} s (user+sys); the rest of the")
    print(f"  machine's 2 cores go to the {n} hosts' sshd, login shells and helpers")
    print(f"  load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
