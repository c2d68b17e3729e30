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
echo "== pytest" && .venv/bin/python -m pytest "$@"
