#!/usr/bin/env bash
# Set up (first run) and run every check: lint, format, types, and the test suite.
# Extra arguments go to pytest: scripts/test.sh -k parser
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv

echo "== ruff check" && .venv/bin/ruff check sqlifier tests benchmarks
echo "== ruff format --check" && .venv/bin/ruff format --check sqlifier tests benchmarks
echo "== mypy --strict" && .venv/bin/mypy
echo "== pytest" && .venv/bin/python -m pytest "$@"
