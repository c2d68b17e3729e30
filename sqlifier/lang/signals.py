"""The catalogue of built-in signals: their kind, value type and arguments.

The checker validates rules against it; the engine reads signals by the same names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sqlifier.lang.units import Type

__all__ = ["LOG_LEVELS", "QUANTILES", "SIGNALS", "ArgSpec", "SignalKind", "SignalSpec"]


class SignalKind(enum.Enum):
    LEVEL = "level"  # a value now; FOR means "held at every evaluation for d"
    COUNT = "count"  # events in a window; FOR sets the window (default 1m)
    EVENT = "event"  # true at matching moments (schedule)


# Log levels from least to most severe; aliases share a rank.
LOG_LEVELS: dict[str, int] = {
    "debug": 10,
    "info": 20,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "critical": 50,
    "fatal": 50,
}

QUANTILES = ("p50", "p90", "p95", "p99")
TRACKS = ("stable", "canary")
OBJECTIVES = ("availability", "latency")  # a service's SLO objectives (docs/slo.md)


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """An argument a signal accepts: its type and, for closed sets, the valid values."""

    type: Type
    choices: tuple[str, ...] = ()
    word: bool = False  # written as a bare word (`p99`) rather than a string
    check: str | None = None  # "regex" | "cron": validated further by the checker


@dataclass(frozen=True, slots=True)
class SignalSpec:
    name: str
    kind: SignalKind
    summary: str
    values: tuple[Type, ...] = (Type.NUMBER,)  # what a comparison may use
    named: dict[str, ArgSpec] = field(default_factory=dict)
    positional: ArgSpec | None = None  # a required first positional argument
    direction: tuple[str, ...] = ()  # high_cpu: ('>', '>='); low_cpu: ('<', '<=')
    low: float | None = None  # the smallest value the signal can take (base units)
    high: float | None = None  # the largest, when there is one


_SERVICE = {"service": ArgSpec(Type.STRING)}
# cpu(of = "limit"): the share of the service's `resources.cpu` rather than of one core.
_CPU = {**_SERVICE, "of": ArgSpec(Type.STRING, ("limit",))}
_ROUTED = {"service": ArgSpec(Type.STRING), "track": ArgSpec(Type.STRING, TRACKS)}
_LOG = {
    "service": ArgSpec(Type.STRING),
    "level": ArgSpec(Type.STRING, tuple(LOG_LEVELS)),
    "match": ArgSpec(Type.STRING, check="regex"),
}
_LOG_ERROR = {
    "service": ArgSpec(Type.STRING),
    "level": ArgSpec(Type.STRING, ("error", "critical", "fatal")),
    "match": ArgSpec(Type.STRING, check="regex"),
}


def _signals(*specs: SignalSpec) -> dict[str, SignalSpec]:
    return {spec.name: spec for spec in specs}


SIGNALS: dict[str, SignalSpec] = _signals(
    SignalSpec(
        "cpu",
        SignalKind.LEVEL,
        "mean CPU of the service's instances, 100% = one core per instance"
        ' (cpu(of = "limit"): 100% = its resources.cpu)',
        (Type.PERCENT,),
        _CPU,
        low=0,
    ),
    SignalSpec(
        "high_cpu",
        SignalKind.LEVEL,
        "shorthand for cpu() > X, written high_cpu(>X)",
        (Type.PERCENT,),
        _CPU,
        direction=(">", ">="),
        low=0,
    ),
    SignalSpec(
        "low_cpu",
        SignalKind.LEVEL,
        "shorthand for cpu() < X, written low_cpu(<X)",
        (Type.PERCENT,),
        _CPU,
        direction=("<", "<="),
        low=0,
    ),
    SignalSpec(
        "memory",
        SignalKind.LEVEL,
        "mean resident memory of the instances; a size, or % of resources.memory",
        (Type.BYTES, Type.PERCENT),
        _SERVICE,
        low=0,
    ),
    SignalSpec(
        "rps", SignalKind.LEVEL, "requests per second through the router", named=_ROUTED, low=0
    ),
    SignalSpec(
        "error_rate",
        SignalKind.LEVEL,
        "share of responses with a 5xx status",
        (Type.PERCENT,),
        _ROUTED,
        low=0,
        high=1,
    ),
    SignalSpec(
        "latency",
        SignalKind.LEVEL,
        "request latency quantile: latency(p99)",
        (Type.DURATION,),
        _ROUTED,
        positional=ArgSpec(Type.STRING, QUANTILES, word=True),
        low=0,
    ),
    SignalSpec("instances", SignalKind.LEVEL, "running instances", named=_SERVICE, low=0),
    SignalSpec("ready_instances", SignalKind.LEVEL, "ready instances", named=_SERVICE, low=0),
    SignalSpec(
        "log",
        SignalKind.COUNT,
        "log lines from the service's instances (optionally one level, a regex match)",
        named=_LOG,
        low=0,
    ),
    SignalSpec(
        "log_error",
        SignalKind.COUNT,
        "log lines at error level or above (optionally one level)",
        named=_LOG_ERROR,
        low=0,
    ),
    SignalSpec("restarts", SignalKind.COUNT, "instance restarts", named=_SERVICE, low=0),
    SignalSpec(
        "disk_free",
        SignalKind.LEVEL,
        "bytes free on the filesystem of the stack's state (.sqlifier/)",
        (Type.BYTES,),
        _SERVICE,
        low=0,
    ),
    SignalSpec(
        "prometheus",
        SignalKind.LEVEL,
        "a value read from an external Prometheus: prometheus('promql')",
        (Type.NUMBER, Type.PERCENT),
        _SERVICE,
        positional=ArgSpec(Type.STRING),
    ),
    SignalSpec(
        "schedule",
        SignalKind.EVENT,
        "true at the minutes a cron expression matches: schedule('0 9 * * mon-fri')",
        (),
        positional=ArgSpec(Type.STRING, check="cron"),
    ),
    SignalSpec(
        "egress_denied",
        SignalKind.COUNT,
        "connections the service's isolated instances opened that its egress denied",
        named=_SERVICE,
        low=0,
    ),
    SignalSpec(
        "burn_rate",
        SignalKind.LEVEL,
        "how fast the error budget burns over a window (1 = exactly on budget): burn_rate(1h)",
        named={"service": ArgSpec(Type.STRING), "objective": ArgSpec(Type.STRING, OBJECTIVES)},
        positional=ArgSpec(Type.DURATION),
        low=0,
    ),
    SignalSpec(
        "error_budget",
        SignalKind.LEVEL,
        "the share of the SLO window's error budget left; below 0% once overspent",
        (Type.PERCENT,),
        {"service": ArgSpec(Type.STRING), "objective": ArgSpec(Type.STRING, OBJECTIVES)},
        high=1,
    ),
)
