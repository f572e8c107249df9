#!/usr/bin/env bash
# Set everything up and run every test: the quality gates (fmt, clippy), the
# Rust unit and snapshot tests, and the end-to-end tests against real Dask.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
. scripts/setup.sh

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy -D warnings"
cargo clippy --quiet --all-targets -- -D warnings
say "starting the SSH test hosts (network namespaces with sshd)"
tests/services/sshhosts/start.sh 3
export MUSTER_REQUIRE_SSH_HOSTS=1
say "cargo test"
cargo test --quiet --workspace
say "starting the real SLURM (+ Torque-compatible PBS commands) for the batch backends"
tests/services/slurm/start.sh
say "end-to-end tests (real Dask)"
"$MUSTER_PYTHON" -m pytest -q tests/e2e "$@"
say "the dask-muster wheel, installed into a fresh venv, against real Dask, SLURM and SSH hosts"
. scripts/python-wheel.sh
# A -k filter meant for the e2e suite may select nothing here (pytest exit 5).
rc=0
(cd tests/python && "$MUSTER_WHEEL_PYTHON" -m pytest -q . "$@") || rc=$?
if [ "$rc" -ne 0 ] && ! { [ "$rc" -eq 5 ] && [ $# -gt 0 ]; }; then exit "$rc"; fi
