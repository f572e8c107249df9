#!/usr/bin/env bash
# Everything muster's demo and tests need, installed idempotently:
#   - a Python virtualenv with dask[distributed] (and the test tools), cached
#     outside the repo in $MUSTER_CACHE (default ~/.cache/muster), keyed by the
#     hash of tests/requirements.txt so a change of pins makes a fresh one;
#     or your own interpreter instead: MUSTER_PYTHON=/path/to/python (it must
#     import distributed; the test command also needs the packages of
#     tests/requirements.txt);
#   - the release build of muster (and its examples), wherever cargo puts it
#     (CARGO_TARGET_DIR, build.target-dir, ...: scripts/artifacts.py asks cargo).
# Source it (`. scripts/setup.sh`) to get MUSTER_PYTHON, MUSTER_BIN and
# MUSTER_LIBRARY_EXAMPLE exported.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MUSTER_CACHE:-$HOME/.cache/muster}"
mkdir -p "$cache"

say() { printf '==> %s\n' "$*" >&2; }

need_apt() {
    # Installs Debian packages when a command is missing (root, fresh machine).
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- Python with Dask -------------------------------------------------------
if [ -n "${MUSTER_PYTHON:-}" ]; then
    # Your own environment: used as it is, nothing installed into it.
    "$MUSTER_PYTHON" -c 'import distributed' 2>/dev/null ||
        { echo "error: MUSTER_PYTHON=$MUSTER_PYTHON cannot import distributed" >&2; exit 1; }
    say "using your Python $MUSTER_PYTHON (MUSTER_PYTHON)"
else
    base_python="${MUSTER_BASE_PYTHON:-$(command -v python3 || true)}"
    if [ -z "$base_python" ]; then
        need_apt python3 python3-venv
        base_python="$(command -v python3)"
    fi
    if ! "$base_python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        need_apt python3-venv
    fi
    key="$( (cat "$repo/tests/requirements.txt"; "$base_python" --version) | sha256sum | cut -c1-12)"
    venv="$cache/venv-$key"
    if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
        say "creating Python environment $venv (dask[distributed] from PyPI)"
        rm -rf "$venv"
        "$base_python" -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
        "$venv/bin/python" -m pip install -q -r "$repo/tests/requirements.txt"
        touch "$venv/.complete"
    fi
    MUSTER_PYTHON="$venv/bin/python"
fi
export MUSTER_PYTHON

# --- Rust build ---------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
    exit 1
fi
# The SSH backend links libssh2 against the system OpenSSL (see muster-ssh's
# Cargo.toml): the build needs its headers and pkg-config to find them.
need_apt libssl-dev pkg-config
say "building muster (release)"
artifacts="$("$MUSTER_PYTHON" "$repo/scripts/artifacts.py")"
MUSTER_BIN="$(sed -n 's/^muster=//p' <<<"$artifacts")"
MUSTER_LIBRARY_EXAMPLE="$(sed -n 's/^library=//p' <<<"$artifacts")"
export MUSTER_BIN MUSTER_LIBRARY_EXAMPLE
say "ready: muster=$MUSTER_BIN python=$MUSTER_PYTHON"
