"""`dask muster ...`: the bundled binary as a subcommand of Dask's own CLI
(entry point group ``dask_cli``). Every argument goes to the binary as is."""

from __future__ import annotations

import os
import sys

import click


@click.command(
    "muster",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def main(args: tuple[str, ...]) -> None:
    """Run muster (deploy and scale Dask clusters); `dask muster --help` for its commands."""
    from ._find import find_muster_bin

    binary = find_muster_bin()
    sys.stdout.flush()
    os.execv(binary, [binary, *args])
