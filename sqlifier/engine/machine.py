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

Beside it: `state.py` (the values), `evaluation.py` (a rule's tests and window),
`actions.py` (planning a firing's actions), `wording.py` (values and times in reasons),
`persist.py` (the state saved across agent restarts) and `explain.py` (`rules status` and
`rules explain`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from sqlifier.engine.actions import (
    ACTING,
    Firing,
    Planned,
    command_for,
    plan_action,
    settle_scales,
    target_of,
    verb_of,
    world_lock,
)
from sqlifier.engine.compiled import (
    CompiledRule,
    ServiceView,
    Test,
    World,
    show_value,
)
from sqlifier.engine.evaluation import EPSILON, restart_window, test_result, tree_result
from sqlifier.engine.expressions import condition_holds
from sqlifier.engine.state import Command, Decision, RuleState, Settings, State, TickResult
from sqlifier.engine.wording import clock, shown, values_text
from sqlifier.lang.units import Type

# The values are defined in state.py and named here too: they are what a tick returns.
__all__ = [
    "Command",
    "Decision",
    "Engine",
    "RuleState",
    "Settings",
    "State",
    "TickResult",
]

_DURATION = Type.DURATION
_PENDING, _INACTIVE, _COOLDOWN = State.PENDING, State.INACTIVE, State.COOLDOWN


class Engine:
    def __init__(self, rules: Sequence[CompiledRule], settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.rules: list[CompiledRule] = list(rules)
        self.states: dict[tuple[str, str], RuleState] = {}
        self.by_rule: dict[str, dict[str, RuleState]] = {}  # the same states, found faster
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
        self.by_rule = {}
        for (rule_id, service), st in self.states.items():
            self.by_rule.setdefault(rule_id, {})[service] = st

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    # --- the tick --------------------------------------------------------------------

    def tick(self, now: float, world: World, services: Iterable[str]) -> TickResult:
        """Evaluate every rule for every service once."""
        self.ticks += 1
        self._views = {}
        result = TickResult()
        all_services = list(services)
        firings: list[Firing] = []
        for rule in self.rules:
            states = self.by_rule.setdefault(rule.id, {})
            candidates = rule.candidates(all_services)
            if rule.simple is not None:
                candidates = self._sweep(rule, rule.simple, states, candidates, now, world)
            elif rule.levels_only:
                candidates = self._sweep_tree(rule, states, candidates, now, world)
            else:
                candidates = self._sweep_quiet(states, candidates, now, world)
            for service in candidates:
                firing = self._evaluate(rule, states, service, now, world, result)
                if firing is not None:
                    firings.append(firing)
        if firings:
            settle_scales(firings)
            for firing in firings:
                self._fire(firing, now, world, result)
        return result

    def _sweep(
        self,
        rule: CompiledRule,
        test: Test,
        states: dict[str, RuleState],
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
                if not self._quiet(st, service, now, world):
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
            if since is None or st.state is not State.PENDING or now - since >= window - EPSILON:
                rest.append(service)
        return rest

    def _sweep_tree(
        self,
        rule: CompiledRule,
        states: dict[str, RuleState],
        candidates: list[str],
        now: float,
        world: World,
    ) -> list[str]:
        """`_sweep` for a rule of several level tests (AND, OR) and no IF: its tree is
        evaluated here, and a service goes on to the full evaluation only when the rule's
        state would change. A storm keeps many such rules pending for their whole FOR."""
        rest = []
        tree, views = rule.tree, self._views
        for service in candidates:
            st = states.get(service)
            if st is None or st.running is not None or st.cooldown_until is not None:
                if not self._quiet(st, service, now, world):
                    rest.append(service)
                continue
            if service not in views:
                views[service] = world.service(service)
            if views[service] is None:
                rest.append(service)
                continue
            satisfied, current = tree_result(rule, tree, st, service, now, world)
            if satisfied is not False or st.state is not (_PENDING if current else _INACTIVE):
                rest.append(service)
        return rest

    def _sweep_quiet(
        self, states: dict[str, RuleState], candidates: list[str], now: float, world: World
    ) -> list[str]:
        """For any other rule: only leaves out the services `_quiet` says may be."""
        quiet = self._quiet
        return [s for s in candidates if not quiet(states.get(s), s, now, world)]

    def _quiet(self, st: RuleState | None, service: str, now: float, world: World) -> bool:
        """Whether `_evaluate` would leave this state as it is without reading a signal:
        the rule is acting on the service, or cooling down for it (its state and note
        already say so)."""
        if st is None:
            return False
        if st.running is not None:
            return True
        until = st.cooldown_until
        if until is None or now >= until or st.state is not _COOLDOWN:
            return False
        views = self._views
        if service not in views:
            views[service] = world.service(service)
        return views[service] is not None

    def state_of(self, key: tuple[str, str]) -> RuleState:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = RuleState()
            self.by_rule.setdefault(key[0], {})[key[1]] = state
        return state

    def _evaluate(
        self,
        rule: CompiledRule,
        states: dict[str, RuleState],
        service: str,
        now: float,
        world: World,
        result: TickResult,
    ) -> Firing | None:
        st = states.get(service)
        if st is None:
            st = self.state_of((rule.id, service))
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
                st.note = f"cooling down until {clock(st.cooldown_until)}"
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
            satisfied, current = test_result(rule.tests[tree], st, service, now, world)
        else:
            satisfied, current = tree_result(rule, tree, st, service, now, world)
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
                    reason = f"{values_text(rule, st)}; fires at {clock(since + rule.for_)}"
                    self._enter(st, (rule.id, service), now, State.PENDING, reason, result)
                    st.pending_since, st.note = since, ""
            elif st.state is not State.INACTIVE:
                self._enter(
                    st, (rule.id, service), now, State.INACTIVE, values_text(rule, st), result
                )
                st.note = ""
            return None
        if self.paused_all or rule.id in self.paused:
            why = "all rules are paused" if self.paused_all else "the rule is paused"
            self._enter(st, (rule.id, service), now, State.PAUSED, why, result)
            self._skip(st, (rule.id, service), now, f"skipped: {why}", result)
            return None
        return self._plan(rule, service, (rule.id, service), st, view, now, world, result)

    # --- acting ----------------------------------------------------------------------

    def _plan(
        self,
        rule: CompiledRule,
        service: str,
        key: tuple[str, str],
        st: RuleState,
        view: ServiceView,
        now: float,
        world: World,
        result: TickResult,
    ) -> Firing | None:
        targets = {target_of(a, service) for a in rule.rule.actions if verb_of(a) in ACTING}
        for target in sorted(targets):
            holder = self.busy.get(target) or world_lock(world, target)
            if holder is not None:
                waiting = f"waiting for the lock on {target}"
                self._enter(st, key, now, State.PENDING, waiting, result, record=False)
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
                        stopped = f"sqlifier stopped acting on {target}: {why}"
                        self._tell(rule, service, now, stopped, result)
                    return None
        first = rule.tests[0] if rule.tests else None
        extra = {
            "rule": rule.id,
            "value": shown(first, st.values.get(first.index)) if first is not None else "",
            "signal": first.text if first is not None else "",
        }
        delay = self.settings.scale_down_delay
        planned = [
            plan_action(
                a, rule, service, view, now, world, extra,
                self.rolled_back, self.scaled_up.get(target_of(a, service)), delay,
            )
            for a in rule.rule.actions
        ]  # fmt: skip
        if self._still_blocked(st, planned):
            return None
        values = {t.text: shown(t, st.values.get(t.index)) for t in rule.tests}
        reason = values_text(rule, st)
        if rule.for_ and rule.has_level:
            reason += f" for {show_value(rule.for_, _DURATION)}"
        return Firing(rule, service, key, reason, values, planned, view)

    @staticmethod
    def _still_blocked(st: RuleState, planned: list[Planned]) -> bool:
        """Every action refused for the reason already recorded (`_blocked`): the state
        stays as it is, and no reason needs writing. In a storm, a rule held but refused
        (a rollback already done, LIMIT reached) is asked again at every tick."""
        acting = [p for p in planned if p.verb in ACTING]
        if not acting or not all(p.skipped is not None for p in acting):
            return False
        why = "; ".join(f"{p.verb} {p.detail}: {p.skipped}" for p in acting)
        if st.skip != why:
            return False
        st.state, st.note = State.PENDING, f"held, but {why}"
        return True

    def _fire(self, firing: Firing, now: float, world: World, result: TickResult) -> None:
        rule, st, key = firing.rule, self.state_of(firing.key), firing.key
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
            command = command_for(firing_id, now, firing, p, world)
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
            restart_window(rule, st, now)
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
        firing: Firing,
        planned: Planned,
        now: float,
        outcome: str,
        reason: str,
        result: TickResult,
    ) -> None:
        decision = Decision(
            now, firing.rule.id, firing.service, outcome, reason, planned.verb, planned.detail,
            firing.values,
        )  # fmt: skip
        self._record(self.state_of(firing.key), result, decision)

    def _blocked(
        self, firing: Firing, acting: list[Planned], now: float, result: TickResult
    ) -> None:
        """Every action the rule would take is refused (LIMIT reached, a scale-down that
        must wait, a rollback already done): nothing runs, the window does not restart,
        and the reason is recorded once while it lasts."""
        st = self.state_of(firing.key)
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
                restart_window(rule, st, now)
        return decision

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
        st: RuleState,
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
        self, st: RuleState, key: tuple[str, str], now: float, reason: str, result: TickResult
    ) -> None:
        if st.skip == reason:
            return
        st.skip = reason
        self._record(st, result, Decision(now, key[0], key[1], "skipped", reason))

    @staticmethod
    def _record(st: RuleState, result: TickResult, decision: Decision) -> None:
        st.history.append(decision)
        result.decisions.append(decision)
