#!/usr/bin/env bash
# Set up (first run) and run the demo: the example shop checked, started, inspected,
# scaled, hurt, healed and stopped — with nothing left running at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv demo
export PATH="$PWD/.venv/bin:$PATH"
cd examples/shop

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
# A tiny HTTP client, so the demo needs nothing but Python: http GET|POST URL [BODY]
http() { python3 -c 'import sys, urllib.request as u; b = sys.argv[3].encode() if len(sys.argv) > 3 else None; print(u.urlopen(u.Request(sys.argv[2], data=b, method=sys.argv[1]), timeout=10).read().decode().strip())' "$@"; }
# Four clients sending GETs through the router for $1 seconds; prints what they got.
load() { python3 -c '
import http.client, sys, threading, time
from collections import Counter
end, seen = time.time() + float(sys.argv[1]), Counter()
def client():
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=10)
            c.request("GET", "/", headers={"Host": "shop.localhost"}); r = c.getresponse(); r.read(); c.close()
            seen["ok" if r.status == 200 else f"HTTP {r.status}"] += 1
        except OSError as e:
            seen[type(e).__name__] += 1
threads = [threading.Thread(target=client) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(f"{sum(seen.values())} requests through the router: " + ", ".join(f"{n} {k}" for k, n in seen.items()))
' "$1"; }
trap 'rm -f services/mode-*; sqlifier down >/dev/null 2>&1 || true' EXIT

say sqlifier check
sqlifier check

say sqlifier fmt --check
sqlifier fmt --check

say "sqlifier up --detach"
sqlifier up --detach

say sqlifier ps
sqlifier ps

say "GET http://127.0.0.1:8080/   (through the router: only ready instances, round robin)"
http GET "http://127.0.0.1:8080/"
http GET "http://127.0.0.1:8080/"
say "POST http://127.0.0.1:8080/api/orders   (the route /api/orders leads to the order store)"
http POST "http://127.0.0.1:8080/api/orders" '{"item": "mug"}'

say "sqlifier restart storefront   (while four clients send requests through the router)"
load 4 &
loader=$!
sleep 1
sqlifier restart storefront
wait "$loader"

say "sqlifier ps   (what each instance served over the last seconds)"
sqlifier ps

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

# --- the seed's rules at work --------------------------------------------------------------
# rule_fired RULE SECONDS: wait until RULE has fired (polling `rules list`), at most SECONDS.
rule_fired() { python3 - "$1" "$2" <<'PY'
import json, subprocess, sys, time
rule, deadline = sys.argv[1], time.time() + float(sys.argv[2])
shown = 0.0
while time.time() < deadline:
    rows = json.loads(subprocess.run(["sqlifier", "rules", "list", "--json"], capture_output=True, text=True).stdout)["rules"]
    row = next(r for r in rows if r["rule"] == rule)
    if row["last_fired"]:
        sys.exit(0)
    if time.time() - shown >= 30:
        shown = time.time()
        print(f"  {rule}: {row['state']}; {row['note']}", flush=True)
    time.sleep(1)
sys.exit(1)
PY
}

say "sqlifier rules test rules/seed.sql --samples samples/seed-story.csv --expect ...   (nothing runs: a virtual clock)"
sqlifier rules test rules/seed.sql --samples samples/seed-story.csv --stack sqlifier.toml \
    --expect samples/seed-story.expected.json

say "echo critical > services/mode-payment-gateway   (two CRITICAL log lines a second)"
echo critical > services/mode-payment-gateway
rule_fired rules/seed.sql:13 60 || echo "  (it did not fire within a minute)"
rm -f services/mode-payment-gateway
say "sqlifier rules explain rules/seed.sql:13"
sqlifier rules explain rules/seed.sql:13

say "sqlifier scale image-processor-svc 1"
sqlifier scale image-processor-svc 1 >/dev/null
say "echo cpu > services/mode-image-processor-svc   (every instance burns a core; the seed rule waits 3 minutes)"
echo cpu > services/mode-image-processor-svc
rule_fired rules/seed.sql:6 300 || echo "  (it did not fire within 5 minutes: is the machine busy?)"
rm -f services/mode-image-processor-svc
sleep 2
say "sqlifier ps   (image-processor-svc: 1 + 2 instances)"
sqlifier ps | grep -E "STATE|image-processor"
say "sqlifier rules explain rules/seed.sql:6"
sqlifier rules explain rules/seed.sql:6
say "sqlifier rules list"
sqlifier rules list

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
echo "Next: docs/operations.md to run a stack; docs/language.md and docs/rules.md for the rules."
