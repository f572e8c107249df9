"""dask-ctl's discovery protocol (entry point group ``dask_cluster_discovery``):
an async generator of ``(name, cluster class)`` for every muster cluster, read
from ``muster get clusters``. Tools then call ``MusterCluster.from_name(name)``.
Needs nothing from dask-ctl."""

from __future__ import annotations

from collections.abc import AsyncIterator


async def discover() -> AsyncIterator[tuple[str, type]]:
    """Yields ``(name, MusterCluster)`` for each cluster muster knows; yields
    nothing when the binary is missing or fails (discovery must not break the
    caller's other discovery methods)."""
    from . import _cli
    from .cluster import MusterCluster

    try:
        items = await _cli.run("get", "clusters", kind="ClusterList")
    except (OSError, _cli.MusterError):
        return
    for item in items:
        yield item["name"], MusterCluster


def discovery_methods() -> dict:
    """Every installed ``dask_cluster_discovery`` entry point, by name (read
    with importlib.metadata, as dask-ctl's successors should)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="dask_cluster_discovery")}
