"""Where the `muster` binary this package was installed with lives.

maturin's ``bindings = "bin"`` puts it in the environment's scripts directory;
which directory that is depends on how the wheel was installed (a venv, the
base interpreter, ``--user``, ``--prefix``, ``--target``). ``MUSTER_BIN``
overrides the search. Knows nothing about what the binary does.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

_EXE = "muster" + (sysconfig.get_config_var("EXE") or "")


def _candidates() -> list[Path]:
    dirs: list[Path] = []

    def add(path: str | os.PathLike | None) -> None:
        if path:
            p = Path(path)
            if p not in dirs:
                dirs.append(p)

    # The running environment (a venv, or the interpreter's own prefix).
    add(sysconfig.get_path("scripts"))
    # The base interpreter's scripts, when run from a venv over it.
    add(sysconfig.get_path("scripts", vars={"base": sys.base_prefix, "platbase": sys.base_prefix}))
    # `pip install --user`.
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        add(sysconfig.get_path("scripts", scheme=user_scheme))
    # `pip install --target DIR`: the package sits in DIR, scripts in DIR/bin.
    site_dir = Path(__file__).resolve().parent.parent
    add(site_dir / "bin")
    add(site_dir / "Scripts")
    # `pip install --prefix P`: P/lib/pythonX.Y/site-packages/dask_muster -> P/bin.
    if len(site_dir.parents) >= 3:
        add(site_dir.parents[2] / "bin")
        add(site_dir.parents[1] / "Scripts")  # Windows: P/Lib/site-packages
    return dirs


def find_muster_bin() -> str:
    """The path of the `muster` binary: ``$MUSTER_BIN`` if set, else the one
    installed with this package. Raises FileNotFoundError saying where it looked."""
    override = os.environ.get("MUSTER_BIN")
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise FileNotFoundError(f"MUSTER_BIN={override!r} is not an executable file")
    searched = _candidates()
    for d in searched:
        p = d / _EXE
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    raise FileNotFoundError(
        "the muster binary was not found in "
        + ", ".join(str(d) for d in searched)
        + "; reinstall dask-muster (pip install ./python) or set MUSTER_BIN"
    )
