"""Rules against recorded or written samples, on a virtual clock: `sqlifier rules test`
and `sqlifier rules backtest`.

The same `Engine` as live runs here; only the world differs. Samples at time t are visible
to the tick at t, the clock ticks every second, and every action completes at once: a SCALE
changes the instance count, a ROLLBACK the release (each service starts on release
`current`, with `previous_stable` before it).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlifier.engine.compiled import CompiledRule, ServiceView, compile_rule
from sqlifier.engine.machine import Command, Decision, Engine, Settings
from sqlifier.engine.series import LOG, RESTART, SeriesStore
from sqlifier.errors import UserError
from sqlifier.lang import ast
from sqlifier.lang.signals import LOG_LEVELS

__all__ = [
    "SIGNAL_COLUMNS",
    "Action",
    "Replay",
    "Sample",
    "compile_rules",
    "read_expected",
    "read_samples",
    "show_time",
]

# signal -> (series key, multiplier from the file's unit to base units)
SIGNAL_COLUMNS: dict[str, tuple[str, float]] = {
    "cpu": ("cpu", 0.01),
    "memory": ("memory", 1.0),
    "rps": ("rps", 1.0),
    "error_rate": ("error_rate", 0.01),
    "latency_p50": ("latency_p50", 1.0),
    "latency_p90": ("latency_p90", 1.0),
    "latency_p95": ("latency_p95", 1.0),
    "latency_p99": ("latency_p99", 1.0),
    "instances": ("instances", 1.0),
    "ready_instances": ("ready_instances", 1.0),
    "log": (LOG, 1.0),
    "restart": (RESTART, 1.0),
}
HEADER = ("t", "service", "signal", "value", "message")


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    service: str
    signal: str
    value: float
    text: str = ""  # a log line's message, a restart's instance
    line: int = 0


@dataclass(frozen=True, slots=True)
class Action:
    """An action that ran, as `rules test` prints it."""

    t: float
    rule: str
    service: str
    action: str
    detail: str
    reason: str

    def to_json(self, epoch: float | None) -> dict[str, Any]:
        return {
            "t": show_time(self.t, epoch),
            "rule": self.rule,
            "service": self.service,
            "action": self.action,
            "detail": self.detail,
            "reason": self.reason,
        }


def compile_rules(files: Iterable[ast.RuleFile]) -> list[CompiledRule]:
    rules = [compile_rule(rule, f.path) for f in files for rule in f.rules]
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:  # the checker refuses duplicate names; FILE:LINE never repeats
            raise UserError(f"two rules are named {rule.id}")
        seen.add(rule.id)
    return rules


# --- reading samples ---------------------------------------------------------------------


def _rows(reader: Any, display: str) -> Iterator[Any]:
    """The rows of a CSV reader (plain or dict); what it cannot read is an error naming the
    line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            limit = csv.field_size_limit()
            if "field limit" in str(exc):
                raise UserError(
                    f"{display}:{reader.line_num}: a field is longer than {limit} characters, "
                    "the most a samples file holds"
                ) from None
            raise UserError(f"{display}:{reader.line_num}: not valid CSV: {exc}") from None
        yield row


def read_samples(path: Path, display: str) -> tuple[list[Sample], float | None]:
    """The samples of a CSV file in time order, and the epoch when times were ISO 8601
    (None when they are seconds from 0). Every error names the file and line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"{display}: cannot read the samples: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{display}: the samples are not UTF-8 text") from exc
    reader = _rows(csv.reader(io.StringIO(text)), display)
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(
            f"{display}:1: the samples file is empty; its first line is {','.join(HEADER)}"
        ) from None
    names = [h.strip().lower() for h in header]
    if (
        names[:4] != list(HEADER[:4])
        or len(names) > 5
        or (len(names) == 5 and names[4] != "message")
    ):
        raise UserError(
            f"{display}:1: the header must be {','.join(HEADER)} (message may be left out), "
            f"found {','.join(header)}"
        )
    samples: list[Sample] = []
    epoch: float | None = None
    iso: bool | None = None
    for number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{display}:{number}"
        if len(row) < 4 or len(row) > 5:
            raise UserError(
                f"{where}: expected {len(names)} columns ({','.join(names)}), found {len(row)}"
            )
        sample, is_iso = _sample(row, number, where)
        if iso is None:
            iso = is_iso
        elif iso != is_iso:
            raise UserError(f"{where}: mixes ISO 8601 times and seconds; use one or the other")
        samples.append(sample)
    if iso:
        epoch = min((s.t for s in samples), default=0.0)
        epoch = math.floor(epoch)
    samples.sort(key=lambda s: s.t)
    return samples, epoch


def _sample(row: list[str], number: int, where: str) -> tuple[Sample, bool]:
    """One row: the sample (in base units) and whether its time was ISO 8601."""
    t_text, service, signal, value_text = (cell.strip() for cell in row[:4])
    message = row[4] if len(row) == 5 else ""
    t, is_iso = _time(t_text, where)
    if not service:
        raise UserError(f"{where}: the service is empty")
    signal = signal.lower()
    if signal not in SIGNAL_COLUMNS:
        raise UserError(f"{where}: unknown signal '{signal}'; valid: {', '.join(SIGNAL_COLUMNS)}")
    if signal == "log":
        level = value_text.lower()
        if level not in LOG_LEVELS:
            valid = ", ".join(LOG_LEVELS)
            raise UserError(f"{where}: '{value_text}' is not a log level; valid: {valid}")
        return Sample(t, service, signal, float(LOG_LEVELS[level]), message, number), is_iso
    if signal == "restart":
        return Sample(t, service, signal, 1.0, value_text or message, number), is_iso
    try:
        value = float(value_text)
    except ValueError:
        raise UserError(f"{where}: the value '{value_text}' is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(
            f"{where}: the value must be a finite number, 0 or more; found {value_text}"
        )
    scaled = value * SIGNAL_COLUMNS[signal][1]
    return Sample(t, service, signal, scaled, message, number), is_iso


def _time(text: str, where: str) -> tuple[float, bool]:
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise UserError(
                f"{where}: the time must be seconds from 0 or an ISO 8601 time, found {text}"
            )
        return value, False
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"{where}: '{text}' is neither seconds from 0 nor an ISO 8601 time "
            "like 2026-11-26T10:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp(), True


def show_time(t: float, epoch: float | None) -> float | str:
    if epoch is None:
        return int(t) if t == int(t) else t
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def read_expected(path: Path, display: str) -> list[dict[str, str]]:
    """Expected actions: the JSON `rules test --json` prints, or a CSV with its columns."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UserError(f"{display}: cannot read the expected actions: {exc.strerror}") from exc
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{display}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
            ) from None
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            raise UserError(
                f"{display}: expected a list of actions like the output of rules test --json"
            )
        return [{k: str(v) for k, v in x.items()} for x in data]
    reader = csv.DictReader(io.StringIO(text))
    needed = {"t", "rule", "service", "action", "detail"}
    # A header is needed even for no actions (or the JSON `[]`): anything else is a mistake.
    if not needed <= set(reader.fieldnames or ()):
        columns = ", ".join(sorted(needed))
        raise UserError(
            f"{display}:1: expected the JSON of rules test --json, or CSV whose columns include "
            f"{columns} (and optionally reason)"
        )
    return [{k: (v or "") for k, v in row.items() if k} for row in _rows(reader, display)]


def compare_actions(
    actual: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, str]]
) -> list[str]:
    """The differences, in words; empty when the actions are the ones expected. `reason`
    is compared only when the expected row gives one."""

    def key(row: Mapping[str, Any], with_reason: bool) -> tuple[str, ...]:
        t = str(row.get("t", ""))
        with contextlib.suppress(ValueError):
            t = f"{float(t):g}"
        base = (
            t,
            str(row.get("rule", "")),
            str(row.get("service", "")),
            str(row.get("action", "")),
            str(row.get("detail", "")),
        )
        return (*base, str(row.get("reason", ""))) if with_reason else base

    problems = []
    for index in range(max(len(actual), len(expected))):
        got = actual[index] if index < len(actual) else None
        want = expected[index] if index < len(expected) else None
        if want is None:
            assert got is not None
            problems.append(f"unexpected action: {_row(key(got, False))}")
        elif got is None:
            problems.append(f"missing action: {_row(key(want, False))}")
        else:
            with_reason = bool(want.get("reason"))
            if key(got, with_reason) != key(want, with_reason):
                wanted, found = _row(key(want, with_reason)), _row(key(got, with_reason))
                problems.append(f"action {index + 1}: expected {wanted}, got {found}")
    return problems


def _row(parts: tuple[str, ...]) -> str:
    return " | ".join(parts)


# --- the virtual world -------------------------------------------------------------------


@dataclass
class _Service:
    view: ServiceView
    ready_given: bool = False


@dataclass
class Replay:
    """A world made of samples. `run` ticks from the first sample to `until`."""

    rules: list[CompiledRule]
    samples: list[Sample]
    instances: Mapping[str, int] = field(default_factory=dict)  # from the stack file
    settings: Settings = field(default_factory=Settings)
    env: str = "dev"
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    store: SeriesStore = field(default_factory=SeriesStore)
    actions: list[Action] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    step: float = 1.0

    def __post_init__(self) -> None:
        names = set(self.instances) | {s.service for s in self.samples}
        for rule in self.rules:
            if rule.services is not None and not self.instances:
                names |= rule.services
        self.services: dict[str, _Service] = {
            name: _Service(
                ServiceView(
                    name,
                    self.instances.get(name, 1),
                    self.instances.get(name, 1),
                    self.env,
                    dict(self.labels.get(name, {})),
                    "current",
                )
            )
            for name in sorted(names)
        }
        self.engine = Engine(self.rules, self.settings)

    def service(self, name: str) -> ServiceView | None:
        entry = self.services.get(name)
        return entry.view if entry else None

    def run(self, start: float | None = None, until: float | None = None) -> list[Action]:
        samples = self.samples
        first = samples[0].t if samples else 0.0
        now = float(math.floor(first if start is None else start))
        end = until if until is not None else (samples[-1].t if samples else now)
        index = 0
        while now <= end:
            while index < len(samples) and samples[index].t <= now:
                self._feed(samples[index])
                index += 1
            self._levels(now)
            result = self.engine.tick(now, self, self.services)
            self.decisions.extend(result.decisions)
            for command in result.commands:
                self._apply(command, now)
            now += self.step
            if now - self.step > end:
                break
            if int(now) % 600 == 0:
                self.store.trim(now)
        return self.actions

    def _feed(self, sample: Sample) -> None:
        entry = self.services.get(sample.service)
        if entry is None:
            entry = self.services[sample.service] = _Service(
                ServiceView(sample.service, 1, 1, self.env, {}, "current")
            )
        key = SIGNAL_COLUMNS.get(sample.signal, (sample.signal, 1.0))[0]
        if sample.signal == "log":
            self.store.add(sample.service, LOG, sample.t, int(sample.value), sample.text)
        elif sample.signal == "restart":
            self.store.add(sample.service, RESTART, sample.t, 0, sample.text)
        elif sample.signal == "instances":
            count = int(sample.value)
            ready = entry.view.ready_instances if entry.ready_given else count
            entry.view = replace(entry.view, instances=count, ready_instances=ready)
        elif sample.signal == "ready_instances":
            entry.ready_given = True
            entry.view = replace(entry.view, ready_instances=int(sample.value))
        else:
            self.store.put(sample.service, key, sample.t, sample.value)

    def _levels(self, now: float) -> None:
        for name, entry in self.services.items():
            self.store.put(name, "instances", now, float(entry.view.instances))
            self.store.put(name, "ready_instances", now, float(entry.view.ready_instances))

    def _apply(self, command: Command, now: float) -> None:
        detail = command.detail
        entry = self.services.get(command.target)
        if command.verb == "SCALE" and entry is not None and command.count is not None:
            entry.ready_given = False
            entry.view = replace(entry.view, instances=command.count, ready_instances=command.count)
        elif command.verb == "ROLLBACK" and entry is not None:
            to = command.to or "previous_stable"
            release = "previous_stable" if to in ("previous_stable", "previous") else to
            entry.view = replace(entry.view, release=release, rolled_back_from=entry.view.release)
        self.actions.append(
            Action(now, command.rule, command.service, command.verb, detail, command.reason)
        )
        self.decisions.append(self.engine.complete(command, now, self))


def samples_from_history(rows: Iterable[tuple[float, str, str, float]]) -> list[Sample]:
    """History rows (10 s buckets) as samples: levels as they were, counts as events. The
    recorded instance counts give each service its first count only: after that the
    simulation follows its own actions."""
    samples: list[Sample] = []
    counted: set[tuple[str, str]] = set()
    for t, service, key, value in rows:
        if key.startswith("log."):
            rank = LOG_LEVELS.get(key.removeprefix("log."))
            if rank is not None:
                samples.extend(Sample(t, service, "log", float(rank)) for _ in range(int(value)))
        elif key == "restart":
            samples.extend(Sample(t, service, "restart", 1.0) for _ in range(int(value)))
        elif key in ("instances", "ready_instances"):
            if (service, key) not in counted:
                counted.add((service, key))
                samples.append(Sample(t, service, key, value))
        else:  # levels, in base units already (a samples file's percentages are not)
            samples.append(Sample(t, service, key, value))
    return samples
