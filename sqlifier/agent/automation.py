"""The agent's automation: measure every second, run the rules, act, record.

    samplers (runtime, router, logs) + prometheus ──► series store ──► engine.tick
        ──► decisions (decisions.db) and commands ──► actions.py (platform / notify / RUN)
    every 10 s the latest values go to history.db (for backtests)

The engine is pure; this module is its I/O: the wall clock, rule files, the engine's
saved state, Prometheus queries, history and decisions. The engine sees the stack through
`world.py` and its commands are carried out by `actions.py`, both through the platform
seam; `figures.py` gathers what `/metrics` shows. Nothing here may stop the evaluation of
other rules: every action runs in its own task with a bound on its time, and every
failure is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from sqlifier.agent.actions import Actions
from sqlifier.agent.rollouts import Rollouts
from sqlifier.agent.webhooks import Delivery, Notifier
from sqlifier.agent.world import LiveWorld
from sqlifier.delivery.budget import Budget, make_budget
from sqlifier.delivery.locks import held_locks
from sqlifier.engine.compiled import CompiledRule
from sqlifier.engine.explain import explain_rule, rule_rows
from sqlifier.engine.machine import Command, Decision, Engine, Settings
from sqlifier.engine.persist import save_state
from sqlifier.engine.replay import compile_rules
from sqlifier.engine.series import LOG, RESTART, SeriesStore
from sqlifier.engine.wording import clock as clock_time
from sqlifier.platform import Platform
from sqlifier.runtime.space import free_bytes
from sqlifier.signals import prometheus
from sqlifier.signals.samplers import RouterHistory
from sqlifier.signals.slo import rule_windows, slo_tracker
from sqlifier.signals.totals import RouterTotals
from sqlifier.stack.model import Stack
from sqlifier.stack.rulefiles import load_rules
from sqlifier.store.audit import AuditLog
from sqlifier.store.decisions import DecisionLog
from sqlifier.store.enginefile import restore_engine
from sqlifier.store.history import History

__all__ = ["Automation"]

RUN_TIMEOUT = 60.0
SCALE_TIMEOUT = 60.0
MAX_INSTANCES = 1000
WATCH_EVERY = 2.0  # seconds between looks at the rule files
HISTORY_EVERY = 10.0
FLUSH_EVERY = 60.0
PRUNE_EVERY = 3600.0
ROLLBACK_TIMEOUT = 600.0  # a rule's rollback: start, warm up, move traffic
_LEVEL_NAMES = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class Sources(Protocol):
    """What feeds the store every tick: the local samplers (`signals/samplers.py`), or a
    cluster's (`platform/kubernetes/signals.py`)."""

    store: SeriesStore
    traffic: RouterHistory | None
    # What /metrics shows besides the store (`figures.py`)
    log_totals: dict[str, dict[str, int]]
    router_totals: RouterTotals
    instances: dict[str, dict[str, object]]

    def step(self, t: float) -> None: ...


class Automation:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        platform: Platform,
        samplers: Sources,
        deployer: Rollouts,
        audit: AuditLog,
        redact: Callable[[str], str],
        rolled_back_from: Mapping[str, str],
        say: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stack = stack
        self.env = env
        self.state_dir = state_dir
        self.platform = platform
        self.audit = audit
        self.say = say
        self.clock = clock
        self.samplers = samplers
        self.store = samplers.store
        engine = stack.engine
        self.interval = engine.interval
        self.engine = Engine(
            [], Settings(engine.scale_down_delay, engine.action_budget, engine.action_window)
        )
        self.world = LiveWorld(self.store, platform, env, rolled_back_from)
        self.decisions = DecisionLog(state_dir / "decisions.db")
        self.history = History(state_dir / "history.db")
        self.slo = slo_tracker(stack, env, state_dir, clock())
        self.notifier = Notifier(stack.notify.webhook, stack.notify.timeout, self._delivered)
        self.actions = Actions(stack, env, platform, deployer, self.notifier, self.engine, redact)
        self.rule_error: str | None = None
        # The decision record cannot be written (a full disk): said in `sqlifier rules`,
        # audited once when it starts and once when it ends.
        self.decisions_error: str | None = None
        self.unrecorded = 0  # decisions lost while it lasts
        self.sources: dict[str, str] = {}  # prometheus query -> why it has no data
        self.last_tick_seconds = 0.0
        self.counts: dict[tuple[str, str, str, str], int] = {}  # actions done and failed
        self._files: dict[Path, tuple[int, int]] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queries: dict[str, asyncio.Task[None]] = {}
        self._saved = ""
        self._pending: list[Decision] = []
        self._last_history = 0.0
        self._last_flush = 0.0
        self._last_watch = 0.0
        self._last_prune = 0.0

    # --- rules ---------------------------------------------------------------------

    def load(self) -> None:
        """The rule files and the state a previous agent saved."""
        self._reload(initial=True)
        target = f"{self.stack.name}/{self.env}"
        path, now = self.state_dir / "engine.json", self.clock()
        restore_engine(self.engine, path, now, self.audit, target, self.say)

    def _read_locks(self) -> None:
        """Locks another process holds (a deploy tool, an operator by hand): rule actions
        on those services wait. This agent's own deploys are not among them: during a
        rollout SCALE acts on the stable instances and ROLLBACK or ABORT ROLLOUT must act."""
        me = os.getpid()
        with contextlib.suppress(OSError):
            self.world.locks = {
                info.service: info.describe()
                for info in held_locks(self.state_dir, self.env)
                if info.pid != me and not info.stale
            }

    def _signature(self) -> dict[Path, tuple[int, int]]:
        found = {}
        for path in self.stack.rule_files():
            with contextlib.suppress(OSError):
                st = path.stat()
                found[path] = (st.st_mtime_ns, st.st_size)
        return found

    def _reload(self, initial: bool = False) -> None:
        signature = self._signature()
        if signature == self._files:
            return
        self._files = signature
        paths = [(p, _display(p, self.stack.root)) for p in signature]
        loaded = load_rules(paths, self.stack.service_names)
        errors = [d for d in loaded.diagnostics if d.is_error]
        if errors:
            first = errors[0].headline()
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            keep = "no rules run" if initial else "the previous rules keep running"
            self.rule_error = f"{first}{more}; {keep} until sqlifier check passes"
            self.audit.record("agent", "rules reload", self.stack.name, f"refused: {first}{more}")
            self.say(f"rules: refused: {first}{more}; {keep}")
            return
        rules = compile_rules([f.rules for f in loaded.files if f.rules is not None])
        self.engine.replace_rules(rules)
        self.slo.want(rule_windows(rules))
        self.rule_error = None
        if not initial:
            self.audit.record("agent", "rules reload", self.stack.name, f"ok: {len(rules)} rules")
            self.say(f"rules: reloaded {len(rules)} rules")

    # --- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Tick every `interval` seconds, on the second, until cancelled."""
        try:
            while True:
                # Each tick is stamped with the second it is due at, not the moment the
                # loop woke up: a window of 30 s is then exactly 30 ticks long.
                due = (math.floor(self.clock() / self.interval) + 1) * self.interval
                await asyncio.sleep(max(0.0, due - self.clock()))
                started = time.perf_counter()
                try:
                    self.tick(due)
                except Exception as exc:  # a bug must not end automation silently
                    self.rule_error = f"internal error in the engine: {type(exc).__name__}: {exc}"
                self.last_tick_seconds = time.perf_counter() - started
        finally:
            await self.close()

    def tick(self, now: float) -> None:
        if now - self._last_watch >= WATCH_EVERY:
            self._last_watch = now
            self._reload()
            self._read_locks()
        self.samplers.step(now)
        self._measure_slos(now)
        self._query_prometheus()
        result = self.engine.tick(now, self.world, self.platform.services())
        self._pending.extend(result.decisions)
        for command in result.commands:
            self._start(command)
        self._save(now)
        if now - self._last_history >= HISTORY_EVERY:
            self._record_history(now)
            self._keep_slos(now)
        if now - self._last_flush >= FLUSH_EVERY:
            self._last_flush = now
            self._keep_history(now)
            self.store.trim(now)
        self._write_decisions()

    def _write_decisions(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self.decisions.record(pending)
        except Exception as exc:  # a full disk: say so, keep evaluating and acting
            self._decisions_failed(exc, len(pending))
            return
        if self.unrecorded:
            # The episode is over; its gap in the record stays said until the agent stops.
            lost, self.unrecorded = self.unrecorded, 0
            path = self.decisions.path
            self.decisions_error = (
                f"{lost} decisions until {clock_time(self.clock())} were not recorded: "
                f"cannot record decisions in {path} while the filesystem of {path.parent} "
                "was full; recorded again since"
            )
            result = f"ok: recorded again; {lost} decisions were not recorded meanwhile"
            self._audit_decisions(result)
            self.say(f"rules: decisions are {result.removeprefix('ok: ')}")

    def _decisions_failed(self, exc: Exception, count: int) -> None:
        """Name the file and its disk in `sqlifier rules`; the audit log (which keeps a
        reserve for a full disk) hears of it once per episode, not once per tick."""
        self.unrecorded += count
        path = self.decisions.path
        free = free_bytes(path.parent)
        room = "unknown" if free is None else f"{free // 1024} KiB"
        first = self.unrecorded == count
        self.decisions_error = (
            f"cannot record decisions in {path} ({exc}); the filesystem of {path.parent} "
            f"has {room} free. Rules keep evaluating and acting; {self.unrecorded} decisions "
            "not recorded so far. Free some space: recording resumes by itself"
        )
        if first:
            self._audit_decisions(
                f"failed: cannot record decisions in {path} ({exc}); "
                f"the filesystem of {path.parent} has {room} free"
            )
            self.say(f"rules: {self.decisions_error}")

    def _audit_decisions(self, result: str) -> None:
        """Audit a change in the decision record's fortunes; should the audit log have no
        room either (its reserve spent), `sqlifier rules` still says it."""
        try:
            self.audit.record("agent", "decisions", self.stack.name, result)
        except (OSError, sqlite3.Error) as exc:
            self.say(f"rules: the audit log could not record it either ({exc})")

    def _save(self, now: float) -> None:
        state = save_state(self.engine)
        text = json.dumps(state, sort_keys=True)
        if text == self._saved:
            return
        self._saved = text
        path = self.state_dir / "engine.json"
        temporary = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            temporary.write_text(json.dumps({"saved_at": now, "engine": state}))
            os.replace(temporary, path)

    # --- SLOs ------------------------------------------------------------------------

    def _measure_slos(self, now: float) -> None:
        """The router's newest counts into the objectives; their figures into the store."""
        if not self.slo.objectives:
            return
        traffic = self.samplers.traffic
        self.slo.step(now, traffic.history if traffic is not None else (), self.store)

    def _keep_slos(self, now: float) -> None:
        """Every 10 s: what `sqlifier slo` and `plan` read is at most that far behind."""
        try:
            self.slo.flush(now)
        except Exception as exc:  # a full disk: say so, keep evaluating
            self.rule_error = f"cannot write the SLO history: {exc}"

    def budget(self, service: str) -> Budget | None:
        """The service's error budget now, for the deployer."""
        return make_budget(self.stack, self.env, service, self.slo.lefts(service, self.clock()))

    # --- prometheus ------------------------------------------------------------------

    def _query_prometheus(self) -> None:
        url = self.stack.prometheus.url
        wanted: dict[str, list[str]] = {}
        for rule in self.engine.rules:
            for test in rule.tests:
                if test.key.startswith("prometheus:"):
                    names = rule.candidates(self.platform.services())
                    wanted.setdefault(test.key, []).extend(names)
        for key, names in wanted.items():
            if url is None:
                self.sources[key] = "no [prometheus] url in the stack file"
                continue
            for name in sorted(set(names)):
                task_key = f"{key}\0{name}"
                running = self._queries.get(task_key)
                if running is not None and not running.done():
                    continue
                task = asyncio.ensure_future(self._query(url, key, name))
                self._queries[task_key] = task

    async def _query(self, url: str, key: str, service: str) -> None:
        promql = key.removeprefix("prometheus:")
        result = await prometheus.query(url, promql, self.stack.prometheus.timeout, service)
        if result.value is None:
            self.store.forget(service, key)
            error = result.error or "no data"
            if self.sources.get(key) != error:
                self.sources[key] = error
                self._pending.append(
                    Decision(
                        self.clock(),
                        "prometheus",
                        service,
                        "source error",
                        f"prometheus('{promql}'): {error}",
                    )
                )
            return
        self.sources.pop(key, None)
        self.store.put(service, key, self.clock(), result.value)

    # --- history ---------------------------------------------------------------------

    def _record_history(self, now: float) -> None:
        since = self._last_history or now - HISTORY_EVERY
        self._last_history = now
        frame: dict[str, dict[str, float]] = {}
        for service, key, t, value in self.store.levels():
            if now - t <= self.store.stale_after:
                frame.setdefault(service, {})[key] = value
        for service in self.platform.services():
            for name, rank in _LEVEL_NAMES.items():
                count = self.store.count(service, LOG, since, now, rank=rank)
                if count:
                    frame.setdefault(service, {})[f"log.{name}"] = float(count)
            restarts = self.store.count(service, RESTART, since, now)
            if restarts:
                frame.setdefault(service, {})["restart"] = float(restarts)
        if frame:
            with contextlib.suppress(Exception):
                self.history.append(now - now % HISTORY_EVERY, frame)

    def _keep_history(self, now: float) -> None:
        """Flush every minute; forget what is older than 7 days every hour."""
        try:
            self.history.flush()
            if now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                self.history.prune(now)
                self.slo.prune(now)
                self.decisions.prune(now)
        except Exception as exc:  # a full disk: say so, keep evaluating
            self.rule_error = f"cannot write the history: {exc}"

    # --- acting ----------------------------------------------------------------------

    def _start(self, command: Command) -> None:
        task = asyncio.ensure_future(self._execute(command))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, command: Command) -> None:
        ok, detail = True, ""
        try:
            ok, detail = await self.actions.act(command)
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        now = self.clock()
        decision = self.engine.complete(command, now, self.world, ok, detail)
        self._pending.append(decision)
        key = (command.rule, command.target, command.verb, "done" if ok else "failed")
        self.counts[key] = self.counts.get(key, 0) + 1
        if command.verb != "NOTIFY":
            target = f"{self.stack.name}/{self.env}/{command.target}"
            result = "ok" if ok else f"failed: {detail}"
            self.audit.record(
                f"rule {command.rule}", command.verb.lower(), f"{target} {command.detail}", result
            )
            self.say(
                f"rule {command.rule}: {command.verb} {command.target} {command.detail}: {result}"
            )

    def _delivered(self, payload: Mapping[str, Any], delivery: Delivery) -> None:
        outcome = "done" if delivery.ok else "failed"
        self._pending.append(
            Decision(
                self.clock(),
                str(payload.get("rule", "")),
                str(payload.get("service", "")),
                outcome,
                f"webhook: {delivery.detail} after {delivery.attempts} attempt(s)",
                "NOTIFY",
                str(payload.get("message", "")),
            )
        )

    async def close(self) -> None:
        for task in [*self._tasks, *self._queries.values()]:
            task.cancel()
        for task in [*self._tasks, *self._queries.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.notifier.close()
        self._write_decisions()
        with contextlib.suppress(Exception):
            self.history.flush()
            self.history.close()
        with contextlib.suppress(Exception):
            self.slo.close()

    # --- what the API shows ----------------------------------------------------------

    def pause(self, rule: str | None, who: str, on: bool) -> tuple[bool, str]:
        if rule is not None and self.engine.rule(rule) is None:
            known = ", ".join(r.id for r in self.engine.rules) or "none"
            return False, f"no rule {rule!r}; rules: {known}"
        if rule is None:
            self.engine.paused_all = on
        elif on:
            self.engine.paused.add(rule)
        else:
            self.engine.paused.discard(rule)
        what = "pause" if on else "resume"
        subject = rule or "all rules"
        self.audit.record(who, f"rules {what}", f"{self.stack.name}/{self.env} {subject}", "ok")
        self._save(self.clock())
        if on:
            message = f"{subject} paused: evaluated and explained, but not acting"
        else:
            message = f"{subject} resumed"
        return True, message

    def listing(self) -> dict[str, Any]:
        return {
            "rules": rule_rows(self.engine, self.platform.services()),
            "paused": self.engine.paused_all,
            "error": self.rule_error,
            "decisions_error": self.decisions_error,
            "sources": dict(self.sources),
        }

    def explain(self, rule_id: str, service: str | None) -> tuple[bool, Any]:
        rule = self.engine.rule(rule_id)
        if rule is None:
            known = ", ".join(r.id for r in self.engine.rules) or "none"
            return False, f"no rule {rule_id!r}; rules: {known}"
        now = self.clock()
        services = [service] if service else rule.candidates(self.platform.services())
        out = []
        for name in services:
            item = explain_rule(self.engine, rule_id, name, now)
            if item is None:
                out.append(_not_evaluated(rule, name, now))
                continue
            item["decisions"] = self.decisions.read(rule_id, name, limit=20)
            for test in rule.tests:
                source = self.sources.get(test.key)
                if source is not None:
                    item.setdefault("sources", {})[test.text] = source
            out.append(item)
        return True, out


def _not_evaluated(rule: CompiledRule, service: str, now: float) -> dict[str, Any]:
    return {
        "rule": rule.id,
        "service": service,
        "state": "inactive",
        "note": "not evaluated yet",
        "tests": [
            {"test": t.text, "kind": t.kind.value, "value": "no data", "raw": None, "holds": None}
            for t in rule.tests
        ],
        "decisions": [],
        "text": rule.text,
    }


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
