#!/usr/bin/env bash
# Set up (first run) and run the demo: the example shop checked, started, inspected,
# scaled, hurt, deployed, rolled back by its rule, healed and stopped — with nothing left
# running at the end. It runs on a fresh copy of examples/shop (the story deploys a
# change to its stack file), so every run starts from a fresh stack and the checkout is
# left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh
setup_venv demo
export PATH="$PWD/.venv/bin:$PATH"
demo=$(mktemp -d "${TMPDIR:-/tmp}/sqlifier-demo.XXXXXX")
cp -R examples/shop "$demo/shop"
rm -rf "$demo/shop/.sqlifier" "$demo/shop/services/__pycache__" "$demo/shop/services/payments.db" \
    "$demo/shop/services"/mode-*
cd "$demo/shop"
printf '\033[1mThe example shop, copied to %s: a fresh stack.\033[0m\n' "$PWD"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
# A tiny HTTP client, so the demo needs nothing but Python: http GET|POST URL [BODY]
http() { python3 -c 'import sys, urllib.request as u; b = sys.argv[3].encode() if len(sys.argv) > 3 else None; print(u.urlopen(u.Request(sys.argv[2], data=b, method=sys.argv[1]), timeout=10).read().decode().strip())' "$@"; }
# load SECONDS [PATH [PAUSE]]: four clients sending GETs to PATH (default /) through the
# router, each PAUSE seconds apart (default 0), for SECONDS or until the file
# $demo/stop-load exists; prints what they got.
load() { python3 -c '
import http.client, os, sys, threading, time
from collections import Counter
end, path, pause, stop = time.time() + float(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
seen = Counter()
def client():
    while time.time() < end and not os.path.exists(stop):
        time.sleep(pause)
        try:
            c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=10)
            c.request("GET", path, headers={"Host": "shop.localhost"}); r = c.getresponse(); r.read(); c.close()
            seen["ok" if r.status == 200 else f"HTTP {r.status}"] += 1
        except OSError as e:
            seen[type(e).__name__] += 1
threads = [threading.Thread(target=client) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(f"{sum(seen.values())} requests through the router: " + ", ".join(f"{n} {k}" for k, n in seen.items()))
' "$1" "${2:-/}" "${3:-0}" "$demo/stop-load"; }
# pay N: N payments (POST /api/pay) through the router; prints how they went.
pay() { python3 -c '
import sys, urllib.error, urllib.request as u
from collections import Counter
seen = Counter()
for _ in range(int(sys.argv[1])):
    try:
        with u.urlopen(u.Request("http://127.0.0.1:8080/api/pay", data=b"{\"cents\": 1200}", method="POST"), timeout=10) as r:
            seen[f"{r.status} ok"] += 1
    except urllib.error.HTTPError as e:
        seen[f"{e.code} {e.reason.lower()}"] += 1
print(f"{sys.argv[1]} payments: " + ", ".join(f"{n} {k}" for k, n in seen.items()))
' "$1"; }
trap 'touch "$demo/stop-load"; sqlifier down >/dev/null 2>&1 || true; wait; cd /; rm -rf "$demo"' EXIT

say sqlifier check
sqlifier check

say sqlifier fmt --check
sqlifier fmt --check

say "sqlifier up --detach   (what it runs is recorded as each service's first release)"
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
    rows = json.loads(subprocess.run(["sqlifier", "rules", "list", "--json"], capture_output=True, text=True).stdout)
    row = next(r for r in rows if r["rule"] == rule)
    if row["last_fired"]:
        sys.exit(0)
    if time.time() - shown >= 10:
        shown = time.time()
        print(f"  {rule}: {row['state']}; {row['note']}", flush=True)
    time.sleep(1)
sys.exit(1)
PY
}

say "sqlifier rules test rules/seed.sql --samples samples/seed-story.csv --expect ...   (nothing runs: a virtual clock)"
sqlifier rules test rules/seed.sql --samples samples/seed-story.csv --stack sqlifier.toml \
    --expect samples/seed-story.expected.json

say "sqlifier releases payment-gateway   (the release up started: live, and the way back after a deploy)"
sqlifier releases payment-gateway

# The deploy story: v2 of payment-gateway declines payments, and the seed's ROLLBACK rule
# takes it back to the release `up` started.
deploy_story() {
    say "v2 of payment-gateway: the stack file points it at a new upstream, which declines every payment"
    cat >>sqlifier.toml <<'TOML'

[services.payment-gateway.env]
DECLINE_PAYMENTS = "1"   # v2: the new upstream (the example service declines every POST)
TOML
    tail -3 sqlifier.toml
    say "sqlifier deploy --service payment-gateway --version v2 --yes   (GETs through the router meanwhile: the canary is judged on them)"
    rm -f "$demo/stop-load"
    load 600 /api/pay 0.02 >/dev/null &
    local loader=$! deployed=0
    sqlifier deploy --service payment-gateway --version v2 --yes --reason "new payment upstream" || deployed=$?
    touch "$demo/stop-load"
    wait "$loader"
    if [ "$deployed" != 0 ]; then
        echo "  (v2 did not go live, so the rule has nothing to roll back. On a busy machine a fresh"
        echo "   canary can lose the latency comparison with stable: run the demo again.)"
        return 0
    fi

    say "15 payments: POST /api/pay   (each is declined, and v2 logs a CRITICAL line for it)"
    pay 15
    echo "  the seed rule counts them: ON log_error(level='critical', service='payment-gateway') > 10 FOR 1m"
    echo "  DO ROLLBACK service 'payment-gateway' TO previous_stable — back to the release up started"
    python3 - <<'PY'
import json, subprocess, sys, time
start = time.time()
while time.time() < start + 90:
    listed = subprocess.run(["sqlifier", "releases", "payment-gateway", "--json"], capture_output=True, text=True)
    releases = {r["version"]: r for r in json.loads(listed.stdout or "[]")}
    if releases.get("v2", {}).get("status") == "rolled back":
        live = next(v for v, r in releases.items() if r["status"] == "live")
        print(f"  rolled back by the rule, {time.time() - start:.0f} s later: payment-gateway runs {live} again")
        sys.exit(0)
    time.sleep(1)
print("  (v2 was not rolled back within 90 s)")
PY
    sqlifier ps | grep -E "STATE|payment"
    say "5 payments again"
    pay 5
    say "sqlifier rules explain rules/seed.sql:13   (why the rule acted)"
    sqlifier rules explain rules/seed.sql:13
    say "sqlifier audit --service payment-gateway   (who did what: the deploy, then the rule's rollback)"
    sqlifier audit --service payment-gateway
    say "sqlifier releases payment-gateway"
    sqlifier releases payment-gateway
}
cp sqlifier.toml "$demo/sqlifier.toml.before-v2"
deploy_story
cp "$demo/sqlifier.toml.before-v2" sqlifier.toml
echo "(the stack file is as it was: v2's change is reverted for the next deploy)"

say "sqlifier scale image-processor-svc 1"
sqlifier scale image-processor-svc 1 >/dev/null
say "sed -i 's/FOR 3m/FOR 30s/' rules/seed.sql   (this copy's SCALE rule waits 30 s, not the seed's 3 minutes, to keep the demo short)"
sed -i 's/ON high_cpu(>80%) FOR 3m/ON high_cpu(>80%) FOR 30s/' rules/seed.sql
grep -n "FOR 30s" rules/seed.sql
sleep 3   # the agent reads changed rule files every 2 seconds
say "echo cpu > services/mode-image-processor-svc   (every instance burns a core; the rule waits 30 s, then adds two)"
echo cpu > services/mode-image-processor-svc
rule_fired rules/seed.sql:6 120 || echo "  (it did not fire within 2 minutes: is the machine busy?)"
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
