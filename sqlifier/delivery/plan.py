"""The plan of a deploy: what will change, computed without changing anything.

`sqlifier plan` and the first screen of every deploy show it. A plan compares the live
release's recorded config with the service as the stack now resolves it for the
environment (both through `service_config`, so like is compared with like) and adds what
the deploy will do: the instance counts, the commands run before traffic, the rollout,
the approval the environment asks for, and anything that will stop the deploy.

- **Changes** are leaves of the config: nested tables become dotted paths
  (`env.LOG_LEVEL`, `secrets.DB_PASSWORD.ref`, `rollout.pause`), lists are compared whole
  (`routes`). A missing key and a null value are the same thing, so a record written
  before a setting existed does not show a change for its unset value. Secrets are
  references in the config; their values never reach a plan.
- **A first deploy** (nothing live) lists every setting as added in `changes`, but its
  screen shows one line, "+ first release of web: <run>", with the instance count below.
- **Problems** stop the deploy: an analysis expression a canary cannot judge, or no
  instances. **Notes** do not: a service without routes gets no canary (nothing to split)
  and is replaced one instance at a time.
- **Instances** come from the configs, not from what runs: a service a rule has scaled
  still shows the count its live release recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from sqlifier.delivery.budget import Budget
from sqlifier.delivery.releases import Release, ReleaseError, service_config
from sqlifier.engine.compiled import show_value
from sqlifier.lang.analysis import AnalysisError, parse_analysis
from sqlifier.lang.errors import did_you_mean
from sqlifier.lang.units import Type
from sqlifier.stack.model import Approval, Environment, Service, Stack

__all__ = [
    "NO_ROUTES",
    "PINNED",
    "Change",
    "ServicePlan",
    "approval_text",
    "diff_config",
    "plan_service",
]

NO_ROUTES = "no routes: the release replaces instances one at a time without a canary"
PINNED = (
    "stateful or on a fixed port: the release replaces instances one at a time without a "
    "canary (a second copy would share the data folder or the port)"
)
# Config keys (the last part of a path) whose numbers are seconds, shown like "30s".
_DURATIONS = frozenset(
    {"pause", "bake", "max_p95", "slow_start", "stop_timeout", "period", "timeout", "refresh"}
)
_COMMIT_SHOWN = 12


@dataclass(frozen=True)
class Change:
    """One setting that differs; None on one side means the setting is absent there."""

    path: str
    before: Any
    after: Any

    @property
    def kind(self) -> Literal["added", "changed", "removed"]:
        if self.before is None:
            return "added"
        return "removed" if self.after is None else "changed"

    def line(self) -> str:
        """`~ env.LOG_LEVEL: info -> debug`, `+ env.NEW: 1` or `- env.OLD`."""
        if self.kind == "added":
            return f"+ {self.path}: {_show(self.path, self.after)}"
        if self.kind == "removed":
            return f"- {self.path}"
        return f"~ {self.path}: {_show(self.path, self.before)} -> {_show(self.path, self.after)}"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "before": self.before, "after": self.after}


@dataclass(frozen=True)
class ServicePlan:
    """What deploying `target` of one service to one environment will do."""

    service: str
    env: str
    current: str | None  # the live release's version; None: a first deploy
    target: str  # the new version, or "(to be built from <ref>)"
    commit: str | None
    changes: tuple[Change, ...]  # live release's config -> the new resolved config
    instances: tuple[int, int]  # (now, after), from the configs; now is 0 on a first deploy
    migrate: str | None  # run before traffic
    schema_command: str | None  # prints the schema version, run before traffic
    steps: tuple[float, ...]  # percentages, 0-100
    pause: float
    bake: float
    analysis: tuple[str, ...]
    min_requests: int
    warmup: dict[str, Any]  # requests, path, max_p95, slow_start
    approval: str  # "none" | "required (approvers: alice, bob)" | "required, two people (...)"
    problems: tuple[str, ...]  # each stops the deploy
    notes: tuple[str, ...] = ()  # worth knowing, stop nothing
    routes: tuple[str, ...] = ()  # after the deploy; none means no canary
    budget: dict[str, Any] | None = None  # the error budget and its policy (budget.py)

    @property
    def first(self) -> bool:
        return self.current is None

    @property
    def canary(self) -> bool:
        """Will traffic be split between the releases? Only a routed service has any,
        and only one free to run a second copy beside the first."""
        return bool(self.routes) and PINNED not in self.notes

    def lines(self) -> list[str]:
        """The plan as a compact screen, like `terraform plan`: a header, then two-space
        indented lines."""
        lines = [self._header()]
        lines += [f"  {line}" for line in self._changes()]
        lines.append(f"  instances: {self._instances()}")
        lines.append(f"  migrate: {self.migrate or 'none'}")
        if self.schema_command is not None:
            lines.append(f"  schema version: {self.schema_command}")
        if self.canary:
            lines.append(f"  rollout: {self._rollout()}")
        lines.append(f"  bake: {_duration(self.bake)}")
        lines.append(f"  warmup: {self._warmup()}")
        lines.append(f"  approval: {self.approval}")
        if self.budget is not None:
            lines.append(f"  error budget: {self.budget['text']}")
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  problem: {problem}" for problem in self.problems]
        return lines

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["changes"] = [change.to_json() for change in self.changes]
        for name in ("instances", "steps", "analysis", "problems", "notes", "routes"):
            data[name] = list(data[name])
        data["warmup"] = dict(self.warmup)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServicePlan:
        """The plan `to_json` gave; KeyError, TypeError or ValueError for other data."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name != "budget"}
        values["budget"] = data.get("budget")
        values["changes"] = tuple(
            Change(c["path"], c["before"], c["after"]) for c in data["changes"]
        )
        now, after = data["instances"]
        values["instances"] = (now, after)
        for name in ("steps", "analysis", "problems", "notes", "routes"):
            values[name] = tuple(data[name])
        values["warmup"] = dict(data["warmup"])
        return cls(**values)

    def _header(self) -> str:
        commit = f" (commit {self.commit[:_COMMIT_SHOWN]})" if self.commit else ""
        current = self.current or "nothing live"
        return f"{self.service} in {self.env}: {current} -> {self.target}{commit}"

    def _changes(self) -> list[str]:
        if self.first:
            run = [c.after for c in self.changes if c.path == "run"]
            return [f"+ first release of {self.service}" + "".join(f": {r}" for r in run)]
        shown = [change.line() for change in self.changes if change.path != "instances"]
        return shown or ["no config changes"]

    def _instances(self) -> str:
        now, after = self.instances
        return f"{now} -> {after}" if now != after else f"{after} (unchanged)"

    def _rollout(self) -> str:
        steps = " -> ".join(show_value(step / 100, Type.PERCENT) for step in self.steps)
        analysis = ", ".join(self.analysis) or "against the stable track only"
        return (
            f"{steps}, {_duration(self.pause)} pause, analysis: {analysis} "
            f"(min {self.min_requests} requests per step)"
        )

    def _warmup(self) -> str:
        requests = self.warmup.get("requests") or 0
        max_p95 = self.warmup.get("max_p95")
        slow_start = self.warmup.get("slow_start") or 0.0
        parts = []
        if requests:
            parts.append(f"{requests} requests to {self.warmup.get('path', '/')}")
            if max_p95 is not None:
                parts.append(f"p95 under {_duration(max_p95)}")
        if slow_start:
            parts.append(f"{_duration(slow_start)} slow start")
        return ", ".join(parts) or "none"


def diff_config(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> tuple[Change, ...]:
    """The settings that differ between two configs, sorted by path.

    Nested tables are flattened to dotted paths; lists are compared whole; a null value is
    the same as no value. `before` None (nothing live) makes every setting of `after` added.
    """
    old = dict(_leaves(before or {}))
    new = dict(_leaves(after))
    return tuple(
        Change(path, old.get(path), new.get(path))
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    )


def plan_service(
    stack: Stack,
    env: str,
    service: str,
    live: Release | None,
    target_version: str,
    target_commit: str | None = None,
    budget: Budget | None = None,
) -> ServicePlan:
    """The plan of deploying `target_version` of `service` to `env`, where `live` is the
    release live there now (None: a first deploy). Reads nothing but its arguments."""
    spec = _service(stack, env, service)
    if live is not None and (live.service, live.env) != (service, env):
        raise ValueError(
            f"the live release is of {live.service} in {live.env}, not of {service} in {env}"
        )
    config = service_config(spec)
    before = live.config if live is not None else None
    rollout = spec.rollout
    return ServicePlan(
        service=service,
        env=env,
        current=live.version if live is not None else None,
        target=target_version,
        commit=target_commit,
        changes=diff_config(before, config),
        instances=(int(before.get("instances", 0)) if before else 0, spec.instances),
        migrate=spec.migrate,
        schema_command=spec.schema_version,
        steps=rollout.steps,
        pause=rollout.pause,
        bake=rollout.bake,
        analysis=rollout.analysis,
        min_requests=rollout.min_requests,
        warmup=dict(config["warmup"]),
        approval=approval_text(stack.environment(env)),
        problems=_problems(spec, env),
        notes=_notes(spec),
        routes=tuple(str(route) for route in spec.routes),
        budget=None if budget is None else {**budget.to_json(), "text": budget.text()},
    )


def _notes(spec: Service) -> tuple[str, ...]:
    if not spec.routes:
        return (NO_ROUTES,)
    if spec.stateful or spec.port is not None:
        return (PINNED,)
    return ()


def approval_text(environment: Environment) -> str:
    """What a deploy to the environment needs, in words."""
    if environment.approval is Approval.NONE:
        return "none"
    who = ", ".join(environment.approvers) or "none listed"
    people = ", two people" if environment.two_person else ""
    return f"required{people} (approvers: {who})"


def _problems(spec: Service, env: str) -> tuple[str, ...]:
    found = []
    for text in spec.rollout.analysis:
        try:
            parse_analysis(text)
        except AnalysisError as exc:
            found.append(str(exc))
    if spec.instances == 0:
        found.append(
            f"{spec.name} has instances = 0 in {env}: nothing would run the new release; "
            "set instances to 1 or more"
        )
    return tuple(found)


def _service(stack: Stack, env: str, name: str) -> Service:
    services = stack.services_for(env)
    if name in services:
        return services[name]
    hint = did_you_mean(name, services)
    known = ", ".join(services) or "none"
    raise ReleaseError(
        f"no service {name!r} in {stack.path}; " + (hint or f"services: {known}"),
        service=name,
    )


def _leaves(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{path}.")
        elif value is not None:
            yield path, value


def _show(path: str, value: Any) -> str:
    """A config value the way the stack file writes it: 30s, 1%, true, ["/api"]."""
    key = path.rsplit(".", 1)[-1]
    if key == "steps" and isinstance(value, list):
        return "[" + ", ".join(f'"{show_value(s / 100, Type.PERCENT)}"' for s in value) + "]"
    if key in _DURATIONS and isinstance(value, int | float) and not isinstance(value, bool):
        return _duration(value)
    return _plain(value, top=True)


def _plain(value: Any, *, top: bool = False) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return show_value(value, Type.NUMBER)
    if isinstance(value, str):
        return value if top and value.strip() == value and value else _quoted(value)
    if isinstance(value, list):
        return "[" + ", ".join(_plain(item) for item in value) + "]"
    return str(value)


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _duration(seconds: float) -> str:
    return show_value(seconds, Type.DURATION) if seconds else "0s"  # not "0ms"
