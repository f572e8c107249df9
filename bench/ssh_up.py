"""Benchmark: time to a scheduler plus N registered Dask workers over SSH, on
the test hosts (tests/services/sshhosts: h1 runs the scheduler, the next
--worker-hosts hosts --per-host workers each; default 2 x 3 = 6), in one
run, rounds interleaved so machine noise hits all alike. Every muster figure
is the wall time of `muster up -f spec.yaml -o json`, which returns once the
scheduler reports N workers, with muster's defaults as shipped unless the
row says otherwise:

  muster          muster's default layout: one worker job per worker, each
                  its own nanny process, so each can be scaled away alone
                  (Dask's `spawn`: a nanny and a worker interpreter each);
  muster xK       one job per host running K Dask worker processes
                  (`worker.processes: K`): SSHCluster's process layout. muster
                  starts such jobs' workers with Dask's `forkserver` method by
                  default: one server per job imports distributed, the K
                  worker processes fork from it;
  muster xK spawn the same with Dask's `spawn` set back in `worker.env`
                  (K fresh interpreters per job), for comparison;
  local floor     the default layout's processes started by muster's local
                  backend on this machine, no SSH at all: what the same Dask
                  processes cost on these 2 cores, so `muster - floor` is
                  muster's SSH overhead;
  local floor xK  the same for the xK layout with forkserver;
  SSHCluster      distributed's SSHCluster(hosts, worker_options={"n_workers":
                  K}) in a fresh interpreter until Client.wait_for_workers(N)
                  returns, with its defaults (spawn); timed from after the
                  imports (the stricter figure; the ratios use it) and from
                  interpreter start. Then cluster.close().

All use nannies, one thread per worker, the same Python on the hosts, and
the same key and known_hosts (asyncssh is given them as connect_options).
After each SSHCluster round, processes it left in the hosts' namespaces are
counted (and ended). The "hosts" are network namespaces sharing this
machine's CPUs, so the number of interpreters that import distributed
(printed per layout) decides most of each time. Prints medians, ratios and
the load average; asserts nothing about time.

Usage: python bench/ssh_up.py [--rounds R] [--per-host K] [--worker-hosts M] [--old-bin PATH] [--plain]
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
sys.path.insert(0, str(REPO / "scripts"))
import artifacts  # noqa: E402  (where cargo put the build)

MUSTER = os.environ.get("MUSTER_BIN") or artifacts.build()["muster"]
PYTHON = os.environ.get("MUSTER_PYTHON", sys.executable)
STATE = Path(os.environ.get("MUSTER_SSH_STATE", "/tmp/muster-sshhosts"))
SPAWN = "{DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD: spawn}"
FORKSERVER = "{DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD: forkserver}"

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


def netns_dask_pids(hosts):
    """Pids of Dask processes in the test hosts' namespaces."""
    pids = set()
    for k in range(1, len(hosts) + 1):
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


def time_muster(home, args, n, i, muster=MUSTER):
    """Wall time of `muster up NAME ARGS...` until n workers are connected."""
    env = {**os.environ, "MUSTER_HOME": home}
    name = f"bench-ssh-{i}"
    t0 = time.perf_counter()
    out = subprocess.run(
        [muster, "up", name, *args, "-o", "json"], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"muster up {args} failed:\n{out.stderr}")
    assert json.loads(out.stdout)["connected_workers"] == n, out.stdout
    subprocess.run([muster, "down", name], env=env, check=True, capture_output=True)
    return elapsed


def time_sshcluster(hosts, per_host, n):
    before = netns_dask_pids(hosts)
    code = SSHCLUSTER.format(
        hosts=hosts, known=str(STATE / "known_hosts"), key=str(STATE / "id_ed25519"),
        per_host=per_host, python=PYTHON, n=n,
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
    left = netns_dask_pids(hosts) - before
    for pid in left:  # started by this round: end them
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    return inner, wall, len(left)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-host", type=int, default=3, help="workers per worker host")
    ap.add_argument("--worker-hosts", type=int, default=2, help="hosts besides the scheduler's")
    ap.add_argument("--old-bin", help="also time the default layout with this (older) muster, "
                    "alternating with MUSTER_BIN in every round")
    ap.add_argument("--plain", action="store_true",
                    help="also time the default layout with `scheduler: {security: none}` "
                    "(TLS off), to separate TLS's cost from the rest")
    args = ap.parse_args()
    k, m = args.per_host, args.worker_hosts
    hosts = [f"10.200.0.{11 + j}" for j in range(m + 1)]
    n = k * m
    subprocess.run([str(REPO / "tests/services/sshhosts/start.sh"), str(len(hosts))],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "jobs.yaml"
        spec.write_text(f"""
backend:
  kind: ssh
  hosts: {hosts}
  ssh_config: {STATE / 'ssh_config'}
  workers_per_host: {k}
  state_dir: {tmp}/remote
worker: {{python: {PYTHON}, cores: 1, death_timeout: 20s}}
workers: {n}
""")
        grouped = Path(tmp) / "grouped.yaml"
        grouped.write_text(spec.read_text()
                           .replace("cores: 1,", f"cores: {k}, processes: {k},")
                           .replace(f"workers: {n}", f"workers: {m}")
                           .replace(f"workers_per_host: {k}", "workers_per_host: 1"))
        spawned = Path(tmp) / "spawned.yaml"
        spawned.write_text(grouped.read_text()
                           .replace("death_timeout: 20s}", f"death_timeout: 20s, env: {SPAWN}}}"))
        local = ["--workers", str(n), "--python", PYTHON]
        local_grouped = Path(tmp) / "local-grouped.yaml"
        local_grouped.write_text(f"""
backend: {{kind: local}}
worker: {{python: {PYTHON}, cores: {k}, processes: {k}, death_timeout: 20s, env: {FORKSERVER}}}
workers: {m}
""")
        plain = Path(tmp) / "plain.yaml"
        plain.write_text(spec.read_text() + "scheduler: {security: none}\n")
        home = str(Path(tmp) / "home")
        keys = ("muster", "grouped", "spawned", "floor", "floor_x", "inner", "wall")
        keys += ("old",) * bool(args.old_bin) + ("plain",) * args.plain
        rows = {key: [] for key in keys}
        left = []
        for i in range(args.rounds):
            # new and old back to back, the order reversed every other round: the
            # second of the two ran ~5% faster here, whichever binary it was
            pair = [("muster", MUSTER)] + [("old", args.old_bin)] * bool(args.old_bin)
            for key, binary in (pair if i % 2 == 0 else pair[::-1]):
                rows[key].append(time_muster(home, ["-f", str(spec)], n, i, binary))
            if args.plain:
                rows["plain"].append(time_muster(home, ["-f", str(plain)], n, i))
            rows["grouped"].append(time_muster(home, ["-f", str(grouped)], n, i))
            rows["spawned"].append(time_muster(home, ["-f", str(spawned)], n, i))
            rows["floor"].append(time_muster(home, local, n, i))
            rows["floor_x"].append(time_muster(home, ["-f", str(local_grouped)], n, i))
            inner, wall, n_left = time_sshcluster(hosts, k, n)
            rows["inner"].append(inner)
            rows["wall"].append(wall)
            left.append(n_left)
            print(f"round {i + 1}: " + "  ".join(f"{key} {v[-1]:.2f}s" for key, v in rows.items())
                  + f"  (SSHCluster left behind {n_left})", flush=True)
    med = {key: statistics.median(v) for key, v in rows.items()}
    si = med["inner"]
    # Interpreters that import distributed: the scheduler, then per job
    # muster's launcher (its forkserver and workers are forks of it), or with
    # spawn the launcher plus each worker; before the launcher (--old-bin)
    # a nanny and a spawned worker per job. SSHCluster: per host one nanny
    # process plus its spawned workers.
    imports = {"muster": 1 + n, "grouped": 1 + m, "spawned": 1 + m * (1 + k),
               "floor": 1 + n, "floor_x": 1 + m, "inner": 1 + m * (1 + k),
               "old": 1 + 2 * n, "plain": 1 + n}
    print(f"\nscheduler + {n} workers on {m + 1} SSH hosts ({k} per worker host), "
          f"median of {args.rounds} rounds, load average {os.getloadavg()[0]:.2f} "
          f"(imports: interpreters importing distributed):")
    print(f"  {'SSHCluster, after imports':<40} {si:6.2f} s   {'':<17} imports {imports['inner']}")
    print(f"  {'SSHCluster, from interpreter start':<40} {med['wall']:6.2f} s")
    for key, label in (("muster", "muster up (default: a job per worker)"),
                       ("old", "--old-bin, default layout"),
                       ("plain", "muster up, scheduler.security none"),
                       ("grouped", f"muster x{k} (a job of {k}; forkserver)"),
                       ("spawned", f"muster x{k}, spawn"),
                       ("floor", "local floor (default layout, no SSH)"),
                       ("floor_x", f"local floor x{k}, forkserver (no SSH)")):
        if key not in med:
            continue
        print(f"  {label:<40} {med[key]:6.2f} s   /SSHCluster = {med[key] / si:.2f}   "
              f"imports {imports[key]}")
    print(f"  muster's SSH overhead (muster - local floor): {med['muster'] - med['floor']:.2f} s; "
          f"x{k}: {med['grouped'] - med['floor_x']:.2f} s")
    for key in ("muster", "plain"):
        if "old" in rows and key in rows:
            pairs = [a / b for a, b in zip(rows[key], rows["old"])]
            print(f"  {key} / --old-bin, same round: median {statistics.median(pairs):.2f} "
                  f"(rounds: {', '.join(f'{r:.2f}' for r in pairs)})")
    print(f"  processes SSHCluster.close() left on the hosts: {left}")
    print("goal (issue 4): muster at most half of SSHCluster's time (ratio <= 0.50)")


if __name__ == "__main__":
    main()
