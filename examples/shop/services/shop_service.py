"""One small HTTP service that plays every part of the example shop.

    python3 shop_service.py storefront | image-processor-svc | payment-gateway | orders

It listens on $PORT and answers `/health/ready`, `/health/live` and its own paths. Its
behaviour is set by environment variables, so rules, canaries and rollbacks have
something real to react to:

    SLOW_MS=200         every request takes 200 ms longer
    WARMUP_S=30         for its first 30 s, requests are slow (2 s) and ready says no
    COLD_S=20           for its first 20 s, requests take 300 ms more, yet ready says yes:
                        "ready" is not "warm" (what the deploy's warm-up gate is for)
    CPU_BURN=0.9        burn 90% of a core all the time
    ERROR_RATE=0.2      answer 20% of requests with 500 (and log an ERROR line each)
    CRITICAL_EVERY=5    log a CRITICAL line every 5 seconds
    FAIL_AT_START=1     exit at once with code 3 (a release that cannot start)
    DECLINE_PAYMENTS=1  payment-gateway declines every payment (POST): 502, and a CRITICAL
                        line each. GETs and health checks still answer 200, so a canary
                        judged on GETs passes: the failure shows once customers pay

And while it runs, by a file beside it: `mode-<role>` (e.g. `mode-image-processor-svc`)
holding `cpu` makes every instance of that role burn 95% of a core; holding `critical`
makes each log a CRITICAL line every half second. Delete the file to stop. The demo and
docs/rules.md use this to make the seed rules fire.

`orders` is stateful: it appends each POSTed order to $DATA_DIR/orders.jsonl, which
survives restarts, and GET /orders says how many there are.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROLE = sys.argv[1] if len(sys.argv) > 1 else "storefront"
INSTANCE = os.environ.get("INSTANCE", ROLE)
RELEASE = os.environ.get("RELEASE", "-")
STARTED = time.monotonic()


def setting(name: str, default: float = 0.0) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def log(level: str, message: str) -> None:
    print(f"{level} {INSTANCE} {message}", flush=True)


def burn(share: float) -> None:
    """Keep one core `share` busy, in 100 ms slices."""
    while True:
        start = time.monotonic()
        while time.monotonic() - start < 0.1 * share:
            pass
        time.sleep(0.1 * (1 - share))


def criticals(every: float) -> None:
    while True:
        time.sleep(every)
        log("CRITICAL", f"{ROLE} failure: upstream declined the request")


def follow_mode() -> None:
    """Burn CPU or log criticals while `mode-<role>` says so (checked every second)."""
    path = f"mode-{ROLE}"
    while True:
        try:
            with open(path) as handle:
                mode = handle.read().strip()
        except OSError:
            mode = ""
        end = time.monotonic() + 1.0
        if mode == "cpu":
            while time.monotonic() < end:
                start = time.monotonic()
                while time.monotonic() - start < 0.095:
                    pass
                time.sleep(0.005)
        elif mode == "critical":
            log("CRITICAL", f"{ROLE} failure: upstream declined the request")
            time.sleep(0.5)
            log("CRITICAL", f"{ROLE} failure: upstream declined the request")
            time.sleep(max(0.0, end - time.monotonic()))
        else:
            time.sleep(1.0)


def warm() -> bool:
    return time.monotonic() - STARTED >= setting("WARMUP_S")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body go out at once

    def do_GET(self) -> None:
        if self.path == "/health/live":
            self.reply(200, {"live": True})
        elif self.path == "/health/ready":
            self.reply(200 if warm() else 503, {"ready": warm()})
        elif self.path in ORDERS and ROLE == "orders":
            self.reply(200, {"orders": count_orders(), "instance": INSTANCE})
        else:
            self.work()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b"{}"
        if ROLE == "orders" and self.path in ORDERS:
            store_order(body)
            self.reply(201, {"stored": True, "instance": INSTANCE})
        elif ROLE == "payment-gateway" and setting("DECLINE_PAYMENTS"):
            log("CRITICAL", f"payment declined: the upstream refused {self.path} (release {RELEASE})")
            self.reply(502, {"error": "payment declined", "instance": INSTANCE, "release": RELEASE})
        else:
            self.work()

    def work(self) -> None:
        delay = setting("SLOW_MS") / 1000 + (0 if warm() else 2.0)
        if time.monotonic() - STARTED < setting("COLD_S"):
            delay += 0.3
        if delay:
            time.sleep(delay)
        if random.random() < setting("ERROR_RATE"):
            log("ERROR", f"{self.command} {self.path} failed")
            self.reply(500, {"error": "internal error", "instance": INSTANCE, "release": RELEASE})
            return
        answer = {"service": ROLE, "instance": INSTANCE, "release": RELEASE, "path": self.path}
        self.reply(200, answer)

    def reply(self, status: int, payload: dict[str, object]) -> None:
        body = json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the interesting ones


ORDERS = ("/orders", "/api/orders")  # by its own address, or through the router


def orders_file() -> str:
    return os.path.join(os.environ.get("DATA_DIR", "."), "orders.jsonl")


def store_order(body: bytes) -> None:
    with open(orders_file(), "ab") as handle:
        handle.write(body.strip() + b"\n")


def count_orders() -> int:
    try:
        with open(orders_file(), "rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def main() -> None:
    if os.environ.get("FAIL_AT_START"):
        log("CRITICAL", "cannot start: FAIL_AT_START is set")
        sys.exit(3)
    if setting("CPU_BURN"):
        threading.Thread(target=burn, args=(min(setting("CPU_BURN"), 1.0),), daemon=True).start()
    if setting("CRITICAL_EVERY"):
        threading.Thread(target=criticals, args=(setting("CRITICAL_EVERY"),), daemon=True).start()
    threading.Thread(target=follow_mode, daemon=True).start()
    port = int(os.environ.get("PORT", "8000"))
    log("INFO", f"{ROLE} listening on 127.0.0.1:{port} (release {os.environ.get('RELEASE', '-')})")
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
