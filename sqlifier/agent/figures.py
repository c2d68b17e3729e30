"""What the agent's automation shows Prometheus, as one value for `/metrics`.

`signals/exposition.py` renders it in the text format; this module only gathers it: the
latest level of each signal per service, restarts and log lines counted per service, the
router's requests and latency histogram per service and track (monotonic counters), the
state of every rule, the actions the rules took and the decisions they recorded, and
how long the engine's last tick took.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlifier.agent.world import in_service
from sqlifier.engine.explain import rule_rows

if TYPE_CHECKING:
    from sqlifier.agent.automation import Automation

__all__ = ["metrics"]


def metrics(automation: Automation) -> dict[str, Any]:
    """What `/metrics` shows (`signals/exposition.py` renders it)."""
    now = automation.clock()
    platform = automation.platform
    services: dict[str, Any] = {}
    for name in platform.services():
        values: dict[str, Any] = {}
        for key in ("cpu", "memory", "rps", "error_rate", "latency_p50", "latency_p90",
                    "latency_p95", "latency_p99", "instances", "ready_instances"):  # fmt: skip
            values[key] = automation.store.level(name, key, now)
        values["restarts_total"] = sum(i.restarts for i in in_service(platform, name))
        values["log_lines_total"] = automation.samplers.log_totals.get(name, {})
        services[name] = values
    rows = rule_rows(automation.engine, platform.services())
    counts = automation.decisions.counts()
    return {
        "stack": automation.stack.name,
        "env": automation.env,
        "services": services,
        "router": automation.samplers.router_totals.rows(),
        "instances": list(automation.samplers.instances.values()),
        "rules": [
            {"rule": r["rule"], "service": r["service"], "state": r["state"].replace(" ", "_")}
            for r in rows
        ],
        "actions_total": [
            {"rule": rule, "service": target, "action": verb, "result": result, "count": n}
            for (rule, target, verb, result), n in sorted(automation.counts.items())
        ],
        "decisions_total": [
            {
                "rule": c["rule"],
                "service": c["service"],
                "decision": c["outcome"],
                "count": c["count"],
            }
            for c in _merge_counts(counts)
        ],
        "slo": [_slo_row(f.to_json()) for f in automation.slo.figures(now)],
        "engine": {
            "ticks_total": automation.engine.ticks,
            "last_tick_seconds": automation.last_tick_seconds,
            "paused": automation.engine.paused_all,
        },
    }


def _merge_counts(counts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[tuple[str, str, str], int] = {}
    for c in counts:
        key = (str(c["rule"]), str(c["service"]), str(c["outcome"]))
        merged[key] = merged.get(key, 0) + int(c["count"])
    return [
        {"rule": r, "service": s, "outcome": o, "count": n}
        for (r, s, o), n in sorted(merged.items())
    ]


def _slo_row(row: dict[str, Any]) -> dict[str, Any]:
    """Burn-rate windows named as rules write them ("1h"), not in seconds."""
    rates = row["burn_rates"]
    row["burn_rates"] = {_window(float(w)): r for w, r in rates.items()}
    return row


def _window(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
