"""Fixtures for the dask-muster tests. They run under the fresh virtualenv
scripts/python-wheel.sh installs the wheel into (never the source tree), with
the binary the wheel bundles (MUSTER_BIN is unset), one private MUSTER_HOME
per test, and an independent look at /proc for processes carrying a
cluster's marker."""

import importlib.util
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
os.environ.pop("MUSTER_BIN", None)

_spec = importlib.util.spec_from_file_location("e2e_conftest", REPO / "tests" / "e2e" / "conftest.py")
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)
marked_processes = e2e.marked_processes
wait_until = e2e.wait_until
refused = e2e.refused


def pytest_configure(config):
    import dask_muster
    from dask_muster import find_muster_bin

    where = Path(dask_muster.__file__).resolve()
    if (REPO / "python") in where.parents:
        raise pytest.UsageError(f"dask_muster imported from the source tree ({where}); run under the wheel's venv")
    scripts = Path(sys.prefix) / "bin"
    if Path(find_muster_bin()).parent != scripts:
        raise pytest.UsageError(f"the muster binary {find_muster_bin()} is not the wheel's (in {scripts})")


def unique(prefix="py"):
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


class Home:
    """A private MUSTER_HOME, with the bundled binary at hand."""

    def __init__(self, path):
        self.path = path
        from dask_muster import find_muster_bin

        self.binary = find_muster_bin()

    def muster(self, *args, check=True, timeout=180):
        p = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"muster {args} exited {p.returncode}: {p.stderr}")
        return p

    def clusters(self):
        import json

        doc = json.loads(self.muster("get", "clusters", "-o", "json").stdout)
        return [c["name"] for c in doc["items"]]

    def processes(self, cluster=None):
        return marked_processes(self.path, cluster)

    def python(self, code, timeout=180, **kw):
        """Runs code in a second Python process (same venv, same home)."""
        return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.fixture(scope="session")
def muster_bin():
    """The binary the wheel bundles, which every test here runs; the e2e
    suite's `operator` fixture packs it into the operator's image."""
    from dask_muster import find_muster_bin

    return find_muster_bin()


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("MUSTER_HOME", str(path))
    h = Home(path)
    yield h
    for name in h.clusters():
        h.muster("down", name, check=False)
    left = h.processes()
    for pid in left:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not left, f"processes left behind: {left}"


def sum_of_squares(client, n):
    import dask.bag as db

    return db.range(n, npartitions=8).map(lambda x: x * x).sum().compute(scheduler=client)
