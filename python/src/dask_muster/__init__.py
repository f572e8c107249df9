"""dask-muster: muster's Dask clusters as `distributed` cluster objects.

``MusterCluster`` takes a muster spec (dict, YAML path or keywords);
``SLURMCluster``/``PBSCluster`` take dask-jobqueue's parameters and
``SSHCluster`` distributed's, so changing the import is the whole migration.
Names load lazily: ``import dask_muster`` does not import distributed.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["MusterCluster", "SLURMCluster", "PBSCluster", "SSHCluster", "find_muster_bin", "discover"]

_LAZY = {
    "MusterCluster": ".cluster",
    "SLURMCluster": ".jobqueue",
    "PBSCluster": ".jobqueue",
    "SSHCluster": ".ssh",
    "find_muster_bin": "._find",
    "discover": ".discovery",
    "MusterError": "._cli",
    "MusterUsageError": "._cli",
}


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'dask_muster' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
