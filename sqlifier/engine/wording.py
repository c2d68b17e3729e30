"""How the engine words what it sees: values with their units, times, the values behind a
state. Shared by the reasons the engine records and the explanations of `rules explain`."""

from __future__ import annotations

from sqlifier.engine.compiled import CompiledRule, Test, show_value, signal_unit
from sqlifier.engine.expressions import calendar
from sqlifier.engine.state import RuleState
from sqlifier.lang.signals import SignalKind
from sqlifier.lang.units import Type

__all__ = ["clock", "shown", "values_text"]

_DURATION = Type.DURATION
_NUMBER = Type.NUMBER


def clock(t: float) -> str:
    """A time in a reason: seconds from 0 in replays, UTC clock time live."""
    if t < 10 * 86400 * 365:
        return f"t={show_value(t, _NUMBER)}s"
    when = calendar(t)
    return f"{when.tm_hour:02d}:{when.tm_min:02d}:{when.tm_sec:02d}Z"


def shown(test: Test, value: float | None) -> str:
    """A test's value as the rule would write it: `91%`, `3 in 1m`, `no data`."""
    if value is None:
        return "no data"
    if test.kind is SignalKind.COUNT:
        return f"{int(value)} in {show_value(test.window, _DURATION)}"
    return show_value(value, test.unit if test.unit is not _NUMBER else signal_unit(test.signal))


def values_text(rule: CompiledRule, st: RuleState) -> str:
    """Every test of the rule with its last value: `cpu() > 80%: 91%; ...`."""
    parts = []
    for test in rule.tests:
        value = st.values.get(test.index)
        if test.kind is SignalKind.EVENT:
            parts.append(f"{test.text} {'matches' if value else 'does not match'}")
            continue
        parts.append(f"{test.text}: {shown(test, value)}")
    return "; ".join(parts)
