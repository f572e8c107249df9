"""`MusterCluster`: a muster cluster as a `distributed.deploy.Cluster`.

The scheduler and workers are muster's processes or jobs, not this object's:
it asks the bundled `muster` binary to bring them up, scale, adapt and bring
them down, and talks to the scheduler through distributed's own comms (which
is what gives it live ``scheduler_info``, the widget and the logs). Adaptive
scaling is muster's server-side agent, never distributed's client-side loop.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import tempfile
import weakref
from typing import Any

from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster
from distributed.security import Security
from distributed.utils import Log, Logs

from . import _cli, spec as _spec

# Clusters this interpreter created and must bring down if still open at exit.
_OPEN: "weakref.WeakSet[MusterCluster]" = weakref.WeakSet()

# `adapt()` keywords muster's agent takes, and the flag each becomes.
_ADAPT_FLAGS = {
    "interval": "--interval",
    "scale_down_wait": "--scale-down-wait",
    "cooldown": "--cooldown",
    "idle_timeout": "--idle-timeout",
}
# distributed.Adaptive's keywords muster cannot honour, and why.
_ADAPT_REFUSED = {
    "minimum_memory": "muster bounds adaptive scaling in worker jobs, not memory",
    "maximum_memory": "muster bounds adaptive scaling in worker jobs, not memory",
    "target_duration": "muster follows the scheduler's own adaptive target",
    "wait_count": "use scale_down_wait= (how long the target must stay lower)",
}


class MusterCluster(Cluster):
    """A Dask cluster run by muster: locally, on SSH hosts, SLURM or PBS.

    Parameters
    ----------
    spec : dict or path, optional
        A muster cluster spec, as a dict or a YAML file's path.
    name, backend, scheduler, worker, workers (alias n_workers), adapt
        The spec's top-level keys, over ``spec``. ``backend`` is a kind
        (``"local"``, ``"ssh"``, ``"slurm"``, ``"pbs"``) or a mapping.
    shutdown_on_close : bool, default True
        Bring the cluster down in ``close()`` (and at interpreter exit). A
        cluster opened with :meth:`from_name` only disconnects.
    timeout : str or float, default "2m"
        How long ``up`` and ``scale`` wait for the workers to connect.
    asynchronous, loop
        As for every distributed cluster.
    """

    _supports_scaling = True

    def __init__(
        self,
        spec: Any = None,
        *,
        asynchronous: bool = False,
        loop: Any = None,
        shutdown_on_close: bool | None = None,
        timeout: Any = "2m",
        quiet: bool = True,
        _connect_only: bool = False,
        **keywords: Any,
    ):
        caller = type(self).__name__
        if _connect_only:
            name = keywords.pop("name")
            if keywords:
                raise TypeError(f"{caller}.from_name() got unexpected keyword arguments {sorted(keywords)}")
            self._spec: dict | None = None
        else:
            self._spec = _spec.build(spec, caller=caller, **keywords)
            name = self._spec["name"]
        self._connect_only = _connect_only
        self.shutdown_on_close = (not _connect_only) if shutdown_on_close is None else bool(shutdown_on_close)
        self._timeout = _spec.duration(timeout, "timeout")
        self._dashboard_url: str | None = None
        self._backend: str | None = None
        self._desired: int | None = None
        self._adapting = False
        self.security = Security()
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=name)
        if not self.called_from_running_loop:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                self.status = Status.failed
                self._loop_runner.stop()
                raise

    # ---- lifecycle -------------------------------------------------------

    @classmethod
    def from_name(cls, name: str, **kwargs: Any) -> "MusterCluster":
        """Connects to the running muster cluster ``name``; ``close()`` then only
        disconnects (pass ``shutdown_on_close=True`` to bring it down)."""
        return cls(name=name, _connect_only=True, **kwargs)

    def __await__(self):
        async def start():
            if self.status == Status.created:
                await self._start()
            elif self.status in (Status.failed, Status.closed):
                raise RuntimeError(f"cluster {self.name!r} is {self.status.name}")
            return self

        return start().__await__()

    async def _start(self):
        if self.status != Status.created:
            return
        self.status = Status.starting
        try:
            if self._connect_only:
                doc = await self._find()
            else:
                doc = await self._up()
            self._backend = doc["backend"]
            self._dashboard_url = doc.get("dashboard_url")
            address = doc.get("scheduler_address")
            tls = doc.get("tls")
            if tls:
                # The cluster's own CA and client certificate (muster made
                # them at `up`; owner-only files): Client(cluster) uses them.
                self.security = Security(
                    tls_ca_file=tls["ca_file"],
                    tls_client_cert=tls["cert_file"],
                    tls_client_key=tls["key_file"],
                    require_encryption=True,
                )
            if not address:
                raise RuntimeError(f"muster cluster {self.name!r} has no scheduler address (phase {doc.get('phase')})")
            self.scheduler_comm = rpc(address, connection_args=self.security.get_connection_args("client"))
            await super()._start()
        except BaseException:
            self.status = Status.failed
            if self in _OPEN:
                # Up, but not reachable from here: do not leave it running.
                _OPEN.discard(self)
                with contextlib.suppress(Exception):
                    await _cli.run("down", self.name, kind="DownList")
            raise

    async def _find(self) -> dict:
        for item in await _cli.run("get", "clusters", kind="ClusterList"):
            if item["name"] == self.name:
                self._desired = item.get("workers")
                return item
        raise ValueError(f"no muster cluster named {self.name!r} (see `muster get clusters`)")

    async def _up(self) -> dict:
        assert self._spec is not None
        with tempfile.NamedTemporaryFile("w", prefix="muster-spec-", suffix=".yaml", delete=False) as f:
            json.dump(self._spec, f)  # JSON is YAML
        try:
            doc = await _cli.run("up", "-f", f.name, "--timeout", self._timeout, kind="Cluster")
        except _cli.MusterUsageError as e:
            # Name the caller's spec, not the temporary file it went through.
            raise _cli.MusterUsageError(["up", self.name], e.returncode,
                                        e.stderr.replace(f"cluster spec {f.name}", "the cluster spec")
                                        .replace(f.name, "<spec>")) from None
        finally:
            os.unlink(f.name)
        self._desired = doc.get("workers")
        self._adapting = bool(self._spec.get("adapt"))
        if self.shutdown_on_close:
            _OPEN.add(self)
        self._log(f"muster cluster {self.name!r} is up ({doc['backend']} backend)")
        return doc

    async def _close(self):
        if self.status == Status.closed:
            return
        await super()._close()
        _OPEN.discard(self)
        if self.shutdown_on_close and not self._down_done():
            await _cli.run("down", self.name, kind="DownList")
            self._downed = True

    def _down_done(self) -> bool:
        return getattr(self, "_downed", False)

    # ---- scaling ---------------------------------------------------------

    def scale(self, n: int) -> Any:
        """Sets the number of worker jobs (each runs ``worker.processes`` Dask
        workers) and waits until the scheduler sees them; turns adaptive
        scaling off first if it is on."""
        return self.sync(self._scale, n)

    async def _scale(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"scale: n must be a non-negative integer, got {n!r}")
        desc = await _cli.run("describe", self.name, kind="ClusterDescription")
        if desc.get("spec", {}).get("adapt"):
            await _cli.run("adapt", self.name, "--off", kind="Adapt")
        doc = await _cli.run("scale", self.name, n, "--timeout", self._timeout, kind="Cluster")
        self._desired = doc.get("workers", n)
        self._adapting = False
        self._log(f"scaled to {n} worker jobs")

    def adapt(self, Adaptive: Any = None, minimum: int = 0, maximum: int | None = None, **kwargs: Any) -> Any:
        """Turns on muster's own adaptive agent (server side: it keeps running
        when this process exits) between ``minimum`` and ``maximum`` worker
        jobs. Also takes ``interval``, ``scale_down_wait``, ``cooldown`` and
        ``idle_timeout`` (seconds or strings like ``"30s"``)."""
        if Adaptive is not None:
            raise TypeError(
                "adapt(): Adaptive= is not supported: muster adapts on the server side with its own agent"
            )
        for k in kwargs:
            if k in _ADAPT_REFUSED:
                raise TypeError(f"adapt() keyword {k!r} is not supported: {_ADAPT_REFUSED[k]}")
            if k not in _ADAPT_FLAGS:
                raise TypeError(
                    f"adapt() got an unexpected keyword argument {k!r} "
                    f"(muster takes minimum, maximum, {', '.join(_ADAPT_FLAGS)})"
                )
        if maximum is None:
            raise ValueError("adapt(): maximum= is required (muster bounds the number of worker jobs)")
        for what, v in (("minimum", minimum), ("maximum", maximum)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"adapt(): {what} must be a non-negative integer, got {v!r}")
        argv: list[Any] = ["adapt", self.name, "--min", minimum, "--max", maximum]
        for k, v in kwargs.items():
            argv += [_ADAPT_FLAGS[k], _spec.duration(v, f"adapt(): {k}")]
        return self.sync(self._adapt, argv)

    async def _adapt(self, argv: list[Any]):
        doc = await _cli.run(*argv, kind="Adapt")
        self._adapting = doc.get("adapt") is not None
        a = doc.get("adapt") or {}
        self._log(f"adaptive scaling on: {a.get('minimum')} to {a.get('maximum')} worker jobs")

    # ---- what it shows ---------------------------------------------------

    @property
    def dashboard_link(self) -> str:
        return self._dashboard_url or super().dashboard_link

    @property
    def backend(self) -> str | None:
        """The muster backend kind (``local``, ``ssh``, ``slurm``, ``pbs``)."""
        return self._backend

    def _scaling_status(self):
        workers = len(self.scheduler_info["workers"])
        mode = "Adaptive (muster agent)" if self._adapting else "Manual"
        wanted = "" if self._desired is None else f" ({self._desired} worker jobs wanted)"
        return f"""
        <table>
            <tr><td style="text-align: left;">Scaling mode: {mode}</td></tr>
            <tr><td style="text-align: left;">Workers: {workers}{wanted}</td></tr>
        </table>
        """

    async def _get_logs(self, cluster=True, scheduler=True, workers=True):
        logs = await super()._get_logs(cluster=cluster, scheduler=scheduler, workers=workers)
        if cluster:
            events = await _cli.run("events", self.name, kind="EventList")
            lines = [logs["Cluster"]] if logs.get("Cluster") else []
            lines += [f"{e['time']:.3f} {e['kind']}: {e['message']}" for e in events]
            logs["Cluster"] = Log("\n".join(lines))
            # Every job's own log as the cluster manager has it, queued and
            # failed jobs included (they never reach the scheduler).
            for item in await _cli.run("logs", self.name, "--all", kind="LogList"):
                head = f"[muster] {item['role']} job {item['job']}: {item['status']}"
                body = item["text"] if "error" not in item else f"(no log: {item['error']})"
                logs[item["job"]] = Log(f"{head}\n{body}")
        return logs

    def muster_logs(self) -> Logs:
        """Only muster's job logs (the scheduler's and every worker job's)."""
        items = self.sync(_cli.run, "logs", self.name, "--all", kind="LogList")
        return Logs({i["job"]: Log(i["text"]) for i in items})


def _close_open_clusters() -> None:
    """At interpreter exit: bring down the clusters this process created and
    did not close. The event loop may be gone, so the binary is run directly."""
    for c in list(_OPEN):
        _OPEN.discard(c)
        try:
            _cli.run_sync("down", c.name, kind="DownList", timeout=120)
            c._downed = True
        except Exception as e:  # noqa: BLE001 - at exit, report and go on
            print(f"dask-muster: bringing down cluster {c.name!r} at exit failed: {e}")


atexit.register(_close_open_clusters)
