"""Running the `muster` binary and reading its machine-readable output.

The only place that knows the command lines and the JSON contract
(``muster/v1``: every document an object with ``schema`` and ``kind``; lists
carry ``items``). Async calls run on the caller's event loop; the sync ones are
for places without a loop (atexit). Knows nothing about Dask.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

from ._find import find_muster_bin

SCHEMA = "muster/v1"


class MusterError(RuntimeError):
    """A muster command failed at run time (exit code 1)."""

    def __init__(self, argv: list[str], returncode: int, stderr: str):
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"`muster {' '.join(argv)}` failed (exit {returncode}): {self.stderr}")


class MusterUsageError(MusterError, ValueError):
    """muster refused its input (exit code 2): a bad spec or argument, named in
    the message. Nothing was launched."""


def _error(argv: list[str], rc: int, stderr: str) -> MusterError:
    return (MusterUsageError if rc == 2 else MusterError)(argv, rc, stderr)


def _decode(argv: list[str], out: str, kind: str | None) -> Any:
    try:
        doc = json.loads(out)
    except ValueError as e:
        raise MusterError(argv, 0, f"printed something that is not JSON ({e}): {out[:200]!r}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise MusterError(
            argv,
            0,
            f"printed schema {found!r} but this dask-muster reads {SCHEMA!r}: "
            "the binary and the package come from different versions (reinstall, or fix MUSTER_BIN)",
        )
    if kind is not None and doc.get("kind") != kind:
        raise MusterError(argv, 0, f"printed a {doc.get('kind')!r} document where {kind!r} was expected")
    return doc["items"] if "items" in doc and kind and kind.endswith("List") else doc


def _argv(args: tuple[Any, ...], kind: str | None) -> list[str]:
    argv = [str(a) for a in args]
    if kind is not None:
        argv += ["-o", "json"]
    return argv


async def run(*args: Any, kind: str | None = None, env: dict[str, str] | None = None) -> Any:
    """Runs ``muster ARGS`` (with ``-o json`` when a document ``kind`` is
    expected) and returns the decoded document (a list's items), or stdout.
    The binary shares this process's process group, so a Ctrl-C reaches it
    too (an interrupted `up` rolls back); what it launches detaches itself."""
    argv = _argv(args, kind)
    proc = await asyncio.create_subprocess_exec(
        find_muster_bin(),
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env or os.environ.copy(),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise _error(argv, proc.returncode, err.decode(errors="replace"))
    text = out.decode(errors="replace")
    return _decode(argv, text, kind) if kind is not None else text


def run_sync(*args: Any, kind: str | None = None, timeout: float | None = None) -> Any:
    """``run`` without an event loop."""
    argv = _argv(args, kind)
    p = subprocess.run(
        [find_muster_bin(), *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if p.returncode != 0:
        raise _error(argv, p.returncode, p.stderr)
    return _decode(argv, p.stdout, kind) if kind is not None else p.stdout
