#!/usr/bin/env bash
# The fenced example (examples/fenced): two services, each instance in a network
# namespace of its own with CPU and memory limits, HTTPS at the front door. It shows a
# call by name through the bridge, an outbound connection denied by egress (counted,
# logged, and fired on by a rule: egress_denied()), and an instance that passes its
# memory limit OOM-killed, explained by ps and logs, and restarted. Needs root (network
# namespaces, veth pairs, nftables, cgroups); it runs on a fresh copy of the example and
# leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "demo-isolation.sh needs root: network namespaces, veth pairs, nftables and cgroups" >&2
    exit 1
fi
. scripts/setup.sh
setup_venv demo
export PATH="$PWD/.venv/bin:$PATH"
demo=$(mktemp -d "${TMPDIR:-/tmp}/sqlifier-fenced.XXXXXX")
cp -R examples/fenced "$demo/fenced"
rm -rf "$demo/fenced/.sqlifier" "$demo/fenced/services/__pycache__"
cd "$demo/fenced"
trap 'sqlifier down --env fenced >/dev/null 2>&1 || true; rm -rf "$demo"' EXIT
printf '\033[1mThe fenced example, copied to %s.\033[0m\n' "$PWD"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
# get PATH: a GET through the front door over HTTPS (its certificate is self-signed).
get() { python3 -c 'import ssl, sys, urllib.request as u
try:
    print(u.urlopen("https://127.0.0.1:8453" + sys.argv[1], timeout=10, context=ssl._create_unverified_context()).read().decode().strip())
except OSError as e:
    print("the request failed:", getattr(e, "reason", e))' "$1"; }
# until SECONDS COMMAND...: run COMMAND every half second until it succeeds.
until_ok() { local end=$((SECONDS + $1)); shift; until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { echo "gave up waiting for: $*" >&2; return 1; }; sleep 0.5; done; }

say sqlifier check --strict
sqlifier check --strict

say sqlifier up --detach --env fenced
sqlifier up --detach --env fenced
sqlifier ps --env fenced

printf '\n\033[1mweb calls orders by name: ORDERS_URL is the data plane on the bridge, the one\n'
printf 'destination its egress allows.\033[0m\n'
say "curl -k https://127.0.0.1:8453/"
get /

printf '\n\033[1mAnything else web opens is denied: a reset at once, counted and logged.\033[0m\n'
say "curl -k https://127.0.0.1:8453/call/198.51.100.7/5432"
get /call/198.51.100.7/5432
until_ok 20 grep -q "egress-denied" .sqlifier/fenced/agent.log
say "grep egress-denied .sqlifier/fenced/agent.log"
grep "egress-denied" .sqlifier/fenced/agent.log
printf '\n\033[1mThe signal egress_denied() has it, and the rule in rules/egress.sql fired:\033[0m\n'
until_ok 20 sh -c 'sqlifier rules explain rules/egress.sql:3 --env fenced | grep -q "fired NOTIFY"'
say "sqlifier rules explain rules/egress.sql:3 --env fenced"
sqlifier rules explain rules/egress.sql:3 --env fenced

printf '\n\033[1mweb is held to 64 MiB: asking it to hold 100 MB gets it OOM-killed.\033[0m\n'
say "curl -k https://127.0.0.1:8453/hog/100"
get /hog/100
until_ok 30 sh -c 'sqlifier ps --env fenced | grep -q "OOM-killed"'
printf '\n\033[1mIt restarts by its policy; ps and the log say why it did.\033[0m\n'
until_ok 30 sh -c 'sqlifier ps --env fenced | grep "^web " | grep -q "OOM-killed once"'
say sqlifier ps --env fenced
sqlifier ps --env fenced
say "sqlifier logs web --env fenced | grep OOM"
until_ok 30 sh -c 'sqlifier logs web --env fenced | grep -q "OOM"'
sqlifier logs web --env fenced | grep "OOM" || true
printf '\n\033[1mAnd it serves again.\033[0m\n'
until_ok 30 sh -c 'sqlifier ps --env fenced | grep "^web " | grep -q " ready "'
say "curl -k https://127.0.0.1:8453/"
get /

say sqlifier down --env fenced
sqlifier down --env fenced
