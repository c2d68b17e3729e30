"""What `rules status` and `rules explain` show: the engine's state in words.

One row per rule and service (its state, since when, the values behind it), and for one
rule and service the whole story: each test with its value, threshold and how long it has
held, the action budget and locks of the services it acts on, and its recent decisions.
Read-only: nothing here changes the engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sqlifier.engine.actions import ACTING, target_of, verb_of
from sqlifier.engine.compiled import CompiledRule, Test, show_value, signal_unit
from sqlifier.engine.machine import Engine
from sqlifier.engine.state import RuleState, State
from sqlifier.engine.wording import clock, shown, values_text
from sqlifier.lang.signals import SignalKind
from sqlifier.lang.units import Type

__all__ = ["explain_rule", "rule_rows"]

_DURATION = Type.DURATION
_NUMBER = Type.NUMBER


def rule_rows(engine: Engine, services: Iterable[str] = ()) -> list[dict[str, Any]]:
    """One row per rule and service, in rule order: those evaluated so far, and those
    `services` make candidates that were not evaluated yet."""
    names = list(services)
    out = []
    for rule in engine.rules:
        evaluated = engine.by_rule.get(rule.id, {})
        wanted = dict.fromkeys([*rule.candidates(names), *sorted(evaluated)])
        for service in wanted:
            out.append(_row(engine, rule, service, evaluated.get(service) or RuleState()))
    return out


def explain_rule(engine: Engine, rule_id: str, service: str, now: float) -> dict[str, Any] | None:
    """Everything about one rule for one service, or None when it was never evaluated."""
    rule = engine.rule(rule_id)
    st = engine.states.get((rule_id, service))
    if rule is None or st is None:
        return None
    budget = engine.settings.action_budget
    window = show_value(engine.settings.action_window, _DURATION)
    used = {
        t: len(engine.budget.get(t, ()))
        for t in {target_of(a, service) for a in rule.rule.actions if verb_of(a) in ACTING}
    }
    return {
        "rule": rule_id,
        "service": service,
        "state": _state_name(engine, rule, st),
        "note": _note(rule, st),
        "pending_since": st.pending_since,
        "for": show_value(rule.for_, _DURATION) if rule.for_ else None,
        "cooldown_until": st.cooldown_until,
        "last_fired": st.last_fired,
        "dry_run": rule.dry_run,
        "paused": engine.paused_all or rule_id in engine.paused,
        "tests": [_test(test, st, now) for test in rule.tests],
        "budget": {t: f"{n} of {budget} in {window}" for t, n in used.items()},
        "locks": {t: h for t in used if (h := engine.busy.get(t)) is not None},
        "decisions": [d.to_json() for d in st.history],
        "text": rule.text,
    }


def _test(test: Test, st: RuleState, now: float) -> dict[str, Any]:
    value = st.values.get(test.index)
    item: dict[str, Any] = {
        "test": test.text,
        "kind": test.kind.value,
        "value": shown(test, value),
        "raw": value,
        "holds": None if value is None or test.op is None else test.holds(value),
    }
    if test.op is not None and test.threshold is not None:
        unit = test.unit if test.unit is not _NUMBER else signal_unit(test.signal)
        item["threshold"] = f"{test.op} {show_value(test.threshold, unit)}"
    if test.kind is SignalKind.LEVEL and test.window > 0:
        since = st.held.get(test.index)
        held = 0.0 if since is None else now - since
        item["window"] = show_value(test.window, _DURATION)
        item["held"] = show_value(held, _DURATION)
        item["progress"] = min(1.0, held / test.window)
    elif test.kind is SignalKind.COUNT:
        item["window"] = show_value(test.window, _DURATION)
        if math.isfinite(st.restart) and st.restart > now - test.window:
            item["counting_since"] = st.restart
    return item


def _row(engine: Engine, rule: CompiledRule, service: str, st: RuleState) -> dict[str, Any]:
    return {
        "rule": rule.id,
        "service": service,
        "state": _state_name(engine, rule, st),
        "since": st.pending_since,
        "values": {t.text: shown(t, st.values.get(t.index)) for t in rule.tests},
        "note": _note(rule, st),
        "last_fired": st.last_fired,
        "dry_run": rule.dry_run,
    }


def _note(rule: CompiledRule, st: RuleState) -> str:
    if st.note:
        return st.note
    text = values_text(rule, st)
    if st.state is State.PENDING and st.pending_since is not None:
        text += f"; fires at {clock(st.pending_since + rule.for_)} if it holds"
    return text


def _state_name(engine: Engine, rule: CompiledRule, st: RuleState) -> str:
    if engine.paused_all or rule.id in engine.paused:
        return State.PAUSED.value
    return st.state.value
