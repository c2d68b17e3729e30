"""The router's counters and latency histogram on a real agent's /metrics, with each data
plane: what promtool says of the page, what a real Prometheus computes from it with
`rate()`, `sum by` and `histogram_quantile()`, and counters that keep growing when the data
plane is killed and started again.

Conditions are awaited by polling with a generous deadline; nothing asserts on timing. The
one latency figure checked (a service that sleeps 250 ms per request) is bounded by the
sleep below and by a generous margin above.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_sqlifier
from tests.prom import PROMTOOL, instant, needs_prometheus, needs_promtool, running_prometheus
from tests.servers import KINDS, free_port

DEADLINE = 60.0
DASHBOARD = ROOT / "examples" / "grafana" / "sqlifier.json"

# GET /status/503 answers 503 (and logs an error); a request under /api/pay takes 250 ms.
APP = """\
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200
        if self.path.startswith("/status/"):
            status = int(self.path.rsplit("/", 1)[1])
            print("ERROR answering", status, file=sys.stderr, flush=True)
        if self.path.startswith("/api/pay"):
            time.sleep(0.25)
        body = os.environ["INSTANCE"].encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


@pytest.fixture(params=KINDS)
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    """A running stack (web: 2 instances on /, pay on /api/pay): its folder, the router's
    port and the agent's /metrics port."""
    port, metrics = free_port(), free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "loud.sql").write_text(
        "RULE loud ON log_error(service='web') > 2 DO NOTIFY 'web logs errors' COOLDOWN 1h;\n"
    )
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "m"\nrules = ["rules/*.sql"]\n\n[router]\nkind = "{request.param}"\n'
        f'listen = "127.0.0.1:{port}"\n\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n\n'
        f'[services.web]\nrun = "{sys.executable} app.py"\ninstances = 2\nroutes = ["/"]\n'
        'probes.readiness = { http = "/ready", period = "200ms" }\n\n'
        f'[services.pay]\nrun = "{sys.executable} app.py"\nroutes = ["/api/pay"]\n'
        'probes.readiness = { http = "/ready", period = "200ms" }\n'
    )
    up = run_sqlifier("up", "--detach", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    try:
        yield tmp_path, port, metrics
    finally:
        run_sqlifier("down", cwd=tmp_path)


def get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def send(port: int, path: str, count: int, status: int = 200) -> None:
    for _ in range(count):
        assert get(port, path)[0] == status


def samples(page: str, name: str) -> dict[str, float]:
    """The lines of one metric on a /metrics page: labels -> value, without stack and env."""
    found = {}
    for line in page.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels.replace('stack="m",env="dev",', "")] = float(value)
    return found


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def requests_shown(metrics: int, service: str, code: str, count: float) -> bool:
    page = get(metrics, "/metrics")[1]
    shown = samples(page, "sqlifier_router_requests_total")
    return shown.get(f'{{service="{service}",track="stable",code="{code}"}}') == count


@needs_promtool
def test_the_page_has_the_counters_the_histogram_and_what_the_dashboard_uses(
    stack: tuple[Path, int, int],
) -> None:
    _, port, metrics = stack
    send(port, "/", 30)
    send(port, "/status/503", 5, status=503)
    send(port, "/api/pay", 2)
    wait_for("pay's count", lambda: requests_shown(metrics, "pay", "2xx", 2))
    page = get(metrics, "/metrics")[1]

    requests = samples(page, "sqlifier_router_requests_total")
    assert requests['{service="web",track="stable",code="2xx"}'] == 30
    assert requests['{service="web",track="stable",code="5xx"}'] == 5
    assert requests['{service="web",track="canary",code="2xx"}'] == 0
    name = "sqlifier_router_request_duration_seconds"
    buckets = samples(page, f"{name}_bucket")
    pay = {k: v for k, v in buckets.items() if 'service="pay",track="stable"' in k}
    assert len(pay) == 26 and pay['{service="pay",track="stable",le="+Inf"}'] == 2
    assert pay['{service="pay",track="stable",le="0.2"}'] == 0  # each took at least 250 ms
    assert samples(page, f"{name}_count")['{service="pay",track="stable"}'] == 2
    assert samples(page, f"{name}_sum")['{service="pay",track="stable"}'] >= 0.5
    # Today's gauges are still there beside them.
    assert 'sqlifier_service_requests_per_second{stack="m",env="dev",service="web"}' in page

    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=page,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")

    # Every metric the Grafana dashboard uses is on the page (the rule's action and
    # decision counters appear once it has fired).
    used = dashboard_metrics()
    assert "sqlifier_router_request_duration_seconds_bucket" in used
    deadline = time.monotonic() + DEADLINE
    while (missing := used - names_on(get(metrics, "/metrics")[1])) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.2)
    assert not missing, f"the dashboard uses metrics /metrics does not have: {missing}"


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return queries + [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]


def dashboard_metrics() -> set[str]:
    """The metric names in the dashboard's queries and variables."""
    return {name for q in dashboard_queries() for name in re.findall(r"\bsqlifier_[a-z_]+", q)}


def names_on(page: str) -> set[str]:
    return {line.split("{")[0] for line in page.splitlines() if not line.startswith("#")}


def router_pid(root: Path) -> int | None:
    try:
        info = json.loads((root / ".sqlifier" / "dev" / "agent.json").read_text())
        return int(info["router"]["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@needs_prometheus
def test_prometheus_rates_sums_and_quantiles_and_counters_survive_a_new_data_plane(
    stack: tuple[Path, int, int], tmp_path: Path
) -> None:
    root, port, metrics = stack
    with running_prometheus(tmp_path / "prometheus", [f"127.0.0.1:{metrics}"]) as prometheus:

        def query(promql: str) -> dict[str, float]:
            result = instant(prometheus.url, promql)["result"]
            # Keyed by the labels that tell the series apart here: service, or none.
            return {
                f"service={r['metric']['service']}" if "service" in r["metric"] else "": float(
                    r["value"][1]
                )
                for r in result
            }

        # A rate needs the counter before the requests too: Prometheus sees it at 0 first.
        wait_for(
            "the counters at 0",
            lambda: len(query("sum by (service) (sqlifier_router_requests_total)")) == 2,
        )
        send(port, "/", 20)
        send(port, "/api/pay", 4)
        rates = wait_for(
            "a rate for both services",
            lambda: (
                (
                    found := query(
                        'sum by (service) (rate(sqlifier_router_requests_total{env="dev"}[1m]))'
                    )
                )
                and len(found) == 2
                and all(v > 0 for v in found.values())
                and found
            ),
        )
        assert set(rates) == {"service=pay", "service=web"}
        # pay's histogram series appear with its first answer: when no scrape fell among
        # those four, Prometheus saw them only at their final count, a rate of 0 and a p99
        # of NaN. Four more answers, once it has the series, give them a rate.
        wait_for(
            "pay's histogram in Prometheus",
            lambda: (
                "service=pay"
                in query("sum by (service) (sqlifier_router_request_duration_seconds_count)")
            ),
        )
        send(port, "/api/pay", 4)

        def pay_p99() -> float | None:
            found = query(
                "histogram_quantile(0.99, sum by (le, service) "
                "(rate(sqlifier_router_request_duration_seconds_bucket[1m])))"
            ).get("service=pay")
            return None if found is None or math.isnan(found) else found

        p99 = wait_for("pay's p99", pay_p99)
        assert 0.2 <= p99 <= 0.5  # 250 ms of sleep, in the (0.2, 0.3] bucket or one above

        # The dashboard's panels are queries Prometheus accepts, and they find data.
        chosen = {"$stack": "m", "$env": "dev", "$service": ".*", "$__rate_interval": "1m"}
        for promql in dashboard_queries():
            if promql.startswith("label_values("):
                continue  # Grafana's own function, not PromQL
            for variable, value in chosen.items():
                promql = promql.replace(variable, value)
            instant(prometheus.url, promql)  # asserts that the query succeeds
        assert query(
            "histogram_quantile(0.5, sum by (le, service) (rate("
            'sqlifier_router_request_duration_seconds_bucket{stack="m",env="dev",service=~".*"}[1m])))'
        )

        # The data plane dies; the agent starts a new one, which counts from zero.
        wait_for("web's 20 on /metrics", lambda: requests_shown(metrics, "web", "2xx", 20))
        old = router_pid(root)
        assert old is not None
        os.killpg(old, signal.SIGKILL)
        wait_for("a new data plane", lambda: router_pid(root) not in (None, old))
        answered = wait_for("the new data plane to answer", lambda: _answers(port))
        send(port, "/", 10)
        wait_for("all of them", lambda: requests_shown(metrics, "web", "2xx", 30 + answered))
        web = 'sqlifier_router_requests_total{service="web",track="stable",code="2xx"}'
        wait_for("Prometheus to see them", lambda: query(web) == {"service=web": 30 + answered})
        assert query(f"sum(resets({web}[5m]))") == {"": 0}


def _answers(port: int) -> int:
    """1 once a request through the router is answered 200 (it is counted), else 0."""
    try:
        return 1 if get(port, "/")[0] == 200 else 0
    except OSError:
        return 0
