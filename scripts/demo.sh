#!/usr/bin/env bash
# Set up (first run) and run the demo: the example shop's stack file and rules, checked and
# formatted, and a look at how sqlifier reports a mistake.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv
export PATH="$PWD/.venv/bin:$PATH"
cd examples/shop

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say sqlifier check
sqlifier check

say sqlifier fmt --check
sqlifier fmt --check

say "cat rules/seed.sql"
cat rules/seed.sql

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mistake="$scratch/mistakes.sql"
cat >"$mistake" <<'SQL'
ON high_cpu(>80%) FOR 3 minutes
DO SCALE service.name TO instances + 2
LIMIT 20;

ON log_error(level='critical', service='payment-gatway') > 10 FOR 1m
DO ROLLBACK service 'payment-gateway' TO previous_stable;
SQL
say "sqlifier check (two rules, one mistake each)"
sed 's/^/    /' "$mistake"
sqlifier check "$mistake" || true
echo
echo "Next: docs/language.md for the whole language; sqlifier init DIR to start a stack."
