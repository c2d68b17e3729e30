#!/usr/bin/env bash
# Set up (first run) and run the demo: the example shop checked, started, inspected,
# scaled, hurt, healed and stopped — with nothing left running at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv
export PATH="$PWD/.venv/bin:$PATH"
cd examples/shop

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
# A tiny HTTP client, so the demo needs nothing but Python: http GET|POST URL [BODY]
http() { python3 -c 'import sys, urllib.request as u; b = sys.argv[3].encode() if len(sys.argv) > 3 else None; print(u.urlopen(u.Request(sys.argv[2], data=b, method=sys.argv[1]), timeout=10).read().decode().strip())' "$@"; }
port_of() { sqlifier ps --json | python3 -c "import json,sys; print([i['port'] for i in json.load(sys.stdin) if i['instance'] == '$1'][0])"; }
trap 'sqlifier down >/dev/null 2>&1 || true' EXIT

say sqlifier check
sqlifier check

say sqlifier fmt --check
sqlifier fmt --check

say "sqlifier up --detach"
sqlifier up --detach

say sqlifier ps
sqlifier ps

orders=$(port_of orders-0)
say "POST 127.0.0.1:$orders/orders   (orders-0, the stateful order store, by its own address)"
http POST "http://127.0.0.1:$orders/orders" '{"item": "mug"}'
http GET "http://127.0.0.1:$orders/orders"

say "sqlifier scale storefront 3"
sqlifier scale storefront 3

victim=$(sqlifier ps --json | python3 -c "import json,sys; print([i['pid'] for i in json.load(sys.stdin) if i['instance'] == 'payment-gateway-0'][0])")
say "kill -9 $victim   (payment-gateway-0 crashes; the supervisor restarts it)"
kill -9 "$victim"
for _ in $(seq 50); do
    sleep 0.2
    state=$(sqlifier ps --json | python3 -c "import json,sys; i=[i for i in json.load(sys.stdin) if i['instance'] == 'payment-gateway-0'][0]; print(i['state'], i['restarts'])")
    [ "$state" = "ready 1" ] && break
done
sqlifier ps | grep -E "STATE|payment"

say "sqlifier logs payment-gateway"
sqlifier logs payment-gateway

say sqlifier down
sqlifier down
trap - EXIT

say "sqlifier check (two rules, one mistake each)"
scratch=$(mktemp -d)
mistake="$scratch/mistakes.sql"
cat >"$mistake" <<'SQL'
ON high_cpu(>80%) FOR 3 minutes
DO SCALE service.name TO instances + 2
LIMIT 20;

ON log_error(level='critical', service='payment-gatway') > 10 FOR 1m
DO ROLLBACK service 'payment-gateway' TO previous_stable;
SQL
sed 's/^/    /' "$mistake"
sqlifier check "$mistake" || true
rm -rf "$scratch"
echo
echo "Next: docs/operations.md to run a stack; docs/language.md for the rules."
