"""The rule engine: one small state machine per rule and service, driven by a clock it is
handed, never one it reads.

Each `tick(now, world)` evaluates every rule for every service it applies to and returns
what it decided (`Decision`, every one with its reason and the values behind it) and what
must be done (`Command`). Whoever runs the commands (the live agent, or a replay) calls
`complete(firing, now)` when they are done: the rule's window restarts then.

States: inactive -> pending(since) -> firing, and cooldown, no data, dry run, paused,
budget exhausted. The semantics are those of the rule language (docs/rules.md):

- a level test with FOR must hold at every evaluation for the whole duration;
- a count test counts events over the FOR window (1 minute without FOR) since the window
  last restarted;
- after a rule acts, its window restarts when the actions complete, or when its COOLDOWN
  ends;
- LIMIT bounds a SCALE in its direction of travel; a scale-down waits `scale_down_delay`
  after a scale-up of the same service; when two rules scale the same service in the same
  tick, the one that keeps more capacity wins;
- actions on one service are serialized; past the action budget the engine stops acting
  on the service and notifies once; ROLLBACK never rolls back a rollback.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlifier.engine.compiled import (
    CompiledRule,
    NoData,
    ServiceView,
    Test,
    Tree,
    World,
    calendar,
    condition_holds,
    evaluate,
    render_message,
    show_value,
    signal_unit,
)
from sqlifier.lang import ast
from sqlifier.lang.printer import format_action
from sqlifier.lang.signals import SignalKind
from sqlifier.lang.units import Type
from sqlifier.signals.series import SeriesStore

__all__ = ["Command", "Decision", "Engine", "Settings", "State", "TickResult"]

ACTING = frozenset(
    {"SCALE", "RESTART", "ROLLBACK", "ABORT ROLLOUT", "PAUSE ROLLOUT", "RESUME ROLLOUT", "RUN"}
)
_LEVEL = SignalKind.LEVEL
_EPSILON = 1e-6  # clock times are floats: 29.9999999 s of a 30 s window is the window
_DURATION = Type.DURATION
_NUMBER = Type.NUMBER
KEEP_DECISIONS = 20  # per rule and service, in memory, for explanations


class State(enum.Enum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    COOLDOWN = "cooldown"
    NO_DATA = "no data"
    DRY_RUN = "dry run"
    PAUSED = "paused"
    BUDGET = "budget exhausted"


@dataclass(frozen=True, slots=True)
class Settings:
    scale_down_delay: float = 300.0
    action_budget: int = 10
    action_window: float = 600.0


@dataclass(frozen=True, slots=True)
class Decision:
    t: float
    rule: str
    service: str
    outcome: str  # fired | would fire | skipped | pending | no data | cleared | done | failed
    reason: str
    action: str | None = None  # the verb: SCALE, NOTIFY, ...
    detail: str | None = None  # "2 -> 4", the message, the command
    values: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "rule": self.rule,
            "service": self.service,
            "outcome": self.outcome,
            "reason": self.reason,
            "action": self.action,
            "detail": self.detail,
            "values": dict(self.values),
        }


@dataclass(frozen=True, slots=True)
class Command:
    """Something to do. `firing` groups the commands of one firing of one rule."""

    firing: int
    t: float
    rule: str
    service: str  # the service the rule was evaluated for
    target: str  # the service acted on
    verb: str  # SCALE RESTART ROLLBACK "ABORT ROLLOUT" ... NOTIFY RUN
    detail: str
    reason: str
    count: int | None = None  # SCALE: the new instance count
    previous: int | None = None  # SCALE: the count before
    to: str | None = None  # ROLLBACK: previous_stable | previous | a version
    text: str | None = None  # NOTIFY: the message; RUN: the command line
    env: Mapping[str, str] = field(default_factory=dict)  # RUN: the event
    release: str | None = None  # ROLLBACK: the release rolled back from


@dataclass(slots=True)
class TickResult:
    decisions: list[Decision] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)


@dataclass(slots=True)
class _Rule:
    """The state of one rule for one service."""

    state: State = State.INACTIVE
    held: dict[int, float] = field(default_factory=dict)  # level test -> true since
    restart: float = -math.inf  # events at or before this are out of the window
    cooldown_until: float | None = None
    running: int | None = None  # the firing whose commands are in progress
    last_fired: float | None = None
    pending_since: float | None = None
    values: dict[int, float | None] = field(default_factory=dict)
    note: str = ""  # why it is in its state, in words
    skip: str | None = None  # the last skip recorded, so that it is recorded once
    history: deque[Decision] = field(default_factory=lambda: deque(maxlen=KEEP_DECISIONS))


@dataclass(slots=True)
class _Planned:
    """One action of a firing, before scale conflicts are settled."""

    action: ast.Action
    verb: str
    target: str
    detail: str
    count: int | None = None
    previous: int | None = None
    to: str | None = None
    text: str | None = None
    skipped: str | None = None
    settled: bool = False  # skipped, yet it took part in this tick's decision (a lost race)


@dataclass(slots=True)
class _Firing:
    rule: CompiledRule
    service: str
    key: tuple[str, str]
    reason: str
    values: dict[str, str]
    planned: list[_Planned]
    view: ServiceView


class Engine:
    def __init__(self, rules: Sequence[CompiledRule], settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.rules: list[CompiledRule] = list(rules)
        self.states: dict[tuple[str, str], _Rule] = {}
        self._by_rule: dict[str, dict[str, _Rule]] = {}  # the same states, found faster
        self.paused_all = False
        self.paused: set[str] = set()
        self.busy: dict[str, str] = {}  # service -> what holds its lock
        self.budget: dict[str, deque[float]] = {}  # service -> times of its actions
        self.budget_told: set[str] = set()
        self.scaled_up: dict[str, float] = {}  # service -> last scale-up
        self.rolled_back: set[tuple[str, str]] = set()  # (service, release) rolled back from
        self.firings: dict[int, tuple[tuple[str, str], set[str], int]] = {}
        self._next_firing = 1
        self.ticks = 0
        self._views: dict[str, ServiceView | None] = {}  # this tick's, read once

    # --- rules -----------------------------------------------------------------------

    def replace_rules(self, rules: Sequence[CompiledRule]) -> None:
        """New rule files: a rule whose text is unchanged keeps its state."""
        old = {r.id: r.text for r in self.rules}
        self.rules = list(rules)
        keep = {r.id for r in rules if old.get(r.id) == r.text}
        self.states = {k: v for k, v in self.states.items() if k[0] in keep}
        self._by_rule = {}
        for (rule_id, service), st in self.states.items():
            self._by_rule.setdefault(rule_id, {})[service] = st

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    # --- the tick --------------------------------------------------------------------

    def tick(self, now: float, world: World, services: Iterable[str]) -> TickResult:
        """Evaluate every rule for every service once."""
        self.ticks += 1
        self._views = {}
        result = TickResult()
        all_services = list(services)
        firings: list[_Firing] = []
        for rule in self.rules:
            states = self._by_rule.setdefault(rule.id, {})
            candidates = rule.candidates(all_services)
            if rule.simple is not None:
                candidates = self._sweep(rule, rule.simple, states, candidates, now, world)
            for service in candidates:
                firing = self._evaluate(rule, states, service, now, world, result)
                if firing is not None:
                    firings.append(firing)
        if firings:
            self._settle_scales(firings)
            for firing in firings:
                self._fire(firing, now, world, result)
        return result

    def _sweep(
        self,
        rule: CompiledRule,
        test: Test,
        states: dict[str, _Rule],
        candidates: list[str],
        now: float,
        world: World,
    ) -> list[str]:
        """The common case, fast: a rule of one level test and no IF, whose state stays
        inactive or pending at this tick. Returns the services that need the full
        evaluation (anything else: a change of state, a firing, no data, a cooldown)."""
        rest = []
        level = world.store.level
        key, index, compare, threshold, window = (
            test.key, test.index, test.compare, test.threshold, test.window
        )  # fmt: skip
        views = self._views
        for service in candidates:
            st = states.get(service)
            if st is None or st.running is not None or st.cooldown_until is not None:
                rest.append(service)
                continue
            if service not in views:
                views[service] = world.service(service)
            if views[service] is None:
                rest.append(service)
                continue
            value = level(test.service or service, key, now)
            if value is None:
                rest.append(service)
                continue
            st.values[index] = value
            held = st.held
            if not compare(value, threshold):
                if held:
                    held.pop(index, None)
                if st.state is not State.INACTIVE:
                    rest.append(service)
                continue
            since = held.get(index)
            if since is None or st.state is not State.PENDING or now - since >= window - _EPSILON:
                rest.append(service)
        return rest

    def _state(self, key: tuple[str, str]) -> _Rule:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = _Rule()
            self._by_rule.setdefault(key[0], {})[key[1]] = state
        return state

    def _evaluate(
        self,
        rule: CompiledRule,
        states: dict[str, _Rule],
        service: str,
        now: float,
        world: World,
        result: TickResult,
    ) -> _Firing | None:
        st = states.get(service)
        if st is None:
            st = self._state((rule.id, service))
        elif st.running is not None:
            return None
        if service in self._views:
            view = self._views[service]
        else:
            view = self._views[service] = world.service(service)
        if view is None:
            st.held.clear()
            why = f"service {service} is not in the stack"
            self._enter(st, (rule.id, service), now, State.NO_DATA, why, result)
            return None
        if st.cooldown_until is not None:
            if now < st.cooldown_until:
                st.state = State.COOLDOWN
                st.note = f"cooling down until {_clock(st.cooldown_until)}"
                return None
            st.restart = st.cooldown_until - 1e-9  # the window starts with the cooldown's end
            st.cooldown_until = None
            st.held.clear()
        if rule.rule.condition is not None:
            holds = condition_holds(rule.rule.condition, view, now)
            if holds is not True:
                st.held.clear()
                reason = "IF is false" if holds is False else "IF reads a field with no value"
                self._enter(st, (rule.id, service), now, State.INACTIVE, reason, result)
                return None
        tree = rule.tree
        if isinstance(tree, int):
            satisfied, current = self._test(rule.tests[tree], st, service, now, world)
        else:
            satisfied, current = self._tree(rule, tree, st, service, now, world)
        if satisfied is None:
            if st.state is not State.NO_DATA:
                missing = [t.text for t in rule.tests if st.values.get(t.index) is None]
                reason = f"no data for {', '.join(missing)}" if missing else "no data"
                self._enter(st, (rule.id, service), now, State.NO_DATA, reason, result)
            return None
        if not satisfied:
            # The notes of these two states are written when shown (rows, explain).
            if current:
                if st.state is not State.PENDING:
                    held = [st.held[t.index] for t in rule.tests if t.index in st.held]
                    since = max(held, default=now)
                    reason = f"{self._values_text(rule, st)}; fires at {_clock(since + rule.for_)}"
                    self._enter(st, (rule.id, service), now, State.PENDING, reason, result)
                    st.pending_since, st.note = since, ""
            elif st.state is not State.INACTIVE:
                self._enter(
                    st, (rule.id, service), now, State.INACTIVE, self._values_text(rule, st), result
                )
                st.note = ""
            return None
        if self.paused_all or rule.id in self.paused:
            why = "all rules are paused" if self.paused_all else "the rule is paused"
            self._enter(st, (rule.id, service), now, State.PAUSED, why, result)
            self._skip(st, (rule.id, service), now, f"skipped: {why}", result)
            return None
        return self._plan(rule, service, (rule.id, service), st, view, now, world, result)

    def _tree(
        self, rule: CompiledRule, node: Tree, st: _Rule, service: str, now: float, world: World
    ) -> tuple[bool | None, bool]:
        """(satisfied: held long enough / counted enough, or None for no data; true now)."""
        if isinstance(node, int):
            return self._test(rule.tests[node], st, service, now, world)
        op, children = node
        results = [self._tree(rule, child, st, service, now, world) for child in children]
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

    def _test(
        self, test: Test, st: _Rule, service: str, now: float, world: World
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
            return now - since >= test.window - _EPSILON, True
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

    # --- acting ----------------------------------------------------------------------

    def _plan(
        self,
        rule: CompiledRule,
        service: str,
        key: tuple[str, str],
        st: _Rule,
        view: ServiceView,
        now: float,
        world: World,
        result: TickResult,
    ) -> _Firing | None:
        targets = {_target(a, service) for a in rule.rule.actions if _verb(a) in ACTING}
        for target in sorted(targets):
            holder = self.busy.get(target) or world_lock(world, target)
            if holder is not None:
                self._enter(
                    st,
                    key,
                    now,
                    State.PENDING,
                    f"waiting for the lock on {target}",
                    result,
                    record=False,
                )
                self._skip(st, key, now, f"skipped: lock on {target} held by {holder}", result)
                return None
        if not rule.dry_run:
            for target in sorted(targets):
                used = self._budget_used(target, now)
                if used >= self.settings.action_budget:
                    why = (
                        f"action budget of {target} exhausted: {used} actions in the last "
                        f"{show_value(self.settings.action_window, _DURATION)}"
                    )
                    self._enter(st, key, now, State.BUDGET, why, result, record=False)
                    self._skip(st, key, now, f"skipped: {why}", result)
                    if target not in self.budget_told:
                        self.budget_told.add(target)
                        self._tell(
                            rule,
                            service,
                            now,
                            f"sqlifier stopped acting on {target}: {why}",
                            result,
                        )
                    return None
        values = {t.text: self._shown(t, st.values.get(t.index)) for t in rule.tests}
        reason = self._values_text(rule, st)
        if rule.for_ and rule.has_level:
            reason += f" for {show_value(rule.for_, _DURATION)}"
        extra = {
            "rule": rule.id,
            "value": next(iter(values.values()), ""),
            "signal": rule.tests[0].text if rule.tests else "",
        }
        planned = [
            self._planned(a, rule, service, view, now, world, extra) for a in rule.rule.actions
        ]
        return _Firing(rule, service, key, reason, values, planned, view)

    def _planned(
        self,
        action: ast.Action,
        rule: CompiledRule,
        service: str,
        view: ServiceView,
        now: float,
        world: World,
        extra: Mapping[str, str],
    ) -> _Planned:
        verb = _verb(action)
        target = _target(action, service)
        shown = format_action(action)
        if isinstance(action, ast.Scale):
            return self._plan_scale(action, rule, target, view, now, world, shown)
        if isinstance(action, ast.Rollback):
            to = action.version.value if action.version is not None else action.to.value
            target_view = world.service(target) or view
            planned = _Planned(action, verb, target, f"{target_view.release} -> {to}", to=to)
            if target_view.rolled_back_from is not None:
                planned.skipped = (
                    f"release {target_view.release} of {target} is itself a rollback from "
                    f"{target_view.rolled_back_from}; a rollback is never rolled back"
                )
            elif (target, target_view.release) in self.rolled_back:
                planned.skipped = f"{target} was already rolled back from {target_view.release}"
            return planned
        if isinstance(action, ast.Notify):
            text = render_message(action.message.value, view, now, extra)
            return _Planned(action, verb, target, text, text=text)
        if isinstance(action, ast.Run):
            text = render_message(action.command.value, view, now, extra)
            return _Planned(action, verb, target, text, text=text)
        return _Planned(action, verb, target, shown)

    def _plan_scale(
        self,
        action: ast.Scale,
        rule: CompiledRule,
        target: str,
        view: ServiceView,
        now: float,
        world: World,
        shown: str,
    ) -> _Planned:
        target_view = world.service(target) or view
        current = target_view.instances
        planned = _Planned(action, "SCALE", target, f"{current} -> ?", previous=current)
        try:
            raw = evaluate(action.to, world, view, rule, now)
        except NoData as exc:
            planned.skipped = f"cannot compute the new count: {exc}"
            return planned
        if not math.isfinite(raw):
            planned.skipped = f"the new count is not a number ({raw})"
            return planned
        desired = max(0, math.ceil(round(raw, 6)))
        limit = rule.limit
        if desired > current and limit is not None:
            if current >= limit:
                planned.skipped = (
                    f"LIMIT {show_value(limit, _NUMBER)} reached ({current} instances)"
                )
                return planned
            desired = min(desired, int(limit))
        if desired < current and limit is not None:
            if current <= limit:
                planned.skipped = (
                    f"LIMIT {show_value(limit, _NUMBER)} reached ({current} instances)"
                )
                return planned
            desired = max(desired, math.ceil(limit))
        planned.count = desired
        planned.detail = f"{current} -> {desired}"
        if desired == current:
            planned.skipped = f"{target} already runs {current} instances"
        elif desired < current:
            up = self.scaled_up.get(target)
            delay = self.settings.scale_down_delay
            if up is not None and now < up + delay:
                planned.skipped = (
                    f"a scale-down waits {show_value(delay, _DURATION)} after the scale-up "
                    f"at {_clock(up)}: not before {_clock(up + delay)}"
                )
        return planned

    def _settle_scales(self, firings: list[_Firing]) -> None:
        """Two rules scaling one service in the same tick: the larger count wins."""
        best: dict[str, tuple[int, str]] = {}
        for firing in firings:
            for p in firing.planned:
                if (
                    p.verb == "SCALE"
                    and p.skipped is None
                    and p.count is not None
                    and (p.target not in best or p.count > best[p.target][0])
                ):
                    best[p.target] = (p.count, firing.rule.id)
        for firing in firings:
            for p in firing.planned:
                if p.verb == "SCALE" and p.skipped is None and p.count is not None:
                    count, winner = best[p.target]
                    if winner != firing.rule.id:
                        p.skipped = f"rule {winner} keeps more capacity ({count} instances)"
                        p.settled = True

    def _fire(self, firing: _Firing, now: float, world: World, result: TickResult) -> None:
        rule, st, key = firing.rule, self._state(firing.key), firing.key
        acting = [p for p in firing.planned if p.verb in ACTING]
        if acting and all(p.skipped is not None and not p.settled for p in acting):
            self._blocked(firing, acting, now, result)
            return
        st.last_fired = now
        st.skip = None
        firing_id = self._next_firing
        self._next_firing += 1
        outcome = "would fire" if rule.dry_run else "fired"
        pending: set[str] = set()
        acted_targets: set[str] = set()
        for p in firing.planned:
            if p.skipped is not None:
                self._record_action(
                    firing, p, now, "skipped", f"{firing.reason}; {p.skipped}", result
                )
                if p.verb == "ROLLBACK":
                    text = f"ROLLBACK of {p.target} not done: {p.skipped}"
                    self._tell(rule, firing.service, now, text, result)
                continue
            self._record_action(firing, p, now, outcome, firing.reason, result)
            if rule.dry_run:
                continue
            env = {
                "SQLIFIER_RULE": rule.id,
                "SQLIFIER_SERVICE": firing.service,
                "SQLIFIER_TARGET": p.target,
                "SQLIFIER_REASON": firing.reason,
                "SQLIFIER_VALUE": next(iter(firing.values.values()), ""),
                "SQLIFIER_TIME": str(now),
            }
            command = Command(
                firing_id, now, rule.id, firing.service, p.target, p.verb, p.detail, firing.reason,
                p.count, p.previous, p.to, p.text, env if p.verb == "RUN" else {},
                (world.service(p.target) or firing.view).release if p.verb == "ROLLBACK" else None,
            )  # fmt: skip
            result.commands.append(command)
            if p.verb != "NOTIFY":
                pending.add(p.verb)
            if p.verb in ACTING:
                acted_targets.add(p.target)
                self.busy[p.target] = f"rule {rule.id} ({p.verb} {p.detail})"
                self.budget.setdefault(p.target, deque()).append(now)
            if (
                p.verb == "SCALE"
                and p.count is not None
                and p.previous is not None
                and p.count > p.previous
            ):
                self.scaled_up[p.target] = now
            if p.verb == "ROLLBACK":
                self.rolled_back.add((p.target, command.release or ""))
        if rule.dry_run or not pending:
            self._restart(rule, st, now, world, firing.service)
            st.state = State.DRY_RUN if rule.dry_run else st.state
            return
        st.running = firing_id
        st.state = State.FIRING
        st.note = f"running {', '.join(sorted(pending))}"
        self.firings[firing_id] = (
            key,
            acted_targets,
            len([c for c in result.commands if c.firing == firing_id and c.verb != "NOTIFY"]),
        )

    def _record_action(
        self,
        firing: _Firing,
        planned: _Planned,
        now: float,
        outcome: str,
        reason: str,
        result: TickResult,
    ) -> None:
        decision = Decision(
            now, firing.rule.id, firing.service, outcome, reason, planned.verb, planned.detail,
            firing.values,
        )  # fmt: skip
        self._record(self._state(firing.key), result, decision)

    def _blocked(
        self, firing: _Firing, acting: list[_Planned], now: float, result: TickResult
    ) -> None:
        """Every action the rule would take is refused (LIMIT reached, a scale-down that
        must wait, a rollback already done): nothing runs, the window does not restart,
        and the reason is recorded once while it lasts."""
        st = self._state(firing.key)
        why = "; ".join(f"{p.verb} {p.detail}: {p.skipped}" for p in acting)
        st.state, st.note = State.PENDING, f"held, but {why}"
        if st.skip == why:
            return
        st.skip = why
        first = acting[0]
        reason = f"{firing.reason}; {first.skipped}"
        self._record_action(firing, first, now, "skipped", reason, result)
        for p in acting:
            if p.verb == "ROLLBACK":
                text = f"ROLLBACK of {p.target} not done: {p.skipped}"
                self._tell(firing.rule, firing.service, now, text, result)

    def complete(
        self, command: Command, now: float, world: World, ok: bool = True, detail: str = ""
    ) -> Decision:
        """A command finished; when the last of its firing has, the rule's window restarts."""
        entry = self.firings.get(command.firing)
        outcome = "done" if ok else "failed"
        decision = Decision(
            now,
            command.rule,
            command.service,
            outcome,
            detail or command.reason,
            command.verb,
            command.detail,
        )
        st = self.states.get((command.rule, command.service))
        if st is not None:
            st.history.append(decision)
        if command.verb == "ROLLBACK" and not ok:  # not rolled back: it may be tried again
            self.rolled_back.discard((command.target, command.release or ""))
        if entry is None or command.verb == "NOTIFY":
            return decision
        key, targets, left = entry
        left -= 1
        if left > 0:
            self.firings[command.firing] = (key, targets, left)
            return decision
        del self.firings[command.firing]
        for target in targets:
            self.busy.pop(target, None)
        if st is not None and st.running == command.firing:
            st.running = None
            rule = self.rule(command.rule)
            if rule is not None:
                self._restart(rule, st, now, world, command.service)
        return decision

    def _restart(
        self, rule: CompiledRule, st: _Rule, now: float, world: World, service: str
    ) -> None:
        """The window starts again: at once, or when the cooldown ends."""
        st.pending_since = None
        if rule.cooldown > 0:
            st.cooldown_until = now + rule.cooldown
            st.held.clear()
            st.state = State.COOLDOWN
            st.note = f"cooling down until {_clock(st.cooldown_until)}"
            return
        st.restart = now
        # Level tests true right now start their new window now.
        st.held = dict.fromkeys(st.held, now)
        st.state = State.INACTIVE
        st.note = "the window restarted"

    def _budget_used(self, target: str, now: float) -> int:
        times = self.budget.get(target)
        if not times:
            self.budget_told.discard(target)
            return 0
        while times and times[0] <= now - self.settings.action_window:
            times.popleft()
        if len(times) < self.settings.action_budget:
            self.budget_told.discard(target)
        return len(times)

    def _tell(
        self, rule: CompiledRule, service: str, now: float, text: str, result: TickResult
    ) -> None:
        result.commands.append(
            Command(0, now, rule.id, service, service, "NOTIFY", text, text, text=text)
        )

    # --- recording -------------------------------------------------------------------

    def _enter(
        self,
        st: _Rule,
        key: tuple[str, str],
        now: float,
        state: State,
        note: str,
        result: TickResult,
        record: bool = True,
    ) -> None:
        """Move to a state; record the moves worth explaining."""
        previous = st.state
        st.state, st.note = state, note
        if state is not State.PENDING:
            st.pending_since = None
        if previous is state or not record:
            return
        if state is State.PENDING:
            self._record(st, result, Decision(now, key[0], key[1], "pending", note))
        elif state is State.NO_DATA:
            self._record(st, result, Decision(now, key[0], key[1], "skipped", note))
        elif state is State.INACTIVE and previous in (
            State.PENDING,
            State.NO_DATA,
            State.PAUSED,
            State.BUDGET,
        ):
            st.skip = None
            self._record(st, result, Decision(now, key[0], key[1], "cleared", note))

    def _skip(
        self, st: _Rule, key: tuple[str, str], now: float, reason: str, result: TickResult
    ) -> None:
        if st.skip == reason:
            return
        st.skip = reason
        self._record(st, result, Decision(now, key[0], key[1], "skipped", reason))

    @staticmethod
    def _record(st: _Rule, result: TickResult, decision: Decision) -> None:
        st.history.append(decision)
        result.decisions.append(decision)

    def _values_text(self, rule: CompiledRule, st: _Rule) -> str:
        parts = []
        for test in rule.tests:
            value = st.values.get(test.index)
            if test.kind is SignalKind.EVENT:
                parts.append(f"{test.text} {'matches' if value else 'does not match'}")
                continue
            shown = self._shown(test, value)
            parts.append(f"{test.text}: {shown}")
        return "; ".join(parts)

    @staticmethod
    def _shown(test: Test, value: float | None) -> str:
        if value is None:
            return "no data"
        if test.kind is SignalKind.COUNT:
            return f"{int(value)} in {show_value(test.window, _DURATION)}"
        return show_value(
            value, test.unit if test.unit is not _NUMBER else signal_unit(test.signal)
        )

    # --- persistence -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        texts = {r.id: r.text for r in self.rules}
        return {
            "paused_all": self.paused_all,
            "paused": sorted(self.paused),
            "budget": {s: list(t) for s, t in self.budget.items() if t},
            "budget_told": sorted(self.budget_told),
            "scaled_up": self.scaled_up,
            "rolled_back": sorted([s, r] for s, r in self.rolled_back),
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
                for (rule_id, service), st in self.states.items()
            ],
        }

    def load(
        self,
        data: Mapping[str, Any],
        now: float,
        gap_limit: float = 30.0,
        saved_at: float | None = None,
    ) -> None:
        """State saved by a previous agent. Conditions held before it stopped keep their
        `since` when the agent was away no longer than `gap_limit` (a longer gap means
        nobody knows whether they held). Actions in progress count as done now."""
        self.paused_all = bool(data.get("paused_all", False))
        self.paused = set(data.get("paused", []))
        self.budget = {s: deque(float(x) for x in t) for s, t in data.get("budget", {}).items()}
        self.budget_told = set(data.get("budget_told", []))
        self.scaled_up = {s: float(t) for s, t in data.get("scaled_up", {}).items()}
        self.rolled_back = {(s, r) for s, r in data.get("rolled_back", [])}
        texts = {r.id: r.text for r in self.rules}
        keep_held = saved_at is not None and now - saved_at <= gap_limit
        for item in data.get("rules", []):
            rule_id, service = item["rule"], item["service"]
            if texts.get(rule_id) != item.get("text"):
                continue
            st = self._state((rule_id, service))
            if keep_held:
                st.held = {int(i): float(t) for i, t in item.get("held", {}).items()}
            restart = item.get("restart")
            st.restart = float(restart) if restart is not None else -math.inf
            st.cooldown_until = item.get("cooldown_until")
            st.last_fired = item.get("last_fired")
            if item.get("running"):
                rule = self.rule(rule_id)
                if rule is not None:
                    self._restart(rule, st, now, _NoWorld(), service)

    # --- explaining ------------------------------------------------------------------

    def rows(self, services: Iterable[str] = ()) -> list[dict[str, Any]]:
        """One row per rule and service, in rule order: those evaluated so far, and those
        `services` make candidates that were not evaluated yet."""
        names = list(services)
        out = []
        for rule in self.rules:
            evaluated = self._by_rule.get(rule.id, {})
            wanted = dict.fromkeys([*rule.candidates(names), *sorted(evaluated)])
            for service in wanted:
                out.append(self._row(rule, service, evaluated.get(service) or _Rule()))
        return out

    def _row(self, rule: CompiledRule, service: str, st: _Rule) -> dict[str, Any]:
        return {
            "rule": rule.id,
            "service": service,
            "state": self._state_name(rule, st),
            "since": st.pending_since,
            "values": {t.text: self._shown(t, st.values.get(t.index)) for t in rule.tests},
            "note": self._note(rule, st),
            "last_fired": st.last_fired,
            "dry_run": rule.dry_run,
        }

    def _note(self, rule: CompiledRule, st: _Rule) -> str:
        if st.note:
            return st.note
        text = self._values_text(rule, st)
        if st.state is State.PENDING and st.pending_since is not None:
            text += f"; fires at {_clock(st.pending_since + rule.for_)} if it holds"
        return text

    def _state_name(self, rule: CompiledRule, st: _Rule) -> str:
        if self.paused_all or rule.id in self.paused:
            return State.PAUSED.value
        return st.state.value

    def explain(self, rule_id: str, service: str, now: float) -> dict[str, Any] | None:
        rule = self.rule(rule_id)
        st = self.states.get((rule_id, service))
        if rule is None or st is None:
            return None
        tests = []
        for test in rule.tests:
            value = st.values.get(test.index)
            item: dict[str, Any] = {
                "test": test.text,
                "kind": test.kind.value,
                "value": self._shown(test, value),
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
            tests.append(item)
        budget = self.settings.action_budget
        window = show_value(self.settings.action_window, _DURATION)
        used = {
            t: len(self.budget.get(t, ()))
            for t in {_target(a, service) for a in rule.rule.actions if _verb(a) in ACTING}
        }
        return {
            "rule": rule_id,
            "service": service,
            "state": self._state_name(rule, st),
            "note": self._note(rule, st),
            "pending_since": st.pending_since,
            "for": show_value(rule.for_, _DURATION) if rule.for_ else None,
            "cooldown_until": st.cooldown_until,
            "last_fired": st.last_fired,
            "dry_run": rule.dry_run,
            "paused": self.paused_all or rule_id in self.paused,
            "tests": tests,
            "budget": {t: f"{n} of {budget} in {window}" for t, n in used.items()},
            "locks": {t: h for t in used if (h := self.busy.get(t)) is not None},
            "decisions": [d.to_json() for d in st.history],
            "text": rule.text,
        }


class _NoWorld:
    """A world with nothing in it, for restarting windows while loading saved state."""

    store = SeriesStore()

    def service(self, name: str) -> ServiceView | None:
        return None


def world_lock(world: World, service: str) -> str | None:
    """A lock the world holds on a service (a deploy in progress), if it knows of locks."""
    locks = getattr(world, "locks", None)
    if isinstance(locks, Mapping):
        holder = locks.get(service)
        return str(holder) if holder is not None else None
    return None


def _verb(action: ast.Action) -> str:
    if isinstance(action, ast.Scale):
        return "SCALE"
    if isinstance(action, ast.Rollback):
        return "ROLLBACK"
    if isinstance(action, ast.Restart):
        return "RESTART"
    if isinstance(action, ast.Rollout):
        return f"{action.verb} ROLLOUT"
    if isinstance(action, ast.Notify):
        return "NOTIFY"
    return "RUN"


def _target(action: ast.Action, service: str) -> str:
    target = getattr(action, "target", None)
    if isinstance(target, ast.Target) and target.literal is not None:
        return target.literal
    return service


def _cron_matches(test: Test, when: Any) -> bool:
    cron = test.cron
    assert cron is not None
    weekday = (when.tm_wday + 1) % 7  # struct_time: Monday = 0; cron: Sunday = 0
    return (
        when.tm_min in cron.minutes
        and when.tm_hour in cron.hours
        and when.tm_mday in cron.days
        and when.tm_mon in cron.months
        and weekday in cron.weekdays
    )


def _clock(t: float) -> str:
    """A time in a reason: seconds from 0 in replays, UTC clock time live."""
    if t < 10 * 86400 * 365:
        return f"t={show_value(t, _NUMBER)}s"
    when = calendar(t)
    return f"{when.tm_hour:02d}:{when.tm_min:02d}:{when.tm_sec:02d}Z"
