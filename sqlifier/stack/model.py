"""The stack as sqlifier understands it: typed, validated, one model per environment.

Everything here is made once, at the edge, by `sqlifier.stack.reader`; the rest of sqlifier
trusts it. Durations are seconds, percentages are 0-100.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from sqlifier.stack.names import DEFAULT_ENV, ENV_NAME, SERVICE_NAME

__all__ = [
    "DEFAULT_DASHBOARD",
    "DEFAULT_ENV",
    "DEFAULT_METRICS",
    "ENV_NAME",
    "SERVICE_NAME",
    "Approval",
    "BudgetPolicy",
    "Egress",
    "Engine",
    "Environment",
    "GatewayMetrics",
    "Isolation",
    "Kubernetes",
    "MetricQueries",
    "Notify",
    "Objective",
    "PlatformKind",
    "Probe",
    "ProbeKind",
    "Probes",
    "Prometheus",
    "Resources",
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
    "Tls",
    "TlsCertificate",
    "Warmup",
]

DEFAULT_METRICS = ("127.0.0.1", 9464)  # where the agent serves /metrics
DEFAULT_DASHBOARD = ("127.0.0.1", 9465)  # where the agent serves its web dashboard


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


class PlatformKind(enum.Enum):
    """Where an environment's instances run (docs/kubernetes.md)."""

    LOCAL = "local"
    KUBERNETES = "kubernetes"


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


class Isolation(enum.Enum):
    NONE = "none"
    NETWORK = "network"  # a network namespace per instance, egress denied unless allowed


@dataclass(frozen=True, slots=True)
class Egress:
    """A destination an isolated instance may open: a service of the stack by name
    (`orders`), a host and port (`db.example.com:5432`, resolved when the instance
    starts), or a network and port (`10.0.0.0/8:443`)."""

    kind: str  # "service" | "host" | "network"
    target: str
    port: int | None = None

    def __str__(self) -> str:
        return self.target if self.port is None else f"{self.target}:{self.port}"


@dataclass(frozen=True, slots=True)
class Resources:
    """Limits of each instance of a service (`resources = { cpu = 0.5, memory = "256Mi" }`),
    enforced through cgroups (runtime/cgroups.py)."""

    cpu: float | None = None  # cores: 0.5 is half of one
    memory: int | None = None  # bytes


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
    image: str | None = None  # the container image on Kubernetes; ignored locally
    isolation: Isolation = Isolation.NONE
    egress: tuple[Egress, ...] = ()
    user: str | None = None  # the account its instances run as (the agent's when None)
    resources: Resources | None = None
    slo: Slo | None = None


@dataclass(frozen=True, slots=True)
class Kubernetes:
    """Where a Kubernetes environment runs: a namespace of the cluster that a kubeconfig
    context names (None: the current one, or the cluster sqlifier runs in)."""

    namespace: str
    context: str | None = None
    gateway: str | None = None  # its HTTPRoutes' Gateway: "NAMESPACE/NAME" or "NAME"
    agent_image: str | None = None  # the agent's image (None: sqlifier's, docs/kubernetes.md)


@dataclass(frozen=True, slots=True)
class Environment:
    name: str
    approval: Approval = Approval.NONE
    approvers: tuple[str, ...] = ()
    two_person: bool = False
    env_file: str | None = None
    listen: tuple[str, int] | None = None  # the router's address here, if not [router]'s
    platform: PlatformKind = PlatformKind.LOCAL
    kubernetes: Kubernetes | None = None  # set when platform is KUBERNETES
    tls: Tls | None = None  # TLS here, if not [router]'s ("off": not enabled)
    budget: BudgetPolicy | None = None  # when a service's error budget is spent (docs/slo.md)


@dataclass(frozen=True, slots=True)
class TlsCertificate:
    """A certificate (its chain) and its private key, PEM files; paths as written."""

    cert: str
    key: str


@dataclass(frozen=True, slots=True)
class Tls:
    """TLS at the front door (`[router] tls`): the certificates, the first one the default
    for clients whose server name (SNI) no certificate names."""

    certificates: tuple[TlsCertificate, ...] = ()
    self_signed: bool = False  # made and kept by sqlifier, for development
    redirect: tuple[str, int] | None = None  # a plain listener answering 308 to https
    hsts: float | None = None  # Strict-Transport-Security max-age, seconds

    @property
    def enabled(self) -> bool:
        return self.self_signed or bool(self.certificates)


@dataclass(frozen=True, slots=True)
class Router:
    kind: RouterKind = RouterKind.AUTO
    host: str = "127.0.0.1"
    port: int = 8080
    tls: Tls | None = None


@dataclass(frozen=True, slots=True)
class Engine:
    interval: float = 1.0
    scale_down_delay: float = 300.0
    action_budget: int = 10
    action_window: float = 600.0
    # The CPU signal: the mean of an instance's readings over this window (whole intervals).
    cpu_window: float = 2.0


@dataclass(frozen=True, slots=True)
class Notify:
    webhook: str | None = None
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class Prometheus:
    url: str | None = None
    timeout: float = 2.0
    # whose request metrics count a service's requests on Kubernetes (None: Envoy Gateway's)
    gateway_metrics: GatewayMetrics | MetricQueries | None = None
    # On Kubernetes: whose metrics rps, error_rate and latency come from ("envoy-gateway",
    # "istio", "nginx", "traefik"), and queries in place of the built-in ones, per signal.
    gateway: str | None = None
    queries: dict[str, str] = field(default_factory=dict)


# [prometheus] gateway's values, and the signals [prometheus] queries may give a query for.
PROMETHEUS_GATEWAYS = ("envoy-gateway", "istio", "nginx", "traefik")
PROMETHEUS_SIGNALS = ("cpu", "memory", "rps", "error_rate", "latency")


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
    dashboard: tuple[str, int] | None = DEFAULT_DASHBOARD

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
        """The router as it runs in `env`: [router], with the environment's `listen`
        and `tls`."""
        environment = self.environment(env)
        host, port = environment.listen or (self.router.host, self.router.port)
        tls = self.router.tls if environment.tls is None else environment.tls
        return Router(self.router.kind, host, port, tls if tls and tls.enabled else None)

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


class GatewayMetrics(enum.Enum):
    """A Gateway API implementation whose request metrics sqlifier knows (docs/slo.md)."""

    ENVOY_GATEWAY = "envoy-gateway"
    ISTIO = "istio"
    NGINX_GATEWAY_FABRIC = "nginx-gateway-fabric"


@dataclass(frozen=True, slots=True)
class MetricQueries:
    """Request metrics written out: PromQL selectors where `$service` and `$namespace`
    name a service; `latency` is a histogram's bucket series, its `le` in `unit` seconds."""

    requests: str
    errors: str
    latency: str | None = None
    unit: float = 1.0
