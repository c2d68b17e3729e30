"""SLOs in a running stack: a real agent, a real router, the example shop's service
answering 5% of requests with 500. Its 99.9% budget burns at 50 times the sustainable
rate, the paging pair `sqlifier init` ships fires (a real webhook hears it), and the next
deploy needs an approver, recorded with its budget in the audit log.

Conditions are awaited by polling with a generous deadline; nothing asserts on timing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlifier.cli import scaffold
from sqlifier.store.audit import AuditLog
from tests.cli.test_deploy import make_shop, wait_for
from tests.cli.test_rules_live import Webhook
from tests.load import Load

__all__ = ["make_shop"]  # the fixture, shared with the deploy tests

SLO = 'slo = { availability = "99.9%", window = "30d" }'


def test_five_percent_errors_burn_the_budget_page_and_gate_the_next_deploy(
    make_shop: Any, tmp_path: Path
) -> None:
    hook = Webhook()
    try:
        shop = make_shop(rules=scaffold.files("shop")["rules/slo.sql"], notify=hook.url)
        shop.set("web", env='ERROR_RATE = "0.05"', extra=SLO)
        up = shop.run("up", "--detach")
        assert up.returncode == 0, up.stderr
        with Load(shop.port, "/web"):
            wait_for(lambda: _paged(hook.received), "the paging pair's notification", 90)
        page = _paged(hook.received)
        assert page["service"] == "web"
        assert page["message"].startswith("page: web burns its error budget at ")

        # `sqlifier slo` reads the SLO history, which the agent writes every 10 s.
        wait_for(lambda: _spent(shop), "sqlifier slo to show the budget spent", 60)

        refused = shop.run("deploy", "-s", "web", "--yes", "--version", "v2")
        assert refused.returncode == 1
        assert "the error budget of web in dev is spent" in refused.stderr
        assert "the deploy needs an approver; run again with --approve" in refused.stderr

        approved = shop.run(
            "deploy", "-s", "web", "--approve", "--detach", "--version", "v3", user="alice"
        )
        assert approved.returncode == 0, approved.stderr
        assert "error budget: SPENT (" in approved.stderr
        entries = AuditLog(tmp_path / ".sqlifier" / "dev" / "audit.db").entries()
        budget = [e for e in entries if e.what == "deploy budget"]
        assert len(budget) == 1
        assert budget[0].who == "alice"
        assert "spent" in budget[0].result and "approved by alice" in budget[0].result
        details = budget[0].details or {}
        assert details["spent"] is True and details["policy"] == "approve"
        assert details["left"] < 0
        refusal = [e for e in entries if e.what == "deploy" and "error budget" in e.result]
        assert refusal and refusal[0].result.startswith("refused: the error budget of web")
    finally:
        hook.close()


def _paged(received: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((r for r in received if r.get("rule") == "slo_page"), None)


def _spent(shop: Any) -> bool:
    result = shop.run("slo", "web", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["objective"], row["target"], row["policy"]) == ("availability", 0.999, "approve")
    return row["budget_left"] is not None and row["budget_left"] < 0 and row["total"] > 0
