#!/usr/bin/env bash
# Builds the dask-muster wheel (the muster binary + the dask_muster package,
# with maturin from PyPI) and installs it into a FRESH virtualenv, so the
# Python tests run against what a user would install, not the source tree.
# Source it after scripts/setup.sh; exports MUSTER_WHEEL and MUSTER_WHEEL_PYTHON.
# maturin lives in a cached tools venv keyed by its version; pip's cache
# (under $MUSTER_CACHE) keeps the fresh venv's dependency install quick.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MUSTER_CACHE:-$HOME/.cache/muster}"
maturin_version=1.16.0
tools="$cache/maturin-$maturin_version"
if [ ! -x "$tools/bin/maturin" ] || [ ! -f "$tools/.complete" ]; then
    printf '==> %s\n' "installing maturin $maturin_version (PyPI) into $tools" >&2
    rm -rf "$tools"
    "${MUSTER_BASE_PYTHON:-python3}" -m venv "$tools"
    "$tools/bin/python" -m pip install -q "maturin==$maturin_version"
    touch "$tools/.complete"
fi
wheels="$cache/wheels"
rm -rf "$wheels" && mkdir -p "$wheels"
printf '==> %s\n' "building the dask-muster wheel (maturin, bindings = bin)" >&2
(cd "$repo/python" && "$tools/bin/maturin" build --release --quiet --out "$wheels" >&2)
wheel="$(ls "$wheels"/dask_muster-*.whl)"
venv="$cache/wheel-venv"
printf '==> %s\n' "installing $(basename "$wheel") into a fresh venv $venv" >&2
rm -rf "$venv"
"${MUSTER_BASE_PYTHON:-python3}" -m venv "$venv"
PIP_CACHE_DIR="$cache/pip" "$venv/bin/python" -m pip install -q \
    "$wheel" -r "$repo/tests/requirements.txt" -r "$repo/tests/python/requirements.txt"
export MUSTER_WHEEL="$wheel" MUSTER_WHEEL_PYTHON="$venv/bin/python"
