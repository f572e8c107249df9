"""TLS on `backend: {kind: yarn}` against the real test YARN 3.4.2 (RM + NM of
tests/services/yarn) with real Dask: `up` makes the cluster's credentials and
each component lists its party's files as STATIC config files; the
NodeManager localises them into the application's private cache and links
them into the container. Checked from YARN itself (the RM's REST service
JSON, the NM's listing of each container's directory, its cache on disk) and
/proc, never from muster: no key or certificate in the service JSON, a
command line or an environment; owner-only files; tls:// addresses; only a
client holding the cluster's own client certificate computes; `down` leaves
neither local credentials nor localised copies; `scheduler.security: none`
still works, in plain TCP, and warns."""

import base64
import json
import os
import stat
from pathlib import Path

from test_yarn import (
    STATE, USER, assert_gone, cluster_pids, component, service, spec_file, unique, yarn,  # noqa: F401
)

from conftest import assert_other_clusters_credentials_refused, compute, refused, remember_credentials, scheduler_workers, wait_until

NM = os.environ.get("MUSTER_YARN_NM", "http://127.0.0.1:23042")


def nm_log(container, name):
    """A file of a container's log directory, from its NodeManager's REST API."""
    import urllib.request

    url = f"{NM}/ws/v1/node/containers/{container}/logs/{name}?user.name={USER}"
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.read().decode()


def listed_modes(directory_info):
    """`name -> mode` of the files the NodeManager's `find -L . -ls` saw in
    the container's working directory before starting it."""
    modes = {}
    for line in directory_info.split("broken symlinks")[0].splitlines():
        parts = line.split()
        if len(parts) >= 11 and parts[-1].startswith("./"):
            modes[parts[-1][2:]] = parts[2]
    return modes


def party_files(party):
    return ["ca.pem", f"{party}.pem", f"{party}-key.pem"]


def test_yarn_cluster_speaks_mutual_tls(muster, tmp_path):
    name = unique("yt")
    r = muster.run("up", "-f", spec_file(tmp_path, name, 2), "--timeout", "300s", "-o", "json")
    assert "plain TCP" not in r.stderr, r.stderr
    up = json.loads(r.stdout)
    remember_credentials(up)
    address = up["scheduler_address"]
    assert address.startswith("tls://") and address.endswith(":23786"), up
    assert up["dashboard_url"].startswith("https://"), up
    tls = up["tls"]
    local = muster.home / "clusters" / name / "tls"
    assert Path(tls["ca_file"]).parent == local, up
    assert stat.S_IMODE(local.stat().st_mode) == 0o700
    for f in local.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f

    # The service as anyone allowed to read it through the RM sees it: paths
    # only, each component its own party's three files, application-private.
    svc = service(name)
    text = json.dumps(svc)
    assert "BEGIN" not in text and "PRIVATE KEY" not in text, text
    for party in ["scheduler", "worker"]:
        comp = component(svc, party)
        files = comp["configuration"]["files"]
        assert sorted(f["dest_file"] for f in files) == sorted(party_files(party)), files
        for f in files:
            assert (f["type"], f["visibility"]) == ("STATIC", "APPLICATION"), f
            assert f["src_file"] == f"file://{local}/{f['dest_file']}", f
        script = base64.b64decode(comp["launch_command"].split()[1]).decode()
        assert "BEGIN" not in script, script
        assert f"--tls-key ./{party}-key.pem" in script and "--protocol tls" in script, script
    assert "tls://$1:23786" in base64.b64decode(
        component(svc, "worker")["launch_command"].split()[1]).decode()

    # What each container saw (the NodeManager lists its working directory
    # before starting it): its party's files, readable by the owner only.
    containers = [(c, p) for p in ["scheduler", "worker"] for c in component(svc, p)["containers"]]
    assert len(containers) == 3, containers
    for c, party in containers:
        modes = listed_modes(nm_log(c["id"], "directory.info"))
        creds = {k: v for k, v in modes.items() if k.endswith(".pem")}
        assert sorted(creds) == sorted(party_files(party)), modes
        assert set(creds.values()) == {"-r-x------"}, creds
    # The localised copies on the node: in this application's private cache,
    # no bit for others on the files or on the directories leading to them.
    app_dir = STATE / "nm-local" / "usercache" / USER / "appcache" / svc["id"]
    cached = [p for p in (app_dir / "filecache").rglob("*.pem")]
    assert sorted(p.name for p in cached) == sorted(set(party_files("scheduler") + party_files("worker"))), cached
    for p in cached:
        assert stat.S_IMODE(p.stat().st_mode) == 0o500, p
    for d in [app_dir, app_dir.parent, app_dir.parent.parent]:
        assert stat.S_IMODE(d.stat().st_mode) & 0o007 == 0, d
    # No credential in any container process's argv or environment.
    pids = cluster_pids(name)
    assert len(pids) >= 3, pids
    for pid in pids:
        for what in ["cmdline", "environ"]:
            data = open(f"/proc/{pid}/{what}", "rb").read()
            assert b"BEGIN" not in data and b"PRIVATE KEY" not in data, (pid, what)

    # With the credentials: the workers registered over TLS, a client computes.
    assert scheduler_workers(address) == ["worker-0", "worker-1"]
    compute(address, 300)
    assert muster.json("describe", name)["tls"] == tls

    # Refused: no credentials; plain TCP; another cluster's credentials; this
    # CA with another cluster's client certificate.
    assert refused(address), "a client without credentials got in"
    assert refused(address.replace("tls://", "tcp://")), "a plain-TCP client got in"
    other_name = unique("yo")
    other = muster.json("up", "-f", spec_file(tmp_path, other_name, 0, port=23796),
                        "--timeout", "300s")
    assert_other_clusters_credentials_refused(address, tls, other)

    # down: the service, its containers, the localised copies and the local
    # credentials are all gone.
    muster.run("down", name)
    muster.run("down", other_name)
    assert_gone(name)
    assert_gone(other_name)
    assert not local.exists() and not (muster.home / "clusters" / name).exists()
    wait_until(lambda: not app_dir.exists(), timeout=60, message=f"{app_dir} removed by the NM")
    assert not (STATE / "services" / "services" / f"muster-{name}").exists()


def test_yarn_security_none_is_plain_tcp_and_warns(muster, tmp_path):
    name = unique("yn")
    spec = spec_file(tmp_path, name, 1, scheduler_extra=", security: none")
    r = muster.run("up", "-f", spec, "--timeout", "300s", "-o", "json")
    assert "scheduler.security is none" in r.stderr, r.stderr
    up = json.loads(r.stdout)
    assert up["scheduler_address"].startswith("tcp://"), up
    assert not up.get("tls"), up
    assert not (muster.home / "clusters" / name / "tls").exists()
    svc = service(name)
    assert all("configuration" not in c or not (c["configuration"].get("files"))
               for c in svc["components"]), svc
    compute(up["scheduler_address"], 100)
    muster.run("down", name)
    assert_gone(name)

