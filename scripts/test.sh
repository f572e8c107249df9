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
say "building (cached) and starting the test Kubernetes (tests/services/kubernetes)"
tests/services/kubernetes/build.sh
tests/services/kubernetes/images.sh
k8s_env="${MUSTER_K8S_RUN:-/run/muster-k8s}/env.sh"
# stopped at the end unless it was already running (someone else's, then)
[ -e "$k8s_env" ] || trap 'tests/services/kubernetes/stop.sh || true' EXIT
tests/services/kubernetes/start.sh >/dev/null
. "$k8s_env"   # KUBECONFIG, MUSTER_K8S_DASK_IMAGE, MUSTER_K8S_{KUBECTL,HELM,KUBECONFORM}
export MUSTER_REQUIRE_KUBERNETES=1
say "cargo test"
cargo test --quiet --workspace
# Kubernetes operator: generated CRDs and manifests/ up to date, helm lint,
# helm template | kubeconform -strict with local schemas (scripts/generate.sh).
say "operator chart and CRDs: drift, helm lint, kubeconform"
scripts/generate.sh --check
say "starting the real SLURM (+ Torque-compatible PBS commands) for the batch backends"
tests/services/slurm/start.sh
say "end-to-end tests (real Dask)"
"$MUSTER_PYTHON" -m pytest -q tests/e2e "$@"
