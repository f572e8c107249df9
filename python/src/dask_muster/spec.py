"""Building a muster cluster spec from what a Python caller gives: a dict, a
YAML file's path, and keyword arguments named like the spec's top-level keys.

Only the top level is checked here (an unknown keyword names itself); the
binary validates everything below it, reporting every problem with its full
field path, before it launches anything. Knows nothing about Dask objects.
"""

from __future__ import annotations

import copy
import os
import sys
import uuid
from collections.abc import Mapping
from typing import Any

import yaml

#: The spec's top-level keys, which are also MusterCluster's spec keywords.
SPEC_KEYS = ("name", "backend", "scheduler", "worker", "workers", "adapt")
#: Keywords that are other names for a spec key.
ALIASES = {"n_workers": "workers"}
_SECTIONS = ("backend", "scheduler", "worker", "adapt")


def _merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load(source: Any) -> dict:
    """A spec from a dict (copied) or a YAML file's path."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    if isinstance(source, (str, os.PathLike)):
        with open(source, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        if doc is None:
            return {}
        if not isinstance(doc, Mapping):
            raise ValueError(f"spec file {os.fspath(source)!r}: expected a mapping at the top, found {type(doc).__name__}")
        return dict(doc)
    raise TypeError(f"spec: expected a dict or a YAML file path, got {type(source).__name__}")


def build(source: Any = None, *, caller: str = "MusterCluster", **keywords: Any) -> dict:
    """The spec from ``source`` with ``keywords`` over it.

    ``backend`` may be a kind (``"slurm"``) or a mapping; ``worker``,
    ``scheduler``, ``adapt`` and a mapping ``backend`` merge into the
    source's sections. Unset: ``name`` becomes ``dask-<random>``, and
    ``worker.python`` this interpreter, so workers run the client's
    ``distributed``.
    """
    spec = load(source)
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ValueError(
            f"spec: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"(the spec's keys are {', '.join(SPEC_KEYS)})"
        )
    given: dict[str, Any] = {}
    for k, v in keywords.items():
        key = ALIASES.get(k, k)
        if key not in SPEC_KEYS:
            raise TypeError(
                f"{caller}() got an unexpected keyword argument {k!r} "
                f"(spec keywords: {', '.join(SPEC_KEYS + tuple(ALIASES))})"
            )
        if key in given:
            raise TypeError(f"{caller}() got both {key!r} and its alias {k!r}")
        given[key] = v
    for key, v in given.items():
        if v is None:
            continue
        if key == "backend" and isinstance(v, str):
            old = spec.get("backend")
            spec["backend"] = (
                dict(old) if isinstance(old, Mapping) and old.get("kind") == v else {"kind": v}
            )
        elif key in _SECTIONS:
            if not isinstance(v, Mapping):
                raise TypeError(f"{caller}(): {key}= must be a mapping, got {type(v).__name__}")
            old = spec.get(key)
            spec[key] = _merge(dict(old) if isinstance(old, Mapping) else {}, v)
        else:
            spec[key] = v
    if not spec.get("name"):
        spec["name"] = f"dask-{uuid.uuid4().hex[:8]}"
    worker = spec.setdefault("worker", {})
    if isinstance(worker, Mapping) and "python" not in worker:
        spec["worker"] = dict(worker, python=sys.executable)
    return spec


def duration(value: Any, what: str) -> str:
    """A duration for the binary: a number of seconds, or a string it parses
    (``500ms``, ``30s``, ``1h``)."""
    if isinstance(value, bool):
        raise TypeError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{what}: a duration cannot be negative ({value!r})")
        return f"{int(round(value * 1000))}ms"
    if isinstance(value, str):
        return value
    raise TypeError(f"{what}: expected seconds or a string like '30s', got {type(value).__name__}")
