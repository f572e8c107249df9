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
# --- YARN (muster-yarn): ZooKeeper + ResourceManager + NodeManager, three JVMs
# from Hadoop 3.4.2's Maven jars on their own loopback ports; its tests FAIL
# (not skip) without it from here on.
say "starting the test YARN (Hadoop 3.4.2 ResourceManager + NodeManager)"
yarn_env="$(tests/services/yarn/start.sh)"
eval "$yarn_env"
export MUSTER_REQUIRE_YARN=1
say "cargo test"
cargo test --quiet --workspace
say "starting the real SLURM (+ Torque-compatible PBS commands) for the batch backends"
tests/services/slurm/start.sh
say "end-to-end tests (real Dask)"
"$MUSTER_PYTHON" -m pytest -q tests/e2e "$@"
