"""The stack as sqlifier understands it: typed, validated, one model per environment.

Everything here is made once, at the edge, by `sqlifier.stack.reader`; the rest of sqlifier
trusts it. Durations are seconds, percentages are 0-100.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_ENV",
    "DEFAULT_METRICS",
    "ENV_NAME",
    "SERVICE_NAME",
    "Approval",
    "BudgetPolicy",
    "Engine",
    "Environment",
    "Notify",
    "Objective",
    "Probe",
    "ProbeKind",
    "Probes",
    "Prometheus",
    "RestartPolicy",
    "Rollout",
    "Route",
    "Router",
    "RouterKind",
    "SecretRef",
    "Service",
    "Slo",
    "Stack",
    "Timeouts",
    "Warmup",
]

# What a service or environment may be called: names of folders, files and metrics.
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
ENV_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}\Z")

DEFAULT_ENV = "dev"
DEFAULT_METRICS = ("127.0.0.1", 9464)  # where the agent serves /metrics


class Approval(enum.Enum):
    NONE = "none"
    REQUIRED = "required"


class RestartPolicy(enum.Enum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class RouterKind(enum.Enum):
    AUTO = "auto"
    EMBEDDED = "embedded"
    HAPROXY = "haproxy"


class ProbeKind(enum.Enum):
    HTTP = "http"
    TCP = "tcp"
    EXEC = "exec"


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe, with Kubernetes' meaning for period, timeout and thresholds."""

    kind: ProbeKind
    target: str  # the HTTP path, the command, or "" for tcp
    period: float = 2.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    status: int | None = None  # HTTP: None accepts any 2xx or 3xx


@dataclass(frozen=True, slots=True)
class Probes:
    startup: Probe | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None


@dataclass(frozen=True, slots=True)
class Warmup:
    """'Ready' is not 'warm': synthetic requests before an instance takes real traffic."""

    requests: int = 0
    path: str = "/"
    max_p95: float | None = None
    slow_start: float = 0.0
    timeout: float = 120.0  # not warm by then: the deploy stops


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long the router waits on an instance, phase by phase (seconds)."""

    connect: float = 5.0  # to open a connection
    first_byte: float = 15.0  # from the whole request sent to the answer's first byte
    idle: float = 60.0  # between two reads of an answer (or an upgraded connection)


@dataclass(frozen=True, slots=True)
class Rollout:
    steps: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
    pause: float = 30.0
    analysis: tuple[str, ...] = ()
    min_requests: int = 50
    bake: float = 30.0
    interval: float = 10.0  # the analysis judges the step this often; a failure aborts
    early_abort: bool = True  # between verdicts, a certain failure aborts at once


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A secret by reference (`secret://local/db_password`), never its value."""

    ref: str
    file: str | None = None
    refresh: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """`shop.localhost/checkout` or `/api/checkout` (any host)."""

    host: str | None
    path: str

    def __str__(self) -> str:
        return f"{self.host or ''}{self.path}"


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    run: str
    source: Path
    shell: bool = False
    instances: int = 1
    stateful: bool = False
    port: int | None = None  # a fixed first port: instance N listens on port + N
    routes: tuple[Route, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, SecretRef] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    restart: RestartPolicy = RestartPolicy.ALWAYS
    stop_timeout: float = 10.0
    build: str | None = None
    migrate: str | None = None
    schema_version: str | None = None
    # Schema revisions this release's migrations lead to that older releases still run
    # against (additive changes): a rollback across them is allowed.
    compatible_schemas: tuple[str, ...] = ()
    probes: Probes = field(default_factory=Probes)
    warmup: Warmup = field(default_factory=Warmup)
    timeouts: Timeouts = field(default_factory=Timeouts)
    rollout: Rollout = field(default_factory=Rollout)
    slo: Slo | None = None


@dataclass(frozen=True, slots=True)
class Environment:
    name: str
    approval: Approval = Approval.NONE
    approvers: tuple[str, ...] = ()
    two_person: bool = False
    env_file: str | None = None
    listen: tuple[str, int] | None = None  # the router's address here, if not [router]'s
    budget: BudgetPolicy | None = None  # when a service's error budget is spent (docs/slo.md)


@dataclass(frozen=True, slots=True)
class Router:
    kind: RouterKind = RouterKind.AUTO
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class Engine:
    interval: float = 1.0
    scale_down_delay: float = 300.0
    action_budget: int = 10
    action_window: float = 600.0


@dataclass(frozen=True, slots=True)
class Notify:
    webhook: str | None = None
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Prometheus:
    url: str | None = None
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Stack:
    """A whole stack file: the base services and, per environment, the services resolved
    with that environment's overrides."""

    path: Path
    name: str
    rules: tuple[str, ...]
    services: dict[str, Service]
    environments: dict[str, Environment]
    resolved: dict[str, dict[str, Service]]
    router: Router = field(default_factory=Router)
    engine: Engine = field(default_factory=Engine)
    notify: Notify = field(default_factory=Notify)
    prometheus: Prometheus = field(default_factory=Prometheus)
    metrics: tuple[str, int] | None = DEFAULT_METRICS
    keep_releases: int = 5  # releases kept on disk per service, for rollback

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(self.services)

    def services_for(self, env: str) -> dict[str, Service]:
        """The services as they run in `env` (the base ones for an undeclared env)."""
        return self.resolved.get(env, self.services)

    def environment(self, env: str) -> Environment:
        return self.environments.get(env, Environment(env))

    def router_for(self, env: str) -> Router:
        """The router as it runs in `env`: [router], with the environment's `listen`."""
        listen = self.environment(env).listen
        if listen is None:
            return self.router
        return Router(self.router.kind, *listen)

    def rule_files(self) -> list[Path]:
        """The files the `rules` patterns match, in a stable order."""
        found: dict[Path, None] = {}
        for pattern in self.rules:
            try:
                matches = sorted(self.root.glob(pattern))
            except (ValueError, NotImplementedError):  # checked when read; never fatal here
                continue
            for path in matches:
                if path.is_file():
                    found[path] = None
        return list(found)


class BudgetPolicy(enum.Enum):
    """What a deploy needs while the service's error budget is spent (docs/slo.md)."""

    APPROVE = "approve"  # an approver's --approve
    FREEZE = "freeze"  # nothing but a release marked as a fix (--fix)
    NONE = "none"  # the usual approval rules


@dataclass(frozen=True, slots=True)
class Objective:
    """One objective of a service: `availability` (good = not 5xx) or `latency` (good =
    answered within `threshold` seconds); `target` is a fraction below 1 (0.999)."""

    name: str
    target: float
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class Slo:
    """A service's objectives over a rolling `window` (seconds), and its budget policy:
    `spent` (None: the environment's `budget`, else approve), the canary's pauses
    multiplied by `slow_canary` while the budget is spent."""

    objectives: tuple[Objective, ...]
    window: float = 30 * 86400.0
    spent: BudgetPolicy | None = None
    slow_canary: float = 2.0
