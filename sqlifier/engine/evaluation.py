"""One rule's tests at one tick, and its window: a level test holds once it has been true
for the whole FOR; a count test counts the events since the window last restarted (within
the FOR window, or a minute); schedule() is true once in the minute its cron expression
matches; AND and OR combine them with "no data" where it could change the answer.

Each function records the values it read in the rule's state, for the reasons and the
explanations. `restart_window` starts the window again after the rule acted.
"""

from __future__ import annotations

from typing import Any

from sqlifier.engine.compiled import CompiledRule, Test, Tree, World
from sqlifier.engine.expressions import calendar
from sqlifier.engine.state import RuleState, State
from sqlifier.engine.wording import clock
from sqlifier.lang.signals import SignalKind

__all__ = ["EPSILON", "restart_window", "test_result", "tree_result"]

_LEVEL = SignalKind.LEVEL
EPSILON = 1e-6  # clock times are floats: 29.9999999 s of a 30 s window is the window


def tree_result(
    rule: CompiledRule, node: Tree, st: RuleState, service: str, now: float, world: World
) -> tuple[bool | None, bool]:
    """(satisfied: held long enough / counted enough, or None for no data; true now)."""
    if isinstance(node, int):
        return test_result(rule.tests[node], st, service, now, world)
    op, children = node
    results = [tree_result(rule, child, st, service, now, world) for child in children]
    sats = [s for s, _ in results]
    currents = [c for _, c in results]
    if op == "AND":
        if any(s is False for s in sats):
            sat: bool | None = False
        else:
            sat = None if any(s is None for s in sats) else True
        return sat, all(c for c in currents)
    if any(s is True for s in sats):
        return True, True
    return (None if any(s is None for s in sats) else False), any(currents)


def test_result(
    test: Test, st: RuleState, service: str, now: float, world: World
) -> tuple[bool | None, bool]:
    """(satisfied, true now) for one test; None when it has no data."""
    kind = test.kind
    if kind is _LEVEL and not test.memory_percent:
        value = world.store.level(test.service or service, test.key, now)
        st.values[test.index] = value
        if value is None:
            st.held.pop(test.index, None)
            return None, False
        if not test.compare(value, test.threshold):
            st.held.pop(test.index, None)
            return False, False
        since = st.held.get(test.index)
        if since is None:
            since = st.held[test.index] = now
        return now - since >= test.window - EPSILON, True
    if kind is SignalKind.EVENT:
        assert test.cron is not None
        minute = int(now // 60)
        fired_minute = int(st.last_fired // 60) if st.last_fired is not None else None
        true = _cron_matches(test, calendar(now)) and fired_minute != minute
        st.values[test.index] = 1.0 if true else 0.0
        return true, true
    if test.memory_percent:  # a limit to compare with comes with resource limits
        st.values[test.index] = None
        return None, False
    counted = test.read(world, service, now, st.restart)
    st.values[test.index] = counted
    true = counted is not None and test.holds(counted)
    return true, true


def _cron_matches(test: Test, when: Any) -> bool:
    cron = test.cron
    assert cron is not None
    weekday = (when.tm_wday + 1) % 7  # struct_time: Monday = 0; cron: Sunday = 0
    return cron.matches(when.tm_min, when.tm_hour, when.tm_mday, when.tm_mon, weekday)


def restart_window(rule: CompiledRule, st: RuleState, now: float) -> None:
    """The window starts again: at once, or when the cooldown ends."""
    st.pending_since = None
    if rule.cooldown > 0:
        st.cooldown_until = now + rule.cooldown
        st.held.clear()
        st.state = State.COOLDOWN
        st.note = f"cooling down until {clock(st.cooldown_until)}"
        return
    st.restart = now
    # Level tests true right now start their new window now.
    st.held = dict.fromkeys(st.held, now)
    st.state = State.INACTIVE
    st.note = "the window restarted"
