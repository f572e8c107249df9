"""Drop-in for ``distributed.deploy.ssh.SSHCluster``: its parameters (hosts,
connect_options, worker_options, scheduler_options, worker_class,
remote_python) mapped onto muster's ``ssh`` backend. As there, the first host
runs the scheduler and every other host ``worker_options["n_workers"]``
workers (default 1). A parameter muster cannot honour raises a TypeError or
ValueError naming it.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from .cluster import MusterCluster

# asyncssh connect options muster understands, and the spec key each becomes.
_CONNECT = {"username": "user", "port": "port", "known_hosts": "known_hosts",
            "client_keys": "identity", "config": "ssh_config", "connect_timeout": "connect_timeout"}
_WORKER = ("nthreads", "n_workers", "memory_limit", "death_timeout", "local_directory", "interface")
_SCHEDULER = ("port", "dashboard_address", "host")
_WORKER_CLASSES = {"distributed.Nanny": True, "distributed.nanny.Nanny": True,
                   "distributed.Worker": False, "distributed.worker.Worker": False}


def _one(value: Any, what: str) -> Any:
    """A per-host list of equal values collapses to one; unequal ones cannot."""
    if isinstance(value, list):
        if not value or any(v != value[0] for v in value):
            raise ValueError(f"SSHCluster(): {what} differing per host is not supported; give one value")
        return value[0]
    return value


class SSHCluster(MusterCluster):
    """distributed's ``SSHCluster``, run by muster over its own SSH client."""

    def __init__(self, hosts: list[str] | None = None, connect_options: dict | list | None = None,
                 worker_options: dict | None = None, scheduler_options: dict | None = None,
                 worker_module: Any = "deprecated", worker_class: str = "distributed.Nanny",
                 remote_python: str | list[str] | None = None, *, asynchronous: bool = False,
                 loop: Any = None, name: str | None = None, shutdown_on_close: bool | None = None,
                 timeout: Any = "2m", **kwargs: Any):
        if kwargs:
            raise TypeError(f"SSHCluster() got an unexpected keyword argument {next(iter(kwargs))!r}")
        if not hosts or len(hosts) < 2:
            raise ValueError("SSHCluster(): hosts= needs at least two entries: the scheduler's host, then the workers'")
        if worker_module != "deprecated":
            raise ValueError("SSHCluster(): worker_module= is not supported (deprecated in distributed too); use worker_class=")
        if worker_class not in _WORKER_CLASSES:
            raise ValueError(f"SSHCluster(): worker_class={worker_class!r} is not supported (muster runs distributed.Nanny or distributed.Worker)")
        backend: dict[str, Any] = {"kind": "ssh"}
        opts = _one(connect_options or {}, "connect_options")
        for k, v in opts.items():
            if k not in _CONNECT:
                raise ValueError(f"SSHCluster(): connect_options[{k!r}] is not supported (muster takes {', '.join(_CONNECT)})")
            if k == "known_hosts" and v is None:
                # asyncssh's "do not check": muster trusts a new key but still refuses a changed one.
                backend["accept_new_host_keys"] = True
                continue
            if k in ("client_keys", "config"):
                v = _one(list(v) if isinstance(v, (list, tuple)) else [v], f"connect_options[{k!r}]")
            if k == "connect_timeout" and isinstance(v, (int, float)):
                v = f"{v}s"
            backend[_CONNECT[k]] = os.fspath(v) if isinstance(v, os.PathLike) else v

        scheduler_host, worker_hosts = hosts[0], list(hosts[1:])
        counts = Counter(worker_hosts)
        if len(set(counts.values())) > 1:
            raise ValueError("SSHCluster(): hosts= listing some worker hosts more often than others is not supported")
        wopts = dict(worker_options or {})
        for k in wopts:
            if k not in _WORKER:
                raise ValueError(f"SSHCluster(): worker_options[{k!r}] is not supported (muster takes {', '.join(_WORKER)})")
        per_host = int(wopts.get("n_workers", 1)) * next(iter(counts.values()))
        unique = list(dict.fromkeys([scheduler_host, *worker_hosts]))
        pythons = remote_python if isinstance(remote_python, list) else None
        if pythons is not None and len(pythons) != len(hosts):
            raise ValueError("SSHCluster(): remote_python= as a list needs one entry per host")
        if pythons is not None:
            by_host = {}
            for h, p in zip(hosts, pythons):
                if by_host.setdefault(h, p) != p:
                    raise ValueError(f"SSHCluster(): remote_python= gives host {h!r} two pythons")
            backend["hosts"] = [{"host": h, "python": by_host[h]} for h in unique]
        else:
            backend["hosts"] = unique
        backend["scheduler_host"] = scheduler_host
        backend["workers_per_host"] = per_host
        if scheduler_host in counts:
            backend["workers_on_scheduler_host"] = True

        worker: dict[str, Any] = {"nanny": _WORKER_CLASSES[worker_class], "processes": 1}
        if isinstance(remote_python, str):
            worker["python"] = remote_python
        if "nthreads" in wopts:
            worker["cores"] = int(wopts["nthreads"])
        if wopts.get("memory_limit") not in (None, "auto"):
            worker["memory"] = str(wopts["memory_limit"])
        if "death_timeout" in wopts:
            dt = wopts["death_timeout"]
            worker["death_timeout"] = f"{dt}s" if isinstance(dt, (int, float)) else dt
        for k in ("local_directory", "interface"):
            if wopts.get(k) is not None:
                worker[k] = wopts[k]

        scheduler: dict[str, Any] = {}
        sopts = dict(scheduler_options or {})
        for k in sopts:
            if k not in _SCHEDULER:
                raise ValueError(f"SSHCluster(): scheduler_options[{k!r}] is not supported (muster takes {', '.join(_SCHEDULER)})")
        if "port" in sopts:
            scheduler["port"] = int(sopts["port"])
        if sopts.get("dashboard_address") is not None:
            tail = str(sopts["dashboard_address"]).rsplit(":", 1)[-1]
            if not tail.isdigit():
                raise ValueError(f"SSHCluster(): scheduler_options['dashboard_address']={sopts['dashboard_address']!r}: expected ':PORT'")
            scheduler["dashboard_port"] = int(tail)
        if sopts.get("host"):
            scheduler["host"] = sopts["host"]
        if isinstance(remote_python, str):
            scheduler["python"] = remote_python

        spec = {"backend": backend, "worker": worker, "scheduler": scheduler,
                "workers": per_host * len(counts)}
        if name is not None:
            spec["name"] = name
        super().__init__(spec, asynchronous=asynchronous, loop=loop,
                         shutdown_on_close=shutdown_on_close, timeout=timeout)
