"""The files `sqlifier init` writes: a stack with one service, the seed's two rules, and
the SRE workbook's burn-rate alerts on the service's SLO (`rules/slo.sql`).

`.gitignore` keeps `.sqlifier/` (the agent's state: tokens, keys, the audit log) out of git.
It is the one file init may add to rather than create: a folder that is already a
repository often has one (`GITIGNORE_LINE`).
"""

from __future__ import annotations

import json

__all__ = ["GITIGNORE", "GITIGNORE_LINE", "files"]

GITIGNORE = ".gitignore"
GITIGNORE_LINE = ".sqlifier/"

_GITIGNORE = f"""\
# sqlifier's state: API tokens, secret keys, the audit log, releases. Never commit it.
{GITIGNORE_LINE}
"""

_STACK = """\
# The stack file: docs/stack-file.md describes every key.
[stack]
name = "{name}"
rules = ["rules/*.sql"]

[environments.production]
approval = "required"   # deploys to production need --approve from an approver
approvers = [{approver}]  # who may approve: the user names of your team (SQLIFIER_USER)

[services.web]
source = "services/web"
run = "python3 app.py"  # gets PORT, SERVICE, INSTANCE, RELEASE and ENV
instances = 1
routes = ["/"]
# 99.9% of requests not 5xx and 99% within 300ms, over 30 days: docs/slo.md
slo = {{ availability = "99.9%", latency = {{ p = "300ms", target = "99%" }}, window = "30d" }}

[services.web.probes]
readiness = {{ http = "/health/ready", period = "2s" }}
liveness = {{ http = "/health/live", period = "5s" }}
"""

_SCALE = """\
-- If CPU usage on the service is over 80% for 3 minutes,
-- add two more instances, but never exceed 20 total.
ON high_cpu(>80%) FOR 3m
IF service.name = 'web'
DO SCALE service.name TO instances + 2
LIMIT 20;
"""

_ROLLBACK = """\
-- More than 10 critical errors in 1 minute: revert to the last stable version.
ON log_error(level='critical', service='web') > 10 FOR 1m
DO ROLLBACK service 'web' TO previous_stable;
"""

_SLO = """\
-- The error budget, watched as in the SRE workbook: two windows per alert, a long one
-- (enough budget spent to matter) and a short one (still burning now). docs/slo.md
-- explains each; burn rate 1 spends exactly the budget over the SLO's 30 days.

-- Page: 2% of the budget gone in an hour (14.4 x 1h / 30d), still burning.
RULE slo_page
ON burn_rate(1h) > 14.4 AND burn_rate(5m) > 14.4
DO NOTIFY 'page: {service.name} burns its error budget at {value} times the sustainable rate'
COOLDOWN 1h;

-- Ticket: 5% of the budget gone in 6 hours, still burning.
RULE slo_ticket
ON burn_rate(6h) > 6 AND burn_rate(30m) > 6
DO NOTIFY 'ticket: {service.name} burns its error budget at {value} times the sustainable rate'
COOLDOWN 6h;

-- Ticket: 10% of the budget gone in 3 days, still burning.
RULE slo_ticket_slow
ON burn_rate(3d) > 1 AND burn_rate(6h) > 1
DO NOTIFY 'ticket: {service.name} spends more than its error budget allows'
COOLDOWN 1d;
"""

_APP = '''\
"""A tiny HTTP service: answers on $PORT, with health endpoints for the probes."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path in ("/health/ready", "/health/live"):
            body = b"ok\\n"
            content_type = "text/plain"
        else:
            instance = os.environ.get("INSTANCE", "web")
            body = json.dumps({"hello": "world", "instance": instance}).encode() + b"\\n"
            content_type = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        if self.path.startswith("/health/"):
            return  # the probes ask every few seconds: not worth a line each
        print("INFO", format % args, flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def files(name: str, approver: str | None = None) -> dict[str, str]:
    """Relative path -> content of every file of a new stack called `name`, whose
    production environment `approver` (init: the user running it) may approve deploys to;
    without one, it names no approver yet (and `check` warns about it)."""
    # A JSON string is a valid TOML basic string: quotes and backslashes escaped.
    approvers = json.dumps(approver) if approver is not None else ""
    return {
        "sqlifier.toml": _STACK.format(name=name, approver=approvers),
        GITIGNORE: _GITIGNORE,
        "rules/scale.sql": _SCALE,
        "rules/rollback.sql": _ROLLBACK,
        "rules/slo.sql": _SLO,
        "services/web/app.py": _APP,
    }
