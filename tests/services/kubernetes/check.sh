#!/bin/bash
# The test cluster's own check, as scripts/test.sh runs it but alone: build,
# images, start, the smoke test (tests/e2e/test_kubernetes_cluster.py, with
# MUSTER_REQUIRE_KUBERNETES=1 so a missing cluster fails), then stop — unless
# the cluster was already running (then it is left as it was).
# Usage: check.sh [pytest args...]      Python: $MUSTER_PYTHON (scripts/setup.sh)
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_root
py=${MUSTER_PYTHON:-}
if [ -z "$py" ]; then
    py=$(ls -d "$CACHE_ROOT"/venv-*/bin/python 2>/dev/null | head -1)
fi
[ -n "$py" ] && [ -x "$py" ] || die "no Python with dask: run scripts/setup.sh (or set MUSTER_PYTHON)"

"$K8S_DIR/build.sh"
"$K8S_DIR/images.sh"
[ -e "$RUN/env.sh" ] || trap '"$K8S_DIR/stop.sh" || true' EXIT
"$K8S_DIR/start.sh" >/dev/null
. "$RUN/env.sh"
export MUSTER_REQUIRE_KUBERNETES=1
cd "$REPO"
"$py" -m pytest -q -p no:cacheprovider tests/e2e/test_kubernetes_cluster.py "$@"
