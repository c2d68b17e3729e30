#!/usr/bin/env bash
# Set up (first run) and run every check: lint, format, types, import layers, and the tests.
# Extra arguments go to pytest: scripts/test.sh -k parser
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv

echo "== ruff check" && .venv/bin/ruff check sqlifier tests benchmarks
echo "== ruff format --check" && .venv/bin/ruff format --check sqlifier tests benchmarks
echo "== mypy --strict" && .venv/bin/mypy
echo "== lint-imports (the layers in pyproject.toml)" && .venv/bin/lint-imports --no-logo --no-cache
# The Kubernetes test control plane (tests/k8s/): built once into a cache outside the
# checkout (scripts/k8s-build.sh) when the packages its build needs are installed; without
# them, the tests that need it skip, naming what is missing. SQLIFIER_K8S_BUILD=no: no build.
k8s=0
scripts/k8s-build.sh --check >/dev/null || k8s=$?
if [ "$k8s" = 3 ] && [ "${SQLIFIER_K8S_BUILD:-yes}" != no ]; then
    echo "== Kubernetes test control plane: first build (5-8 minutes, once)"
    scripts/k8s-build.sh
elif [ "$k8s" != 0 ]; then
    echo "== Kubernetes tests will skip: $(scripts/k8s-build.sh --check || true); scripts/k8s-build.sh builds it"
fi
# SQLIFIER_TEST_WORKERS=3 runs the tests on three workers (pytest-xdist): about 19 minutes
# instead of about 35 on two cores. Tests that share one thing keep to one worker, in order
# (tests/conftest.py: the Kubernetes control plane, the kernel's namespaces and nftables,
# the browser). The default is one process: on two cores, three workers load the machine
# enough that the tests judging real latency and real CPU (a canary's p95 against
# stable's, a sampler's reading) can fail on load alone.
workers=${SQLIFIER_TEST_WORKERS:-0}
if [ "$workers" = 0 ]; then
    echo "== pytest" && .venv/bin/python -m pytest "$@"
else
    echo "== pytest ($workers workers)" && .venv/bin/python -m pytest -n "$workers" --dist loadgroup "$@"
fi
