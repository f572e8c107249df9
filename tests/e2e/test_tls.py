"""TLS on by default, end to end on the local backend with real Dask: only a
client holding the cluster's own credentials computes; a client without
them, with another cluster's, or in plain TCP is refused; the credential
files are owner-only and go with `down`; `scheduler.security: none` still
works and warns. What is checked is looked at from outside muster: the
files' st_mode, the processes' argv and environment in /proc, and real
Dask clients."""

import json
import os
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from distributed import Client
from distributed.security import Security

from conftest import compute, connect, marked_processes, refused, scheduler_workers


def proc_view(home, cluster):
    """(argv, environ) of every process of the cluster, read from /proc."""
    out = []
    for pid in marked_processes(home, cluster):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        out.append((b" ".join(argv).decode(errors="replace"), env.decode(errors="replace")))
    return out


def test_only_the_clusters_own_credentials_get_in(muster, tmp_path):
    up = muster.json("up", "sec", "--workers", 2, "--python", muster.python)
    address = up["scheduler_address"]
    assert address.startswith("tls://127.0.0.1:"), up
    assert up["dashboard_url"].startswith("https://127.0.0.1:"), up
    tls = up["tls"]
    tls_dir = Path(tls["ca_file"]).parent
    assert tls_dir == muster.home / "clusters" / "sec" / "tls"

    # Owner-only: the directory 0700, every file 0600, all ours.
    st = tls_dir.stat()
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    files = sorted(p.name for p in tls_dir.iterdir())
    assert files == sorted(
        ["ca.pem", "client.pem", "client-key.pem", "scheduler.pem", "scheduler-key.pem",
         "worker.pem", "worker-key.pem"]
    )
    for p in tls_dir.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert "BEGIN CERTIFICATE" in Path(tls["cert_file"]).read_text()
    assert "PRIVATE KEY" in Path(tls["key_file"]).read_text()

    # The processes got paths, never contents, of the credentials.
    views = proc_view(muster.home, "sec")
    assert len(views) >= 3, views
    for argv, env in views:
        assert "PRIVATE KEY" not in argv and "PRIVATE KEY" not in env
        assert "BEGIN CERTIFICATE" not in argv and "BEGIN CERTIFICATE" not in env
    sched = [a for a, _ in views if "dask_scheduler" in a]
    assert sched and f"--tls-key {tls_dir}/scheduler-key.pem" in sched[0], sched
    assert "--protocol tls" in sched[0]
    workers = [a for a, _ in views if "dask_worker" in a]
    assert workers and all(f"--tls-key {tls_dir}/worker-key.pem" in a for a in workers), workers

    # With the credentials: computes (a separate Python, as a user's).
    assert scheduler_workers(address) == ["sec-w0", "sec-w1"]
    compute(address, 500)

    # Without credentials, in plain TCP, or with another cluster's: refused.
    assert refused(address), "a client without credentials got in"
    plain = address.replace("tls://", "tcp://")
    assert refused(plain), "a plain-TCP client got in"
    other = muster.json("up", "other", "--workers", 0, "--python", muster.python)
    o = other["tls"]
    foreign = Security(
        tls_ca_file=o["ca_file"], tls_client_cert=o["cert_file"], tls_client_key=o["key_file"],
        require_encryption=True,
    )
    assert refused(address, foreign), "another cluster's credentials got in"
    # Their own cluster takes them (the refusal above was about the cluster).
    with Client(other["scheduler_address"], timeout=30, security=foreign) as c:
        assert c.scheduler_info()["type"] == "Scheduler"
    # Trusting this cluster's CA is not enough: the client's certificate must
    # be one this cluster's CA signed.
    mixed = Security(
        tls_ca_file=tls["ca_file"], tls_client_cert=o["cert_file"], tls_client_key=o["key_file"],
        require_encryption=True,
    )
    assert refused(address, mixed)

    # The dashboard and HTTP API answer over HTTPS with the cluster's
    # certificate (verified against its CA), not in plain HTTP.
    https = up["dashboard_url"].removesuffix("/status")
    ctx = ssl.create_default_context(cafile=tls["ca_file"])
    ctx.check_hostname = False  # the certificate names muster-scheduler/localhost/127.0.0.1
    with urllib.request.urlopen(f"{https}/health", context=ctx, timeout=10) as r:
        assert r.read() == b"ok"
    strict = ssl.create_default_context(cafile=tls["ca_file"])
    with urllib.request.urlopen(f"{https}/health", context=strict, timeout=10) as r:
        assert r.status == 200  # 127.0.0.1 is in the certificate
    with pytest.raises(Exception):
        urllib.request.urlopen(https.replace("https://", "http://") + "/health", timeout=10).read()
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{https}/health", context=ssl.create_default_context(), timeout=10)

    # muster's own HTTP calls go through the same trust: scale and describe work.
    muster.run("scale", "sec", 1)
    assert scheduler_workers(address) == ["sec-w0"]
    described = muster.json("describe", "sec")
    assert described["tls"] == tls
    assert described["scheduler_reachable"] is True

    # `muster env` prints what a client needs; a Python using only that computes.
    env_doc = muster.json("env", "sec")
    assert env_doc["kind"] == "ClientEnv" and env_doc["tls"] == tls
    shell = muster.run("env", "sec").stdout
    assert "PRIVATE KEY" not in shell
    script = (
        'eval "$1"; exec "$2" -c \'import distributed;'
        "c = distributed.Client(timeout=30);"
        "print(c.submit(sum, [1, 2, 3]).result())'"
    )
    proc = subprocess.run(
        ["sh", "-c", script, "sh", shell, sys.executable],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("DASK_")},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "6", proc.stderr

    muster.run("down", "sec")
    muster.run("down", "other")
    assert not tls_dir.exists(), "credentials outlived `down`"
    assert not Path(o["ca_file"]).parent.exists()


def test_security_none_still_works_and_warns(muster, tmp_path):
    spec = tmp_path / "plain.yaml"
    spec.write_text(json.dumps({
        "name": "plain", "workers": 1,
        "worker": {"python": muster.python},
        "scheduler": {"security": "none"},
    }))
    proc = muster.run("up", "-f", spec, "-o", "json")
    assert "scheduler.security is none" in proc.stderr, proc.stderr
    up = json.loads(proc.stdout)
    assert up["tls"] is None
    assert up["scheduler_address"].startswith("tcp://"), up
    assert up["dashboard_url"].startswith("http://"), up
    assert not (muster.home / "clusters" / "plain" / "tls").exists()
    compute(up["scheduler_address"], 200)
    shell = muster.run("env", "plain").stdout
    assert "DASK_DISTRIBUTED__COMM__TLS" not in shell and "plain TCP" in shell
    muster.run("down", "plain")


def test_render_shows_tls_flags_with_paths_only(muster):
    out = muster.run("render", "r", "--workers", 1, "--python", muster.python).stdout
    assert "--tls-ca-file" in out and "--protocol tls" in out
    assert "PRIVATE KEY" not in out


def test_the_security_flag_overrides_the_spec_both_ways(muster, tmp_path):
    # --security none on the command line alone: plain TCP, with the warning.
    proc = muster.run("up", "plainflag", "--workers", 1, "--python", muster.python,
                      "--security", "none", "-o", "json")
    assert "scheduler.security is none" in proc.stderr, proc.stderr
    up = json.loads(proc.stdout)
    assert up["tls"] is None and up["scheduler_address"].startswith("tcp://"), up
    assert not (muster.home / "clusters" / "plainflag" / "tls").exists()
    compute(up["scheduler_address"], 50)
    assert muster.json("describe", "plainflag")["spec"]["scheduler"]["security"] == "none"
    muster.run("down", "plainflag")
    # --security tls wins over a file's `security: none`.
    spec = tmp_path / "plain.yaml"
    spec.write_text(json.dumps({"name": "p2", "workers": 1, "scheduler": {"security": "none"}}))
    out = muster.run("render", "-f", spec, "--security", "tls", "--python", muster.python).stdout
    assert "--protocol tls" in out and "--tls-ca-file" in out, out
    bad = muster.run("up", "-f", spec, "--security", "maybe", check=False)
    assert bad.returncode == 2 and "--security" in bad.stderr and "tls" in bad.stderr, bad.stderr
    assert muster.json("get", "clusters") == []
