"""Rules in a running agent: real CPU makes a rule scale, real critical log lines make one
notify a real webhook and run a command; explain, pause, reload, /metrics, and rule state
across an agent killed with -9.

Conditions are awaited by polling with a generous deadline; nothing asserts on timing.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from sqlifier.store.decisions import DecisionLog
from tests.conftest import ROOT, run_sqlifier
from tests.servers import QuietServer, free_port

SHOP_SERVICE = ROOT / "examples" / "shop" / "services" / "shop_service.py"
DEADLINE = 60.0


class Webhook:
    """A real HTTP server on loopback that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


def rules_json(root: Path) -> list[dict[str, Any]]:
    """`rules list --json`: one object per rule and service, a list like every listing."""
    result = run_sqlifier("rules", "list", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return rows


def rules_problem(root: Path) -> str:
    """What `rules list` says on stderr about the rules as a whole ("" when nothing)."""
    result = run_sqlifier("rules", "list", "--json", cwd=root)
    assert result.returncode == 0, result.stderr
    return result.stderr


def row(root: Path, rule: str) -> dict[str, Any]:
    return next(r for r in rules_json(root) if r["rule"] == rule)


RULES = """\
RULE hot
ON cpu() > 25% FOR 2s
IF service.name = 'burner'
DO SCALE service.name TO instances + 1
LIMIT 2;

RULE crit
ON log_error(level='critical', service='pay') > 2 FOR 30s
DO NOTIFY 'pay is failing: {value}',
   RUN 'python3 -c "import os; print(os.environ[''SQLIFIER_RULE''], os.environ[''SQLIFIER_SERVICE''])"'
COOLDOWN 10m;
"""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, Webhook, int]]:
    hook = Webhook()
    metrics = free_port()
    shutil.copy(SHOP_SERVICE, tmp_path / "shop_service.py")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "live.sql").write_text(RULES)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "live"\nrules = ["rules/*.sql"]\n\n'
        f'[notify]\nwebhook = "{hook.url}"\n\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n\n'
        f'[services.burner]\nrun = "{sys.executable} shop_service.py burner"\n'
        'probes.readiness = { http = "/health/ready", period = "200ms" }\n\n'
        f'[services.pay]\nrun = "{sys.executable} shop_service.py pay"\n'
        'probes.readiness = { http = "/health/ready", period = "200ms" }\n'
    )
    try:
        yield tmp_path, hook, metrics
    finally:
        run_sqlifier("down", cwd=tmp_path)
        hook.close()


def scrape(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
        return response.read().decode()
    finally:
        connection.close()


def test_rules_act_on_real_signals_and_explain_themselves(stack: tuple[Path, Webhook, int]) -> None:
    root, hook, metrics = stack
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    assert row(root, "hot")["state"] in ("inactive", "no data")

    # CPU: every burner instance burns a core, so the rule adds one (LIMIT 2 stops it there).
    (root / "mode-burner").write_text("cpu")
    fired = wait_for("hot to fire", lambda: row(root, "hot")["last_fired"])
    assert fired
    ps = json.loads(run_sqlifier("ps", "--json", cwd=root).stdout)
    wait_for(
        "a second burner",
        lambda: (
            len(
                [
                    i
                    for i in json.loads(run_sqlifier("ps", "--json", cwd=root).stdout)
                    if i["service"] == "burner"
                ]
            )
            == 2
        ),
    )
    explained = json.loads(run_sqlifier("rules", "explain", "hot", "--json", cwd=root).stdout)[0]
    outcomes = [(d["outcome"], d["action"], d["detail"]) for d in explained["decisions"]]
    assert ("fired", "SCALE", "1 -> 2") in outcomes
    assert ("done", "SCALE", "1 -> 2") in outcomes
    wait_for(
        "LIMIT 2 to be reported",
        lambda: (
            "LIMIT 2 reached"
            in json.dumps(run_sqlifier("rules", "explain", "hot", "--json", cwd=root).stdout)
        ),
    )
    text = run_sqlifier("rules", "explain", "hot", cwd=root).stdout
    assert text.startswith("hot for burner: ") and "cpu() > 25%" in text
    nope = run_sqlifier("rules", "explain", "hot", "--service", "nope", cwd=root)
    assert nope.returncode == 1
    assert "unknown service 'nope'; services: " in nope.stderr
    (root / "mode-burner").unlink()
    audit = (root / ".sqlifier" / "dev" / "audit.db").exists()
    assert audit and ps

    # Critical log lines: NOTIFY reaches the webhook, RUN runs without a shell.
    (root / "mode-pay").write_text("critical")
    body = wait_for("the webhook to be called", lambda: hook.received)[0]
    assert body["rule"] == "crit" and body["service"] == "pay"
    assert body["message"].startswith("pay is failing: ")
    assert body["text"].startswith(f"[{body['stack']}/dev] pay is failing: ")
    assert body["text"].endswith(" (rule crit, service pay)")
    (root / "mode-pay").unlink()
    done = wait_for(
        "RUN to finish",
        lambda: [
            d
            for d in json.loads(
                run_sqlifier("rules", "explain", "crit", "--json", cwd=root).stdout
            )[0]["decisions"]
            if d["action"] == "RUN" and d["outcome"] == "done"
        ],
    )
    assert "exit 0; output: crit pay" in done[0]["reason"]
    assert row(root, "crit")["state"] == "cooldown"

    # /metrics for Prometheus.
    page = scrape(metrics)
    assert (
        'sqlifier_rule_state{stack="live",env="dev",rule="crit",service="pay",state="cooldown"} 1'
        in page
    )
    assert 'sqlifier_service_instances{stack="live",env="dev",service="burner"} 2' in page

    # Pause is a kill switch, recorded in the audit.
    assert run_sqlifier("rules", "pause", cwd=root).returncode == 0
    assert all(r["state"] == "paused" for r in rules_json(root))
    assert run_sqlifier("rules", "resume", cwd=root).returncode == 0
    assert not any(r["state"] == "paused" for r in rules_json(root))
    missing = run_sqlifier("rules", "pause", "nope", cwd=root)
    assert missing.returncode == 1 and "no rule 'nope'; rules: hot, crit" in missing.stderr


def test_rule_files_reload_and_a_broken_one_is_refused(stack: tuple[Path, Webhook, int]) -> None:
    root, _, _ = stack
    assert run_sqlifier("up", "--detach", cwd=root).returncode == 0
    extra = root / "rules" / "extra.sql"
    extra.write_text("RULE quiet ON rps() < 1 FOR 1m DO NOTIFY 'quiet';\n")
    wait_for("the new rule", lambda: any(r["rule"] == "quiet" for r in rules_json(root)))
    extra.write_text("RULE quiet ON rps() < 1 FOR 1 minute DO NOTIFY 'quiet';\n")
    problem = wait_for("the refusal", lambda: rules_problem(root))
    assert problem.startswith("rules: rules/extra.sql:1:29: error: expected a duration")
    assert "the previous rules keep running" in problem
    assert {r["rule"] for r in rules_json(root)} >= {"hot", "crit", "quiet"}
    extra.unlink()
    wait_for("the rule to go", lambda: not any(r["rule"] == "quiet" for r in rules_json(root)))
    assert rules_problem(root) == ""


def test_rule_state_survives_an_agent_killed_with_9(stack: tuple[Path, Webhook, int]) -> None:
    root, hook, _ = stack
    assert run_sqlifier("up", "--detach", cwd=root).returncode == 0
    (root / "mode-pay").write_text("critical")
    wait_for("crit to fire", lambda: row(root, "crit")["last_fired"])
    (root / "mode-pay").unlink()
    before = row(root, "crit")
    assert before["state"] in ("cooldown", "firing")
    agent = json.loads((root / ".sqlifier" / "dev" / "agent.json").read_text())["pid"]
    os.kill(agent, signal.SIGKILL)
    wait_for("the agent to die", lambda: run_sqlifier("ps", cwd=root).stdout.find("orphaned") >= 0)
    assert run_sqlifier("up", "--detach", cwd=root).returncode == 0
    after = wait_for("crit to be listed", lambda: row(root, "crit") if rules_json(root) else None)
    assert after["last_fired"] == before["last_fired"]
    assert after["state"] == "cooldown"  # COOLDOWN 10m carried over: no second firing
    assert len(hook.received) == 1


def test_a_prometheus_that_is_down_is_no_data_and_recorded(tmp_path: Path) -> None:
    down = free_port()  # nothing listens here
    shutil.copy(SHOP_SERVICE, tmp_path / "shop_service.py")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "p.sql").write_text(
        "RULE queue ON prometheus('sum(queue_depth{service=\"$service\"})') > 100 FOR 10s "
        "DO SCALE service.name TO instances + 1 LIMIT 3;\n"
        "RULE busy ON rps() >= 0 DO NOTIFY 'still evaluated' COOLDOWN 1h;\n"
    )
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "prom"\nrules = ["rules/*.sql"]\n\n[metrics]\nlisten = "off"\n\n'
        f'[prometheus]\nurl = "http://127.0.0.1:{down}"\ntimeout = "500ms"\n\n'
        f'[services.web]\nrun = "{sys.executable} shop_service.py web"\nroutes = ["/"]\n'
        'probes.readiness = { http = "/health/ready", period = "200ms" }\n\n'
        f'[router]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    try:
        assert run_sqlifier("up", "--detach", cwd=tmp_path).returncode == 0
        item = wait_for(
            "the source error",
            lambda: next(
                (
                    i
                    for i in json.loads(
                        run_sqlifier("rules", "explain", "queue", "--json", cwd=tmp_path).stdout
                    )
                    if i.get("sources")
                ),
                None,
            ),
        )
        assert item["state"] == "no data"
        assert "connection refused" in next(iter(item["sources"].values()))
        log = DecisionLog(tmp_path / ".sqlifier" / "dev" / "decisions.db")
        errors = wait_for("the recorded error", lambda: log.read(outcomes=["source error"]))
        assert errors[0]["service"] == "web"
        assert errors[0]["reason"].startswith("prometheus('sum(queue_depth")
        # the other rule is evaluated all the same
        wait_for("busy to fire", lambda: row(tmp_path, "busy")["last_fired"])
    finally:
        run_sqlifier("down", cwd=tmp_path)
