"""TLS on `backend: {kind: kubernetes}` against the real test Kubernetes, with
muster's operator installed from its chart (test_operator.py's `operator`
fixture): `up` puts the cluster's credentials in a Secret owned by the
DaskCluster, the scheduler and worker pods mount it read-only and run Dask
with --tls-* paths and tls:// addresses; only a client holding the cluster's
own client certificate computes. Everything about the objects is read from
the API server (kubectl), never from muster; refusals are real Dask clients
and a raw TLS handshake."""

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from conftest import REPO, assert_other_clusters_credentials_refused, compute, refused, remember_credentials, scheduler_workers
from operator_kit import operator  # noqa: F401  (the fixture)
from test_kubernetes_backend import assert_nothing_left, assert_workers, spec_file


IN_CLUSTER = ["ca.pem", "scheduler-key.pem", "scheduler.pem", "worker-key.pem", "worker.pem"]


def pod_json(kube, ns, cluster):
    return kube.json("get", "pods", "-n", ns, "-l", f"dask.org/cluster-name={cluster}")["items"]


def client_cert_is_required(address, ca_file):
    """A TLS connection that trusts the cluster's CA but shows no client
    certificate: the scheduler must end it (mutual TLS). Returns why it failed,
    or None when the scheduler kept talking."""
    host, port = address.removeprefix("tls://").rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False  # Dask checks the chain, not the name
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with ctx.wrap_socket(raw) as s:
                # TLS 1.3 reports a missing client certificate after the
                # client's handshake ends: on the first read.
                s.sendall(b"\0" * 8)
                data = s.recv(1)
                return "closed" if data == b"" else None
    except (ssl.SSLError, OSError) as e:
        return repr(e)


def test_kubernetes_cluster_speaks_mutual_tls(kube, operator, muster, tmp_path):  # noqa: F811
    ns = operator
    r = muster.run("up", "-f", spec_file(tmp_path, ns, "ktls", workers=2), "--timeout", "3m",
                   "-o", "json")
    assert "plain TCP" not in r.stderr, r.stderr  # no "no TLS on this backend" warning
    up = json.loads(r.stdout)
    remember_credentials(up)
    address = up["scheduler_address"]
    assert address.startswith("tls://"), up
    tls = up["tls"]
    assert tls and Path(tls["ca_file"]).parent == muster.home / "clusters" / "ktls" / "tls", up

    # The Secret, from the API server: the CA and the scheduler's and
    # workers' files (never the client's, never a CA key), the local CA,
    # owned by this DaskCluster.
    secret = kube.json("get", "secret", "ktls-tls", "-n", ns)
    assert secret["type"] == "Opaque"
    assert sorted(secret["data"]) == IN_CLUSTER, secret["data"].keys()
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["ca.pem"] == Path(tls["ca_file"]).read_text()
    assert sum("PRIVATE KEY" in v for v in data.values()) == 2
    dc = kube.json("get", "daskcluster", "ktls", "-n", ns)
    # The operator reports the address with the scheme the scheduler's own
    # flags say (tls://), for kubectl users and dask-kubernetes clients.
    assert dc["status"]["schedulerAddress"] == f"tls://ktls-scheduler.{ns}.svc.cluster.local:8786", dc["status"]
    owners = secret["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [
        ("DaskCluster", "ktls", dc["metadata"]["uid"])
    ], owners

    # The pods, from the API server: paths on the command line, the Secret
    # mounted read-only (0400) with only the pod's party's files; no key or
    # certificate in any argument or environment value.
    pods = pod_json(kube, ns, "ktls")
    roles = sorted(p["metadata"]["labels"]["dask.org/component"] for p in pods)
    assert roles == ["scheduler", "worker", "worker"], roles
    for p in pods:
        role = p["metadata"]["labels"]["dask.org/component"]
        (c,) = p["spec"]["containers"]
        text = json.dumps([c.get("args"), c.get("command"), c.get("env")])
        assert "BEGIN" not in text and "PRIVATE KEY" not in text, text
        args = " ".join(c["args"])
        assert f"--tls-key /etc/muster/tls/{role}-key.pem" in args, args
        assert "--protocol tls" in args and "--tls-ca-file /etc/muster/tls/ca.pem" in args
        (m,) = c["volumeMounts"][:1]
        assert (m["mountPath"], m.get("readOnly")) == ("/etc/muster/tls", True)
        (v,) = [v for v in p["spec"]["volumes"] if v["name"] == m["name"]]
        assert v["secret"]["secretName"] == "ktls-tls" and v["secret"]["defaultMode"] == 0o400
        assert sorted(i["key"] for i in v["secret"]["items"]) == sorted(
            ["ca.pem", f"{role}.pem", f"{role}-key.pem"]
        )
        if role == "worker":
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env["DASK_SCHEDULER_ADDRESS"] == (
                f"tls://ktls-scheduler.{ns}.svc.cluster.local:8786"
            ), env

    # With the credentials: the workers registered over TLS, and a user's
    # Python computes.
    assert len(scheduler_workers(address)) == 2
    compute(address, 300)
    # describe and get clusters say where the client's files are, and the
    # listed (in-cluster) address is tls:// too.
    assert muster.json("describe", "ktls")["tls"] == tls
    listed = [c for c in muster.json("get", "clusters") if c["name"] == "ktls"]
    assert listed and listed[0]["tls"] == tls, listed
    assert listed[0]["scheduler_address"] == f"tls://ktls-scheduler.{ns}.svc.cluster.local:8786"
    # `muster env` alone is enough for a client (no help from the fixtures).
    env_doc = json.loads(muster.run("env", "ktls", "-o", "json").stdout)
    assert env_doc["scheduler_address"] == address
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "compute.py"), address, "50"],
        capture_output=True, text=True, timeout=180,
        env={k: v for k, v in os.environ.items() if not k.startswith("DASK_")} | env_doc["env"],
    )
    assert proc.returncode == 0 and "(correct)" in proc.stdout, proc.stdout + proc.stderr

    # Refused: no credentials; plain TCP; TLS trusting the CA without a
    # client certificate; another cluster's credentials; this CA with
    # another cluster's client certificate.
    assert refused(address), "a client without credentials got in"
    assert refused(address.replace("tls://", "tcp://")), "a plain-TCP client got in"
    why = client_cert_is_required(address, tls["ca_file"])
    assert why, "the scheduler talked to a TLS client without a certificate"
    # Refused by the TLS layer (the port is the right one: compute used it).
    assert "SSL" in why or why == "closed", why
    other = muster.json("up", "-f", spec_file(tmp_path, ns, "kother", workers=0), "--timeout", "3m")
    assert_other_clusters_credentials_refused(address, tls, other)

    # The dashboard/HTTP API stays plain HTTP inside the cluster (Dask serves
    # it apart from the comm); the operator and the CLI use it.
    http = up["dashboard_url"].removesuffix("/status")
    assert http.startswith("http://"), up
    with urllib.request.urlopen(f"{http}/health", timeout=10) as r:
        assert r.read() == b"ok"

    # Down: the Secret goes with the cluster (asked of the API server), and
    # the local credentials with the registry entry.
    for name in ("ktls", "kother"):
        muster.run("down", name)
        got = kube.kubectl("get", "secret", f"{name}-tls", "-n", ns, check=False)
        assert got.returncode != 0 and "NotFound" in got.stderr, got.stdout + got.stderr
        assert_nothing_left(kube, ns, name)
    assert not (muster.home / "clusters" / "ktls").exists()


def test_security_none_on_kubernetes_warns_and_makes_no_secret(kube, operator, muster, tmp_path):  # noqa: F811
    ns = operator
    f = spec_file(tmp_path, ns, "kplain", workers=1)
    spec = yaml.safe_load(f.read_text())
    spec["scheduler"] = {"security": "none"}
    f.write_text(yaml.safe_dump(spec))
    r = muster.run("up", "-f", f, "--timeout", "3m", "-o", "json")
    assert "scheduler.security is none" in r.stderr, r.stderr
    up = json.loads(r.stdout)
    assert up["scheduler_address"].startswith("tcp://") and up.get("tls") is None, up
    assert_workers(kube, ns, "kplain", 1)
    status = kube.json("get", "daskcluster", "kplain", "-n", ns)["status"]
    assert status["schedulerAddress"] == f"tcp://kplain-scheduler.{ns}.svc.cluster.local:8786", status
    got = kube.kubectl("get", "secret", "kplain-tls", "-n", ns, check=False)
    assert got.returncode != 0, got.stdout
    for p in pod_json(kube, ns, "kplain"):
        assert "--tls" not in " ".join(p["spec"]["containers"][0]["args"])
    compute(up["scheduler_address"], 50)
    muster.run("down", "kplain")
    assert_nothing_left(kube, ns, "kplain")
