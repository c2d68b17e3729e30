"""The engine's state across agent restarts (the `engine` part of engine.json).

What is saved is what a new agent cannot see for itself: pauses, the action budget's
recent actions, the last scale-ups (for the scale-down delay), the releases already rolled
back from, and per rule and service the times its window and cooldown turn on. A rule whose
text changed while the agent was away starts fresh, as it does when rule files are reloaded.

Values seen (`values`, `note`) and the decision history are not saved: the first tick after
a restart sees the world again, and the history lives in the decision record.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from sqlifier.engine.evaluation import restart_window
from sqlifier.engine.machine import Engine

__all__ = ["load_state", "save_state"]


def save_state(engine: Engine) -> dict[str, Any]:
    """The engine's state as JSON data."""
    texts = {r.id: r.text for r in engine.rules}
    return {
        "paused_all": engine.paused_all,
        "paused": sorted(engine.paused),
        "budget": {s: list(t) for s, t in engine.budget.items() if t},
        "budget_told": sorted(engine.budget_told),
        "scaled_up": engine.scaled_up,
        "rolled_back": sorted([s, r] for s, r in engine.rolled_back),
        "rules": [
            {
                "rule": rule_id,
                "service": service,
                "text": texts.get(rule_id, ""),
                "held": {str(i): t for i, t in st.held.items()},
                "restart": st.restart if math.isfinite(st.restart) else None,
                "cooldown_until": st.cooldown_until,
                "last_fired": st.last_fired,
                "running": st.running is not None,
            }
            for (rule_id, service), st in engine.states.items()
        ],
    }


def load_state(
    engine: Engine,
    data: Mapping[str, Any],
    now: float,
    gap_limit: float = 30.0,
    saved_at: float | None = None,
) -> None:
    """State saved by a previous agent. Conditions held before it stopped keep their
    `since` when the agent was away no longer than `gap_limit` (a longer gap means
    nobody knows whether they held). Actions in progress count as done now."""
    engine.paused_all = bool(data.get("paused_all", False))
    engine.paused = set(data.get("paused", []))
    engine.budget = {s: deque(float(x) for x in t) for s, t in data.get("budget", {}).items()}
    engine.budget_told = set(data.get("budget_told", []))
    engine.scaled_up = {s: float(t) for s, t in data.get("scaled_up", {}).items()}
    engine.rolled_back = {(s, r) for s, r in data.get("rolled_back", [])}
    texts = {r.id: r.text for r in engine.rules}
    keep_held = saved_at is not None and now - saved_at <= gap_limit
    for item in data.get("rules", []):
        rule_id, service = item["rule"], item["service"]
        if texts.get(rule_id) != item.get("text"):
            continue
        st = engine.state_of((rule_id, service))
        if keep_held:
            st.held = {int(i): float(t) for i, t in item.get("held", {}).items()}
        restart = item.get("restart")
        st.restart = float(restart) if restart is not None else -math.inf
        st.cooldown_until = item.get("cooldown_until")
        st.last_fired = item.get("last_fired")
        if item.get("running"):
            rule = engine.rule(rule_id)
            if rule is not None:
                restart_window(rule, st, now)
