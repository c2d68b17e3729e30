"""`sqlifier slo` and `rules backtest` on SLO signals, from an SLO history written here (the
installed executable, in its own process)."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import pytest

from sqlifier.store.history import History
from sqlifier.store.slo import SloStore
from tests.conftest import run_sqlifier

STACK = """\
[stack]
name = "shop"
rules = ["rules/*.sql"]

[services.web]
run = "x"
routes = ["/"]
slo = { availability = "99.9%", window = "30d" }

[services.api]
run = "y"
"""

PAGE = "RULE page\nON burn_rate(1h) > 14.4 AND burn_rate(5m) > 14.4\nDO NOTIFY 'page';\n"


def write_stack(root: Path) -> float:
    """The stack, and an SLO history: 70 clean minutes, then 50 at 2% errors (burn rate
    20), up to the minute before now. Returns the first bad minute."""
    (root / "sqlifier.toml").write_text(STACK)
    (root / "rules").mkdir()
    (root / "rules" / "page.sql").write_text(PAGE)
    state = root / ".sqlifier" / "dev"
    History(state / "history.db").close()
    store = SloStore(state / "slo.db")
    last = math.floor(time.time() / 60) * 60 - 60
    for minute in range(120):
        t = last - (119 - minute) * 60
        bad = 20.0 if minute >= 70 else 0.0
        store.add("web", "availability", t, 1000 - bad, 1000)
    store.close()
    return last - 49 * 60


def test_slo_shows_the_budget_and_the_burn_rates(tmp_path: Path) -> None:
    write_stack(tmp_path)
    result = run_sqlifier("slo", "web", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["good"], row["total"]) == (119_000, 120_000)
    assert row["budget_left"] == pytest.approx(1 - 1000 / 120)
    assert row["burn_rates"]["300"] == pytest.approx(20.0)
    assert row["policy"] == "approve"
    text = run_sqlifier("slo", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[:3] == [
        "web: availability 99.9% over 30d",
        "  good/total: 119,000 / 120,000 (99.167% good)",
        "  budget left: -733.3%",
    ]
    assert "  exhausted: now: the budget is spent" in text.stdout


def test_slo_refuses_a_service_without_one(tmp_path: Path) -> None:
    write_stack(tmp_path)
    result = run_sqlifier("slo", "api", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        "sqlifier: error: service api has no slo in sqlifier.toml; add one, like "
        'slo = { availability = "99.9%", window = "30d" } under [services.api]\n'
    )
    unknown = run_sqlifier("slo", "nope", cwd=tmp_path)
    assert unknown.returncode == 1
    assert "unknown service 'nope'; services: web, api" in unknown.stderr


def test_backtest_judges_burn_rates_on_the_slo_history(tmp_path: Path) -> None:
    first_bad = write_stack(tmp_path)
    result = run_sqlifier("rules", "backtest", "--since", "3h", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    would = json.loads(result.stdout)["would"]
    assert [(w["rule"], w["service"], w["action"]) for w in would][:1] == [
        ("page", "web", "NOTIFY")
    ]
    # burn_rate(1h) passes 14.4 once 44 of the hour's 60 minutes are bad (44 x 20 / 60):
    # from the 44th bad minute on, at the first of the values replayed every 10 s.
    fired = dt.datetime.fromisoformat(would[0]["t"].replace("Z", "+00:00")).timestamp()
    assert first_bad + 43 * 60 <= fired < first_bad + 43 * 60 + 11
