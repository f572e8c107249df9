"""The wheel as installed: it carries the binary and finds it in the layouts
pip makes (venv, --target, --prefix), MUSTER_BIN overrides it, the discovery
entry point is registered, and the package refuses a binary speaking another
version of the JSON contract. Spec-building checks need no cluster."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import dask_muster
from dask_muster import _cli, find_muster_bin, spec

BASE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable


@pytest.fixture(scope="module")
def wheel():
    path = os.environ.get("MUSTER_WHEEL")
    if not path or not Path(path).is_file():
        pytest.fail("MUSTER_WHEEL is not set: run under scripts/python-wheel.sh (scripts/test.sh does)")
    return path


def test_the_venv_install_carries_the_binary_and_the_entry_point():
    binary = find_muster_bin()
    assert Path(binary) == Path(sys.prefix) / "bin" / "muster"
    assert subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.startswith("muster ")
    (ep,) = [e for e in entry_points(group="dask_cluster_discovery") if e.name == "muster"]
    assert ep.value == "dask_muster.discovery:discover"
    assert ep.load() is dask_muster.discover


@pytest.mark.parametrize("layout", ["--target", "--prefix"])
def test_other_install_layouts_find_their_binary(wheel, tmp_path, layout):
    root = tmp_path / "inst"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", layout, str(root), wheel], check=True)
    if layout == "--target":
        site, expected = root, root / "bin" / "muster"
    else:
        (site,) = root.glob("lib/python*/site-packages")
        expected = root / "bin" / "muster"
    code = f"import sys; sys.path.insert(0, {str(site)!r}); import dask_muster; print(dask_muster.find_muster_bin())"
    env = {k: v for k, v in os.environ.items() if k != "MUSTER_BIN"}
    out = subprocess.run([BASE_PYTHON, "-I", "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == expected and expected.is_file()


def test_dask_cli_runs_the_bundled_binary(home):
    dask = Path(sys.prefix) / "bin" / "dask"
    out = subprocess.run([str(dask), "muster", "get", "clusters", "-o", "json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["kind"] == "ClusterList"
    version = subprocess.run([str(dask), "muster", "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("muster ")


def test_muster_bin_overrides_and_a_wrong_one_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSTER_BIN", "/bin/true")
    assert find_muster_bin() == "/bin/true"
    monkeypatch.setenv("MUSTER_BIN", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MUSTER_BIN"):
        find_muster_bin()


def test_a_binary_speaking_another_contract_version_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "muster"  # a fake binary: this checks the reader, not muster
    fake.write_text('#!/bin/sh\necho \'{"schema": "muster/v2", "kind": "ClusterList", "items": []}\'\n')
    fake.chmod(0o755)
    monkeypatch.setenv("MUSTER_BIN", str(fake))
    with pytest.raises(_cli.MusterError, match="muster/v2.*muster/v1"):
        _cli.run_sync("get", "clusters", kind="ClusterList")


def test_the_real_binary_prints_the_contract(home):
    doc = json.loads(home.muster("get", "clusters", "-o", "json").stdout)
    assert doc == {"schema": "muster/v1", "kind": "ClusterList", "items": []}


def test_spec_building():
    s = spec.build({"name": "a", "worker": {"cores": 2}}, backend="slurm", worker={"memory": "1GB"}, n_workers=3)
    assert s["backend"] == {"kind": "slurm"} and s["workers"] == 3
    assert s["worker"] == {"cores": 2, "memory": "1GB", "python": sys.executable}
    assert spec.build(name=None)["name"].startswith("dask-")
    with pytest.raises(ValueError, match="unknown key 'wokers'"):
        spec.build({"wokers": 1})
    with pytest.raises(TypeError, match="worker= must be a mapping"):
        spec.build(worker=3)
    assert spec.duration(0.5, "x") == "500ms" and spec.duration("2m", "x") == "2m"
    with pytest.raises(ValueError, match="negative"):
        spec.duration(-1, "x")


def test_drop_ins_work_as_a_cluster_class_dotted_path():
    from distributed.utils import import_term

    from dask_muster import MusterCluster, PBSCluster, SLURMCluster, SSHCluster

    for cls in (SLURMCluster, PBSCluster, SSHCluster, MusterCluster):
        assert import_term(f"dask_muster.{cls.__name__}") is cls
        assert issubclass(cls, __import__("distributed").deploy.Cluster)


def test_import_is_lazy():
    code = "import sys, dask_muster; print('distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
