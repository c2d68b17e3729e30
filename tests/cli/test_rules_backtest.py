"""`sqlifier rules backtest`: rules over recorded history, beside what actually happened.

The history and the decision record are written with the agent's own stores (real SQLite
files), as an agent that ran for the last hour would have left them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlifier.engine.machine import Decision
from sqlifier.lang.signals import LOG_LEVELS
from sqlifier.store.decisions import DecisionLog
from sqlifier.store.history import History
from tests.conftest import run_sqlifier

STACK = """\
[stack]
name = "bt"
rules = ["rules/*.sql"]

[services.web]
run = "python3 -m http.server"
instances = 2
"""


def recorded(root: Path) -> float:
    """An hour of history: web's CPU high from 20 to 30 minutes ago, and 12 critical log
    lines in one 10 s bucket 5 minutes ago."""
    now = time.time()
    state = root / ".sqlifier" / "dev"
    state.mkdir(parents=True)
    history = History(state / "history.db")
    start = now - 3600
    for step in range(360):
        t = start + step * 10
        minutes_ago = (now - t) / 60
        frame = {"web": {"cpu": 0.95 if 20 <= minutes_ago <= 30 else 0.2, "instances": 2.0}}
        if 5 <= minutes_ago < 5 + 10 / 60:
            frame["web"]["log.critical"] = 12.0
        history.append(t, frame)
    history.flush()
    history.close()
    DecisionLog(state / "decisions.db").record(
        [Decision(now - 1500, "hot", "web", "fired", "cpu() > 80%: 95% for 3m", "SCALE", "2 -> 4")]
    )
    assert LOG_LEVELS["critical"] == 50
    return now


def test_backtest_shows_what_rules_would_have_done_and_what_was_done(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "hot.sql").write_text(
        "RULE hot ON cpu() > 80% FOR 3m DO SCALE service.name TO instances + 2 LIMIT 20;\n"
    )
    new = tmp_path / "new.sql"
    new.write_text(
        "RULE hotter ON cpu() > 90% FOR 5m DO SCALE service.name TO instances + 1 LIMIT 20;\n"
        "RULE crit ON log_error(level='critical') > 10 FOR 1m DO RESTART service.name;\n"
    )
    recorded(tmp_path)
    result = run_sqlifier("rules", "backtest", "new.sql", "--since", "1h", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    would = [(a["rule"], a["action"], a["detail"]) for a in out["would"]]
    # CPU was above 90% for 10 minutes: FOR 5m fires twice (at 5 and 10 minutes in)
    assert would.count(("hotter", "SCALE", "2 -> 3")) == 1
    assert ("hotter", "SCALE", "3 -> 4") in would
    assert ("crit", "RESTART", "RESTART service.name") in would
    assert [(d["rule"], d["action"], d["detail"]) for d in out["did"]] == [
        ("hot", "SCALE", "2 -> 4")
    ]

    text = run_sqlifier("rules", "backtest", "--since", "1h", cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "would have done (" in text.stdout and "actually done (1):" in text.stdout


def test_backtest_without_history_says_so(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    result = run_sqlifier("rules", "backtest", cwd=tmp_path)
    assert result.returncode == 1
    assert "no history recorded for bt (dev) yet" in result.stderr


def test_backtest_refuses_a_bad_since(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    result = run_sqlifier("rules", "backtest", "--since", "yesterday", cwd=tmp_path)
    assert result.returncode == 1
    assert "--since yesterday: expected a duration like 30m, 24h or 7d" in result.stderr
