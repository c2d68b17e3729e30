"""A service's `slo` key: its objectives, their window and its budget policy.

    slo = { availability = "99.9%", latency = { p = "300ms", target = "99%" }, window = "30d" }

Read like every other key (a positioned error for each mistake); an environment may
override parts of it (`[environments.production.services.web] slo = { spent = "freeze" }`),
merged key by key, so the objectives themselves are checked once the service is resolved.
A target of 100% is refused: it leaves no error budget, so a single failed request would
break the objective and every burn rate would be infinite.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlifier.stack import model as m
from sqlifier.stack.dropped import INVALID as _INVALID

if TYPE_CHECKING:
    from sqlifier.stack.reader import StackReader
    from sqlifier.stack.tomlpos import Path as KeyPath

__all__ = ["build_slo", "read_slo", "slo_from_config"]

_TARGET = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%\Z")
_SHORTEST = 3600.0  # a window shorter than an hour leaves the burn-rate windows no room
_MISSING = {
    ("p",): "the time a good request is answered within",
    ("target",): "the share of requests that must be answered within p",
    ("p", "target"): "the time a good request is answered within and the share that must be",
}


def read_slo(reader: StackReader, value: object, path: KeyPath) -> Any:
    """The typed parts of an `slo` table (a dict, merged over the base by environments)."""
    where = ".".join(str(p) for p in path)
    if not isinstance(value, dict):
        reader.error(
            path,
            f'{where} must be a table, like {{ availability = "99.9%", window = "30d" }}',
        )
        return _INVALID
    schema = {
        "availability": lambda v, p: _objective_target(reader, v, p, "availability"),
        "latency": lambda v, p: _latency(reader, v, p),
        "window": reader.duration,
        "spent": reader.choice(m.BudgetPolicy),
        "slow_canary": _factor(reader),
    }
    typed = reader.table(value, path, schema, where)
    if typed is None:
        return _INVALID
    window = typed.get("window")
    if window is not None and window < _SHORTEST:
        reader.error(
            (*path, "window"),
            f"{where}.window must be at least 1h (an objective is judged over days, "
            'like "30d" or "28d")',
        )
        del typed["window"]
    base = path[0] == "services"
    if base and "availability" not in typed and "latency" not in typed and typed:
        reader.error(
            path,
            f'{where} needs an objective: availability = "99.9%" or '
            'latency = { p = "300ms", target = "99%" }',
            key=True,
        )
    return typed


def _target(reader: StackReader, value: object, path: KeyPath) -> Any:
    where = ".".join(str(p) for p in path)
    match = _TARGET.match(value) if isinstance(value, str) else None
    if match is None or not 0 < float(match.group(1)) <= 100:
        reader.error(
            path,
            f'{where} must be a percentage above 0 and below 100, like "99.9%", '
            f"found {_shown(value)}",
        )
        return _INVALID
    percent = float(match.group(1))
    if percent == 100:
        reader.error(
            path,
            f"{where} cannot be 100%: it leaves no error budget, so one failed request "
            "breaks the objective, every burn rate is infinite and no deploy could ever "
            "be judged against it",
            'aim below perfect, like "99.9%" (43 minutes of errors in 30 days) or "99.99%"',
        )
        return _INVALID
    return float(Decimal(match.group(1)) / 100)  # 99.9% is 0.999, not 0.9990000000000001


def _objective_target(reader: StackReader, value: object, path: KeyPath, name: str) -> Any:
    target = _target(reader, value, path)
    return _INVALID if target is _INVALID else m.Objective(name, target)


def _latency(reader: StackReader, value: object, path: KeyPath) -> Any:
    where = ".".join(str(p) for p in path)
    if not isinstance(value, dict):
        reader.error(
            path,
            f'{where} must be a table, like {{ p = "300ms", target = "99%" }}, '
            f"found {_shown(value)}",
        )
        return _INVALID
    typed = reader.table(
        value, path, {"p": reader.duration, "target": lambda v, p: _target(reader, v, p)}, where
    )
    if typed is None:
        return _INVALID
    missing = [key for key in ("p", "target") if key not in typed and key not in value]
    if missing:
        reader.error(
            path,
            f"{where} needs {' and '.join(missing)}: {_MISSING[tuple(missing)]}, "
            'like { p = "300ms", target = "99%" }',
        )
        return _INVALID
    if "p" not in typed or "target" not in typed:
        return _INVALID  # reported above
    return m.Objective("latency", typed["target"], typed["p"])


def _factor(reader: StackReader) -> Any:
    def read(value: object, path: KeyPath) -> Any:
        where = ".".join(str(p) for p in path)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 100:
            reader.error(
                path,
                f"{where} must be a number from 1 to 100 (the canary's pauses are "
                f"multiplied by it while the budget is spent), found {_shown(value)}",
            )
            return _INVALID
        return float(value)

    return read


def build_slo(typed: Mapping[str, Any] | None) -> m.Slo | None:
    """The model of a resolved service's `slo` (None without objectives)."""
    if not typed:
        return None
    objectives = tuple(typed[k] for k in ("availability", "latency") if k in typed)
    if not objectives:
        return None
    return m.Slo(
        objectives,
        typed.get("window", 30 * 86400.0),
        typed.get("spent"),
        typed.get("slow_canary", 2.0),
    )


def slo_from_config(data: object) -> m.Slo | None:
    """The `slo` a release's recorded config holds (`service_config`'s JSON)."""
    if not isinstance(data, Mapping):
        return None
    objectives = tuple(
        m.Objective(str(o["name"]), float(o["target"]), o.get("threshold"))
        for o in data.get("objectives", ())
    )
    spent = data.get("spent")
    return m.Slo(
        objectives,
        float(data.get("window", 30 * 86400.0)),
        None if spent is None else m.BudgetPolicy(spent),
        float(data.get("slow_canary", 2.0)),
    )


def _shown(value: object) -> str:
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
