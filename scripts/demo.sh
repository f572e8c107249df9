#!/usr/bin/env bash
# The main job, end to end on the local backend: set everything up, bring a
# Dask cluster up, run a real computation on it from Python, show the workers,
# scale up and down, and bring it down again.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$repo/scripts/setup.sh"

name="${1:-muster-demo}"
m() { printf '\n$ muster %s\n' "$*"; "$MUSTER_BIN" "$@"; }
trap '"$MUSTER_BIN" down "$name" >/dev/null 2>&1 || true' EXIT

m up "$name" --workers 2 --python "$MUSTER_PYTHON"
address="$("$MUSTER_BIN" get clusters -o json | "$MUSTER_PYTHON" -c '
import json, sys
name = sys.argv[1]
print(next(c["scheduler_address"] for c in json.load(sys.stdin) if c["name"] == name))' "$name")"

printf '\n$ python examples/compute.py %s\n' "$address"
"$MUSTER_PYTHON" "$repo/examples/compute.py" "$address"
m get workers "$name"
m scale "$name" 4
"$MUSTER_PYTHON" "$repo/examples/compute.py" "$address"
m get workers "$name"
m scale "$name" 1
m describe "$name"
m down "$name"
m get clusters
