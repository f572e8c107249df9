"""Benchmark: a Dask cluster on the test YARN (tests/services/yarn, Hadoop
3.4.2), in one run, muster against the client a YARN user would otherwise
script: Hadoop's own `yarn app` (org.apache.hadoop.yarn.client.cli.ApplicationCLI
from the same jars, a JVM) with the same service JSON.

Rows (each: seconds from the command's start):
  up        submit until 2 Dask workers are connected;
  flex 2→4  until 4 are connected;
  flex 4→1  until 1 is left (muster retires 3 through the scheduler, then
            decommissions exactly those instances; `yarn app -flex` just lowers
            the count and YARN kills the highest-numbered containers);
  down      destroy until the RM has ended it and (muster) the NodeManager
            reports every container DONE.
and each client's peak RSS:
  muster       the `muster up` CLI process when the CLI runs YARN (--cli), and
               always the library's own client (crates/muster-yarn/examples/
               yarn_flex: the backend's REST calls and the scheduler API), in-process;
  yarn app     the JVM of each `yarn app` call (/usr/bin/time's max RSS), as
               Hadoop's `yarn` script starts it (default JVM options).
The peer's waits (scheduler READY, worker counts) are polled by this script over
REST: a user script would do the same. Asserts nothing about time.

Usage: python bench/yarn_up.py [--cli]  (after scripts/setup.sh and
tests/services/yarn/start.sh; MUSTER_YARN_RM, MUSTER_YARN_STATE, MUSTER_YARN_LIB set)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RM = os.environ.get("MUSTER_YARN_RM", "http://127.0.0.1:23088")
STATE = Path(os.environ.get("MUSTER_YARN_STATE", "/tmp/muster-yarn"))
LIB = os.environ.get(
    "MUSTER_YARN_LIB", str(Path.home() / ".cache/muster/yarn/3.4.2/lib")
)
USER = os.environ.get("USER", "root")
EXAMPLE = REPO / "target" / "release" / "examples" / "yarn_flex"


def get(url):
    sep = "&" if "?" in url else "?"
    try:
        with urllib.request.urlopen(f"{url}{sep}user.name={USER}", timeout=10) as r:
            return json.loads(r.read())
    except Exception:
        return None


def wait(pred, timeout=300, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise SystemExit("timed out")


def scheduler_http(name, port):
    s = get(f"{RM}/app/v1/services/{name}") or {}
    for c in s.get("components", []):
        if c["name"] == "scheduler":
            for x in c.get("containers", []):
                if x.get("state") == "READY":
                    return f"http://{x['hostname']}:{port}"
    return None


def dask_workers(http):
    d = get(f"{http}/api/v1/get_workers")
    return None if d is None else d.get("num_workers")


def yarn_app(*args):
    """One call of Hadoop's `yarn app` client; returns (seconds, max RSS KiB)."""
    cmd = [
        "/usr/bin/time", "-f", "%M",
        "java", "-cp", f"{STATE / 'conf'}:{LIB}/*",
        "-Dlog4j.configuration=log4j.properties",
        "--add-opens=java.base/java.lang=ALL-UNNAMED",
        "org.apache.hadoop.yarn.client.cli.ApplicationCLI", "app", *args,
    ]
    t = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"yarn app {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return dt, int(p.stderr.strip().splitlines()[-1])


def peer(python, port):
    name = f"peer{os.getpid()}"
    spec = subprocess.run(
        [str(EXAMPLE), "--rm", RM, "--python", python, "--name", name,
         "--port", str(port), "--render"],
        capture_output=True, text=True, check=True,
    ).stdout
    spec = json.loads(spec)
    spec["name"] = name
    rss = []
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    t0 = time.monotonic()
    rss.append(yarn_app("-launch", name, f.name)[1])
    http = wait(lambda: scheduler_http(name, port + 1))
    wait(lambda: dask_workers(http) == 2)
    up = time.monotonic() - t0
    t = time.monotonic()
    rss.append(yarn_app("-flex", name, "-component", "worker", "4")[1])
    wait(lambda: dask_workers(http) == 4)
    f24 = time.monotonic() - t
    t = time.monotonic()
    rss.append(yarn_app("-flex", name, "-component", "worker", "1")[1])
    wait(lambda: dask_workers(http) == 1)
    f41 = time.monotonic() - t
    t = time.monotonic()
    rss.append(yarn_app("-destroy", name)[1])
    live = "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING"

    def gone():
        apps = get(f"{RM}/ws/v1/cluster/apps?applicationTypes=yarn-service&states={live}")
        return apps is not None and not any(
            a["name"] == name for a in ((apps.get("apps") or {}).get("app") or [])
        )

    wait(gone)
    down = time.monotonic() - t
    os.unlink(f.name)
    return {"up_2_connected_s": up, "flex_2_4_s": f24, "flex_4_1_s": f41,
            "down_s": down, "peak_rss_kib": max(rss)}


def muster_lib(python, port):
    out = subprocess.run(
        [str(EXAMPLE), "--rm", RM, "--python", python, "--name", f"lib{os.getpid()}",
         "--port", str(port)],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def muster_cli(python, port):
    binary = os.environ.get("MUSTER_BIN", str(REPO / "target" / "release" / "muster"))
    name = f"cli{os.getpid()}"
    home = tempfile.mkdtemp()
    env = {**os.environ, "MUSTER_HOME": home}
    spec = Path(home) / "spec.yaml"
    spec.write_text(
        f"name: {name}\nworkers: 2\nbackend: {{kind: yarn, resource_manager: '{RM}', "
        f"scheduler_memory: 512MiB}}\nworker: {{python: '{python}', memory: 512MiB}}\n"
        f"scheduler: {{port: {port}, dashboard_port: {port + 1}}}\n"
    )

    def run(*args):
        cmd = ["/usr/bin/time", "-f", "%M", binary, *args]
        t = time.monotonic()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"muster {' '.join(args)} failed:\n{p.stdout}\n{p.stderr[-3000:]}")
        return time.monotonic() - t, int(p.stderr.strip().splitlines()[-1])

    up, r1 = run("up", "-f", str(spec), "--timeout", "300s")
    f24, r2 = run("scale", name, "4", "--timeout", "300s")
    f41, r3 = run("scale", name, "1", "--timeout", "300s")
    down, r4 = run("down", name)
    return {"up_2_connected_s": up, "flex_2_4_s": f24, "flex_4_1_s": f41,
            "down_s": down, "peak_rss_kib": max(r1, r2, r3, r4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", action="store_true", help="also time the muster CLI")
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    if not EXAMPLE.exists():
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "muster-yarn", "--example", "yarn_flex"],
            cwd=REPO, check=True,
        )
    rows = {}
    rows["muster (library)"] = muster_lib(a.python, 23786)
    if a.cli:
        rows["muster (CLI)"] = muster_cli(a.python, 23786)
    rows["yarn app (JVM)"] = peer(a.python, 23786)
    keys = ["up_2_connected_s", "flex_2_4_s", "flex_4_1_s", "down_s", "peak_rss_kib"]
    print(f"{'':20}" + "".join(f"{k:>18}" for k in keys))
    for name, r in rows.items():
        print(f"{name:20}" + "".join(f"{r[k]:>18.2f}" if k != "peak_rss_kib"
                                     else f"{r[k] / 1024:>15.1f}MiB" for k in keys))
    base = rows["yarn app (JVM)"]
    for name, r in rows.items():
        if name.startswith("muster"):
            print(f"{name} / yarn app: " + ", ".join(
                f"{k.replace('_s', '')} {r[k] / base[k]:.2f}x" for k in keys if base[k]))
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
