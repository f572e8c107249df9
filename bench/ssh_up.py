"""Benchmark: time to a scheduler plus 6 registered Dask workers over SSH, on
the same three test hosts (tests/services/sshhosts: h1 runs the scheduler,
h2 and h3 three workers each), two ways, in one run:

  muster       `muster up -f spec.yaml` with backend ssh (wall time of the
               command, which returns once the scheduler reports 6 workers),
               then `muster down`: 6 worker jobs (each its own nanny process,
               so each can be scaled away alone);
  muster x3    the same with 2 jobs of 3 Dask worker processes each
               (`worker.processes: 3`): the very process layout SSHCluster
               uses (one process per host running 3 nannies);
  SSHCluster   distributed's SSHCluster(hosts=[h1, h2, h3],
               worker_options={"n_workers": 3}) in a fresh interpreter until
               Client.wait_for_workers(6) returns; timed from after the
               imports (the stricter figure, shown first) and from
               interpreter start. Then cluster.close().

Both use nannies, one thread per worker, the same Python on the hosts, and
the same key and known_hosts (asyncssh is given them as connect_options).
Rounds interleave so machine noise hits both alike. After each SSHCluster
round, processes it left in the hosts' namespaces are counted (and ended).
Prints medians and ratios; asserts nothing about time.

Usage: python bench/ssh_up.py [--rounds N]
  (run scripts/setup.sh first; it needs root for the test hosts)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MUSTER = os.environ.get("MUSTER_BIN", str(REPO / "target/release/muster"))
PYTHON = os.environ.get("MUSTER_PYTHON", sys.executable)
STATE = Path(os.environ.get("MUSTER_SSH_STATE", "/tmp/muster-sshhosts"))
HOSTS = ["10.200.0.11", "10.200.0.12", "10.200.0.13"]
PER_HOST = 3
N = PER_HOST * (len(HOSTS) - 1)

SSHCLUSTER = """
import json, sys, time
t0 = time.perf_counter()
from distributed import Client
from distributed.deploy.ssh import SSHCluster
t1 = time.perf_counter()
cluster = SSHCluster(
    {hosts!r},
    connect_options={{"known_hosts": {known!r}, "client_keys": [{key!r}], "username": "root"}},
    worker_options={{"n_workers": {per_host}, "nthreads": 1, "death_timeout": 20}},
    scheduler_options={{"port": 0, "dashboard_address": ":0"}},
    remote_python={python!r},
)
client = Client(cluster)
client.wait_for_workers({n})
t2 = time.perf_counter()
print(json.dumps({{"after_imports": t2 - t1, "address": cluster.scheduler_address}}), flush=True)
sys.stdin.readline()
client.close()
cluster.close()
"""


def netns_dask_pids():
    """Pids of Dask processes in the test hosts' namespaces."""
    pids = set()
    for k in range(1, len(HOSTS) + 1):
        out = subprocess.run(["ip", "netns", "pids", f"mh{k}"], capture_output=True, text=True)
        for pid in out.stdout.split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if b"distributed" in cmd and stat not in ("Z", "X"):
                pids.add(int(pid))
    return pids


def time_muster(home, spec, i):
    env = {**os.environ, "MUSTER_HOME": home}
    name = f"bench-ssh-{i}-{Path(spec).stem}"
    t0 = time.perf_counter()
    out = subprocess.run(
        [MUSTER, "up", name, "-f", spec, "-o", "json"], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"muster up failed:\n{out.stderr}")
    assert json.loads(out.stdout)["connected_workers"] == N, out.stdout
    subprocess.run([MUSTER, "down", name], env=env, check=True, capture_output=True)
    return elapsed


def time_sshcluster():
    before = netns_dask_pids()
    code = SSHCLUSTER.format(
        hosts=HOSTS, known=str(STATE / "known_hosts"), key=str(STATE / "id_ed25519"),
        per_host=PER_HOST, python=PYTHON, n=N,
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [PYTHON, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline()
    wall = time.perf_counter() - t0
    if not line:
        proc.kill()
        raise SystemExit("SSHCluster did not come up")
    inner = json.loads(line)["after_imports"]
    proc.stdin.write("\n")
    proc.stdin.flush()
    proc.wait(timeout=120)
    time.sleep(3)  # what close() leaves should have exited by now
    left = netns_dask_pids() - before
    for pid in left:  # started by this round: end them
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    return inner, wall, len(left)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    subprocess.run([str(REPO / "tests/services/sshhosts/start.sh"), str(len(HOSTS))],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "jobs6.yaml"
        spec3 = Path(tmp) / "jobs2x3.yaml"
        spec.write_text(f"""
backend:
  kind: ssh
  hosts: {HOSTS}
  ssh_config: {STATE / 'ssh_config'}
  workers_per_host: {PER_HOST}
  state_dir: {tmp}/remote
worker: {{python: {PYTHON}, cores: 1, death_timeout: 20s}}
workers: {N}
""")
        spec3.write_text(spec.read_text()
                         .replace("cores: 1,", f"cores: {PER_HOST}, processes: {PER_HOST},")
                         .replace(f"workers: {N}", f"workers: {N // PER_HOST}")
                         .replace(f"workers_per_host: {PER_HOST}", "workers_per_host: 1"))
        home = str(Path(tmp) / "home")
        muster, muster3, ssh_inner, ssh_wall, left = [], [], [], [], []
        for i in range(args.rounds):
            muster.append(time_muster(home, str(spec), i))
            muster3.append(time_muster(home, str(spec3), i))
            inner, wall, n_left = time_sshcluster()
            ssh_inner.append(inner)
            ssh_wall.append(wall)
            left.append(n_left)
            print(f"round {i + 1}: muster {muster[-1]:.2f}s  muster x3 {muster3[-1]:.2f}s  "
                  f"SSHCluster {inner:.2f}s "
                  f"(wall {wall:.2f}s, left behind {n_left})", flush=True)
    m, m3, si, sw = (statistics.median(x) for x in (muster, muster3, ssh_inner, ssh_wall))
    print(f"\nscheduler + {N} workers on {len(HOSTS)} SSH hosts, median of {args.rounds} rounds:")
    print(f"  muster up (CLI wall time)            {m:6.2f} s")
    print(f"  SSHCluster, after imports            {si:6.2f} s   muster/SSHCluster = {m / si:.2f}")
    print(f"  SSHCluster, from interpreter start   {sw:6.2f} s   muster/SSHCluster = {m / sw:.2f}")
    print(f"  muster x3 (2 jobs x 3 processes)     {m3:6.2f} s   vs SSHCluster after imports = {m3 / si:.2f}")
    print(f"  processes SSHCluster.close() left on the hosts: {left}")
    print("goal (issue 4): muster at most half of SSHCluster's time (ratio <= 0.50)")


if __name__ == "__main__":
    main()
