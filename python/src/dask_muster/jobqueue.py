"""Drop-ins for dask-jobqueue: ``SLURMCluster`` and ``PBSCluster`` take its
parameter names and read its ``jobqueue.<name>`` configuration, and map them
onto a muster spec; muster (muster-hpc) writes and submits the job scripts, so
``job_script()`` is ``muster render``'s. Workers are counted as dask-jobqueue
counts them (Dask worker processes); muster's unit is the job. A parameter
muster cannot honour raises a TypeError or ValueError naming it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from typing import Any

import dask.config

from . import _cli
from .cluster import MusterCluster

# dask-jobqueue's defaults for keys its jobqueue.yaml sets (it is not imported).
_DEFAULTS = {
    "death-timeout": 60,
    "walltime": "00:30:00",
    "shebang": "#!/usr/bin/env bash",
    "worker-command": "distributed.cli.dask_worker",
}
# Deprecated dask-jobqueue names and their successors (both accepted).
_RENAMED = {
    "extra": "worker_extra_args",
    "env_extra": "job_script_prologue",
    "job_extra": "job_extra_directives",
    "header_skip": "job_directives_skip",
}
# Parameters muster cannot honour, unless left at the value given here.
_ONLY = {
    "security": (None, False),
    "shared_temp_directory": (None,),
    "protocol": (None, "tcp", "tcp://"),
    "worker_command": (None, "distributed.cli.dask_worker"),
    "silence_logs": ("error",),
    "job_cls": (None,),
    "scheduler_cls": (None,),
}
_WHY = {
    "security": "muster's clusters do not use TLS yet",
    "shared_temp_directory": "it only carries TLS files, which muster does not use",
    "protocol": "muster's workers talk tcp",
    "worker_command": "muster starts `dask worker` itself",
    "silence_logs": "the scheduler is muster's process; see its log with get_logs()",
    "job_cls": "muster writes the job script",
    "scheduler_cls": "muster runs the scheduler",
}
_SCHEDULER_OPTIONS = ("port", "dashboard_address", "host")


def _port(value: Any, what: str) -> int:
    text = str(value)
    tail = text.rsplit(":", 1)[-1]
    if not tail.isdigit():
        raise ValueError(f"{what}: expected a port or ':PORT', got {value!r}")
    return int(tail)


class JobQueueCluster(MusterCluster):
    """The dask-jobqueue parameters both batch drop-ins share."""

    config_name = ""
    _kind = ""
    _backend_params: tuple[str, ...] = ()

    def __init__(self, n_workers: int = 0, *, asynchronous: bool = False, loop: Any = None,
                 name: str | None = None, config_name: str | None = None,
                 shutdown_on_close: bool | None = None, timeout: Any = "2m", **params: Any):
        cls = type(self).__name__
        self._config_name = config_name or self.config_name
        spec = self._spec_from(cls, n_workers, name, params)
        self._processes = spec["worker"]["processes"]
        super().__init__(spec, asynchronous=asynchronous, loop=loop,
                         shutdown_on_close=shutdown_on_close, timeout=timeout)

    # ---- parameters -> spec ----------------------------------------------

    def _conf(self, key: str) -> Any:
        return dask.config.get(f"jobqueue.{self._config_name}.{key}", default=_DEFAULTS.get(key))

    def _spec_from(self, cls: str, n_workers: int, name: str | None, params: dict) -> dict:
        for old, new in _RENAMED.items():
            if old in params:
                if params.get(new) is not None:
                    raise TypeError(f"{cls}(): give {new}= or its old name {old}=, not both")
                params[new] = params.pop(old)
        known = set(_COMMON) | set(self._backend_params) | set(_ONLY) | {
            "dashboard_address", "host", "scheduler_options"}
        for k in params:
            if k not in known:
                raise TypeError(f"{cls}() got an unexpected keyword argument {k!r}")
        for k, allowed in _ONLY.items():
            if k in params and params[k] not in allowed:
                raise ValueError(f"{cls}(): {k}={params[k]!r} is not supported: {_WHY[k]}")
        wc = self._conf("worker-command")
        if wc not in _ONLY["worker_command"]:
            raise ValueError(f"{cls}(): jobqueue.{self._config_name}.worker-command={wc!r} is not supported: {_WHY['worker_command']}")

        def get(key: str) -> Any:
            v = params.get(key)
            return self._conf(key.replace("_", "-")) if v is None else v

        cores, memory = get("cores"), get("memory")
        if cores is None or memory is None:
            raise ValueError(
                f"{cls}(): cores= and memory= are required (or jobqueue.{self._config_name}.cores/memory in the Dask config)"
            )
        processes = get("processes")
        if processes is None:
            from distributed.deploy.utils import nprocesses_nthreads

            processes, _ = nprocesses_nthreads(cores)
        worker: dict[str, Any] = {
            "cores": cores,
            "memory": str(memory),
            "processes": processes,
            "python": get("python") or sys.executable,
            "nanny": bool(params.get("nanny", True)),
        }
        dt = get("death_timeout")
        if dt is not None:
            worker["death_timeout"] = f"{dt}s" if isinstance(dt, (int, float)) else str(dt)
        for key, field in (("interface", "interface"), ("local_directory", "local_directory")):
            v = get(key)
            if v is not None:
                worker[field] = v
        extra = get("worker_extra_args")
        if extra:
            worker["extra_args"] = list(extra)

        backend: dict[str, Any] = {"kind": self._kind}
        for key in ("job_extra_directives", "job_directives_skip", "job_script_prologue"):
            v = get(key)
            if v:
                backend[key] = list(v)
        for key in ("log_directory", "shebang", "job_name") + self._backend_params:
            v = get(key)
            if v is not None and key != "project":
                backend[key] = v
        if self._kind == "pbs" and get("project") is not None:
            if backend.get("account") not in (None, get("project")):
                raise ValueError(f"{cls}(): project= and account= name the same thing; give one")
            backend["account"] = get("project")
        for key in ("job_mem",):
            if key in backend:
                backend[key] = str(backend[key])

        scheduler: dict[str, Any] = {}
        opts = dict(self._conf("scheduler-options") or {})
        opts.update(params.get("scheduler_options") or {})
        for k in opts:
            if k not in _SCHEDULER_OPTIONS:
                raise ValueError(f"{cls}(): scheduler_options[{k!r}] is not supported (muster takes {', '.join(_SCHEDULER_OPTIONS)})")
        if params.get("dashboard_address") is not None:
            opts["dashboard_address"] = params["dashboard_address"]
        if params.get("host") is not None:
            opts["host"] = params["host"]
        if "port" in opts:
            scheduler["port"] = int(opts["port"])
        if "dashboard_address" in opts:
            scheduler["dashboard_port"] = _port(opts["dashboard_address"], f"{cls}(): dashboard_address")
        if opts.get("host"):
            scheduler["host"] = opts["host"]

        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
            raise ValueError(f"{cls}(): n_workers must be a non-negative integer, got {n_workers!r}")
        spec = {
            "backend": backend,
            "worker": worker,
            "scheduler": scheduler,
            "workers": math.ceil(n_workers / processes),
        }
        if name is not None:
            spec["name"] = name
        return spec

    # ---- dask-jobqueue's methods -----------------------------------------

    def scale(self, n: int | None = None, jobs: int = 0, memory: Any = None, cores: Any = None):
        """dask-jobqueue's scale: ``n`` Dask workers, or ``jobs`` jobs (or
        enough jobs for ``cores``/``memory``)."""
        if memory is not None or cores is not None:
            raise TypeError("scale(): cores=/memory= are not supported by dask-muster: give n= workers or jobs=")
        if n is not None:
            jobs = math.ceil(n / self._processes)
        return super().scale(jobs)

    def adapt(self, *args: Any, minimum_jobs: int | None = None, maximum_jobs: int | None = None,
              minimum: int | None = None, maximum: int | None = None, **kwargs: Any):
        """dask-jobqueue's adapt: bounds in workers (``minimum``/``maximum``)
        or jobs (``minimum_jobs``/``maximum_jobs``), run by muster's agent."""
        if args:
            raise TypeError("adapt() takes keyword arguments only")
        lo = minimum_jobs if minimum_jobs is not None else math.ceil((minimum or 0) / self._processes)
        if maximum_jobs is None:
            if maximum is None:
                raise ValueError("adapt(): maximum= (workers) or maximum_jobs= is required")
            maximum_jobs = maximum // self._processes
        return super().adapt(minimum=lo, maximum=maximum_jobs, **kwargs)

    def job_script(self) -> str:
        """The job script muster submits for this cluster's workers: the
        worker item of ``muster render`` for the same spec."""
        return self.sync(self._job_script) if not self.asynchronous else self._job_script()

    async def _job_script(self) -> str:
        spec = dict(self._spec or {})
        spec["workers"] = max(1, int(spec.get("workers") or 1))
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump(spec, f)
        try:
            doc = await _cli.run("render", "-f", f.name, kind="Rendered")
        finally:
            os.unlink(f.name)
        return worker_script(doc["items"])


def worker_script(items: list[dict]) -> str:
    """The worker job script among ``muster render``'s items: the one batch
    script that is not the scheduler's."""
    scripts = [i["text"] for i in items if i["text"].startswith("#!") and "scheduler" not in i["title"]]
    if not scripts:
        raise RuntimeError(f"muster render printed no worker job script (items: {[i['title'] for i in items]})")
    return scripts[0]


_COMMON = (
    "cores", "memory", "processes", "nanny", "interface", "death_timeout", "local_directory",
    "worker_extra_args", "job_extra_directives", "job_script_prologue", "job_directives_skip",
    "log_directory", "shebang", "python", "job_name",
)


class SLURMCluster(JobQueueCluster):
    """dask-jobqueue's ``SLURMCluster``, run by muster (one ``sbatch`` job
    array per scale-up)."""

    config_name = "slurm"
    _kind = "slurm"
    _backend_params = ("queue", "account", "walltime", "job_cpu", "job_mem")


class PBSCluster(JobQueueCluster):
    """dask-jobqueue's ``PBSCluster``, run by muster (one ``qsub`` array per
    scale-up)."""

    config_name = "pbs"
    _kind = "pbs"
    _backend_params = ("queue", "account", "project", "walltime", "resource_spec")
