"""What each page shows, read from the agent's `Source`: plain dicts for the templates.

Reading is the whole job here: nothing acts, nothing is written. The one-hour series come
from the signal history (10 s buckets); `Series` reads them at most once per bucket, so a
page with a hundred services does not decode the history on every request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlifier.dashboard.source import Source
from sqlifier.delivery.dora import compute
from sqlifier.delivery.events import read_events
from sqlifier.engine.compiled import CompiledRule, Test, show_value, signal_unit
from sqlifier.engine.machine import Engine
from sqlifier.engine.state import State
from sqlifier.engine.wording import clock, shown, values_text
from sqlifier.lang.units import Type

__all__ = ["CHART_KEYS", "Series", "audit", "deploys", "dora", "overview", "rules", "service"]

HOUR = 3600.0
MINUTE = 60.0
STEP = 10.0  # the history's resolution
# The service page's charts: history key, title, unit.
CHART_KEYS = (
    ("cpu", "CPU", "%"),
    ("memory", "Memory", "bytes"),
    ("rps", "Requests per second", "rps"),
    ("error_rate", "Error rate (5xx)", "%"),
    ("latency_p99", "Latency p99", "s"),
)
_SPARKS = ("rps", "error_rate", "latency_p99")
ACTED = ("fired", "done", "failed", "would fire")


class Series:
    """What the pages draw from the signal history, kept per 10 s bucket.

    The overview's sparklines need the highest value of each minute of the last hour for
    three keys of every service: they are read aggregated (`History.peaks`), the whole
    hour once and then only the minute that is filling, and each line is drawn again only
    when its minutes changed. A service's charts (the Service and Deploys pages) read that
    one service's hour at 10 s, at most once per bucket.
    """

    def __init__(self, source: Source) -> None:
        self.source = source
        self._bucket = -1.0
        self._read_to = -1.0  # where the minutes were last read up to (a bucket's start)
        self._minutes: dict[tuple[str, str], dict[int, float]] = {}
        self._sparks: dict[tuple[str, str], str] = {}
        self._first = 0  # the first minute the sparklines show
        self._purged = 0  # the first minute when the older ones were last dropped
        self._hours: dict[str, dict[str, list[tuple[float, float]]]] = {}

    def _turn(self, now: float) -> None:
        bucket = now - now % STEP
        if bucket == self._bucket:
            return
        self._bucket = bucket
        self._hours = {}
        first = int((bucket - HOUR) // MINUTE * MINUTE + MINUTE)
        if first != self._first:
            self._first = first
            self._sparks = {}  # every line moves left by one minute
        self._read_minutes(bucket)

    def _read_minutes(self, bucket: float) -> None:
        history = self.source.history()
        if history is None:
            self._minutes, self._sparks, self._read_to = {}, {}, -1.0
            return
        whole = self._read_to < self._first
        since = self._first if whole else self._read_to - self._read_to % MINUTE
        try:
            peaks = history.peaks(since, bucket + STEP, int(MINUTE), keys=_SPARKS)
        except Exception:  # a damaged history: the pages show no charts, not an error
            self._minutes, self._sparks, self._read_to = {}, {}, -1.0
            return
        if whole:
            self._minutes, self._sparks = {}, {}
        for service, keys in peaks.items():
            for key, minutes in keys.items():
                known = self._minutes.setdefault((service, key), {})
                if any(known.get(m) != v for m, v in minutes.items()):
                    known.update(minutes)
                    self._sparks.pop((service, key), None)
        if self._purged != self._first:  # a minute began: the oldest ones left the hour
            self._purged = self._first
            for known in self._minutes.values():
                for minute in [m for m in known if m < self._first]:
                    del known[minute]
        self._read_to = bucket

    def spark(self, service: str, key: str, now: float) -> str:
        """A sparkline's points: the highest value of each minute of the last hour."""
        self._turn(now)
        found = self._sparks.get((service, key))
        if found is None:
            minutes = self._minutes.get((service, key), {})
            found = self._sparks[(service, key)] = spark_points(minutes, self._first)
        return found

    def hour(self, service: str, now: float) -> dict[str, list[tuple[float, float]]]:
        """One service's last hour at 10 s, key -> [(t, value)]."""
        self._turn(now)
        found = self._hours.get(service)
        if found is None:
            history = self.source.history()
            found = {}
            if history is not None:
                try:
                    found = history.columns(
                        self._bucket - HOUR + STEP, self._bucket + STEP, services=(service,)
                    ).get(service, {})
                except Exception:  # a damaged history: no charts, not an error
                    found = {}
            self._hours[service] = found
        return found


def _status(source: Source) -> dict[str, Any]:
    return source.status()


def _instances(status: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    return [
        dict(i)
        for i in status.get("instances", [])
        if isinstance(i, dict) and i.get("service") == name
    ]


def _level(source: Source, service: str, key: str, now: float) -> float | None:
    store = source.store()
    return None if store is None else store.level(service, key, now)


def spark_points(
    minutes: Mapping[int, float], first: int, width: int = 120, height: int = 24
) -> str:
    """An SVG polyline's points for the minutes of one hour (minute start -> its highest
    value; `first` is the hour's first minute), scaled to the box."""
    if not minutes:
        return ""
    low, high = min(minutes.values()), max(minutes.values())
    span = (high - low) or 1.0
    step = width / (HOUR / MINUTE - 1)
    scale = (height - 2) / span
    return " ".join(
        f"{(m - first) / MINUTE * step:.0f},{height - 1 - (v - low) * scale:.0f}"
        for m, v in sorted(minutes.items())
    )


def overview(source: Source, series: Series, now: float) -> dict[str, Any]:
    status = _status(source)
    services = []
    for name, spec in source.stack.services_for(source.env).items():
        instances = _instances(status, name)
        ready = sum(1 for i in instances if i.get("state") == "ready")
        tracks = sorted({str(i.get("track") or "stable") for i in instances})
        releases = sorted({str(i["release"]) for i in instances if i.get("release")})
        services.append(
            {
                "name": name,
                "instances": len(instances),
                "ready": ready,
                "wanted": spec.instances,
                "state": _service_state(instances),
                "releases": releases,
                "tracks": tracks,
                "rps": _level(source, name, "rps", now),
                "error_rate": _level(source, name, "error_rate", now),
                "p99": _level(source, name, "latency_p99", now),
                "spark": {
                    key: series.spark(name, key, now)
                    for key in ("rps", "error_rate", "latency_p99")
                },
            }
        )
    return {
        "services": services,
        "agent": {
            "phase": status.get("phase"),
            "error": status.get("error"),
            "pid": status.get("pid"),
            "disk": status.get("disk"),
        },
        "router": status.get("router"),
        "recent": recent(source, now - HOUR),
    }


def _service_state(instances: list[dict[str, Any]]) -> str:
    if not instances:
        return "stopped"
    states = {str(i.get("state")) for i in instances}
    if states == {"ready"}:
        return "ready"
    if "failed" in states or "crashed" in states:
        return "degraded"
    return "starting" if "ready" not in states else "partly ready"


def recent(source: Source, since: float, service: str | None = None) -> list[dict[str, Any]]:
    """What happened since `since`: audit entries and acting decisions, newest first."""
    items: list[dict[str, Any]] = [
        {"t": e.at, "who": e.who, "what": e.what, "target": e.target, "result": e.result}
        for e in source.audit.entries(since=since, service=service, limit=50)
    ]
    log = source.decisions()
    if log is not None:
        for d in log.read(service=service, since=since, limit=50, outcomes=ACTED):
            items.append(
                {
                    "t": d["t"],
                    "who": f"rule {d['rule']}",
                    "what": d["outcome"],
                    "target": d["service"],
                    "result": d["reason"],
                }
            )
    items.sort(key=lambda item: item["t"], reverse=True)
    return items[:50]


def service(source: Source, series: Series, name: str, now: float) -> dict[str, Any] | None:
    spec = source.stack.services_for(source.env).get(name)
    if spec is None:
        return None
    status = _status(source)
    history = series.hour(name, now)
    thresholds = _thresholds(source, name)
    firings = _firings(source, name, now - HOUR)
    charts = []
    for key, title, unit in CHART_KEYS:
        points = history.get(key, [])
        charts.append(
            {
                "key": key,
                "title": title,
                "unit": unit,
                "since": now - HOUR,
                "until": now,
                "t": [t for t, _ in points],
                "v": [v for _, v in points],
                "thresholds": thresholds.get(key, []),
                "firings": [f for f in firings if key in f["keys"]],
            }
        )
    runs = [r for r in source.deploys() if r.get("service") == name]
    return {
        "name": name,
        "wanted": spec.instances,
        "instances": _instances(status, name),
        "releases": [
            {
                "version": r.get("version"),
                "kind": r.get("kind"),
                "state": r.get("state"),
                "who": r.get("who"),
                "created": r.get("created"),
            }
            for r in reversed(runs)
        ],
        "charts": charts,
        "recent": recent(source, now - HOUR, name),
    }


def _thresholds(source: Source, name: str) -> dict[str, list[dict[str, Any]]]:
    engine = source.engine()
    found: dict[str, list[dict[str, Any]]] = {}
    if engine is None:
        return found
    services = list(source.stack.services_for(source.env))
    for rule in engine.rules:
        if name not in rule.candidates(services):
            continue
        for test in rule.tests:
            if test.threshold is None or test.service not in (None, name):
                continue
            found.setdefault(test.key, []).append(
                {"rule": rule.id, "value": test.threshold, "op": test.op, "test": test.text}
            )
    return found


def _firings(source: Source, name: str, since: float) -> list[dict[str, Any]]:
    log, engine = source.decisions(), source.engine()
    if log is None:
        return []
    keys: dict[str, list[str]] = {}
    if engine is not None:
        keys = {rule.id: [t.key for t in rule.tests] for rule in engine.rules}
    return [
        {"t": d["t"], "rule": d["rule"], "outcome": d["outcome"], "keys": keys.get(d["rule"], [])}
        for d in log.read(service=name, since=since, limit=200, outcomes=("fired", "would fire"))
    ]


def rules(source: Source, now: float, filters: Mapping[str, str]) -> dict[str, Any]:
    engine = source.engine()
    groups: list[dict[str, Any]] = []
    names = list(source.stack.services_for(source.env))
    if engine is not None:
        for rule in engine.rules:
            paused = engine.paused_all or rule.id in engine.paused
            thresholds = [_threshold(test) for test in rule.tests]
            rows = [
                _rule_row(engine, rule, name, thresholds, paused, now)
                for name in rule.candidates(names)
            ]
            groups.append(
                {
                    "rule": rule.id,
                    "text": rule.text,
                    "paused": paused,
                    "rows": rows,
                    "for_": rule.for_,
                }
            )
    log = source.decisions()
    wanted = [o for o in filters.get("outcome", "").split(",") if o]
    decisions = []
    if log is not None:
        decisions = log.read(
            rule=filters.get("rule") or None,
            service=filters.get("service") or None,
            outcomes=wanted or None,
            limit=200,
        )
        decisions.reverse()
    return {
        "groups": groups,
        "paused_all": bool(engine is not None and engine.paused_all),
        "decisions": decisions,
        "filters": {k: filters.get(k, "") for k in ("rule", "service", "outcome")},
        "rule_ids": [] if engine is None else [r.id for r in engine.rules],
        "services": names,
        "outcomes": [
            "fired",
            "would fire",
            "pending",
            "skipped",
            "no data",
            "cleared",
            "done",
            "failed",
        ],
        "started": engine is not None,
    }


def _threshold(test: Test) -> str:
    if test.op is None or test.threshold is None:
        return ""
    unit = test.unit if test.unit is not Type.NUMBER else signal_unit(test.signal)
    return f"{test.op} {show_value(test.threshold, unit)}"


def _rule_row(
    engine: Engine,
    rule: CompiledRule,
    service: str,
    thresholds: list[str],
    paused: bool,
    now: float,
) -> dict[str, Any]:
    """One rule x service row, its figures ready to print (a page may hold a thousand):
    what `sqlifier rules explain` says of them, read from the engine's state."""
    st = engine.states.get((rule.id, service))
    if st is None:
        state, note, values, since = "inactive", "not evaluated yet", {}, None
    else:
        state = State.PAUSED.value if paused else st.state.value
        note = st.note or values_text(rule, st)
        values, since = st.values, st.pending_since
        if st.state is State.PENDING and since is not None:
            note += f"; fires at {clock(since + rule.for_)} if it holds"
    row: dict[str, Any] = {
        "service": service,
        "rule": rule.id,
        "state": state,
        "css": "state-" + state.replace(" ", "-"),
        "note": note,
        "tests": [
            (test.text, shown(test, values.get(test.index)), threshold)
            for test, threshold in zip(rule.tests, thresholds, strict=True)
        ],
        "progress": None,
    }
    if rule.for_ > 0:
        held = 0.0 if since is None else max(0.0, now - float(since))
        progress = 1.0 if state == "firing" else min(1.0, held / rule.for_)
        row["progress"] = f"{progress:.3f}"
        row["pct"] = round(progress * 100)
        row["held"] = f"{seconds_text(progress * rule.for_)} of {seconds_text(rule.for_)}"
        row["since"] = since if state == "pending" else None
    return row


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def deploys(source: Source, series: Series, now: float) -> dict[str, Any]:
    runs = source.deploys()
    live = [r for r in runs if not r.get("done")]
    ended = [r for r in runs if r.get("done")]
    ended.reverse()
    shown_live = []
    for run in live:
        history = series.hour(str(run.get("service")), now)
        since = float(run.get("created") or now - HOUR)
        charts = []
        for key, title in (("error_rate", "Error rate"), ("latency_p99", "Latency p99")):
            charts.append(
                {
                    "key": key,
                    "title": f"{title}: canary against stable",
                    "unit": "%" if key == "error_rate" else "s",
                    "since": since,
                    "until": now,
                    **_tracks(history, key, since),
                }
            )
        shown_live.append({**run, "charts": charts})
    return {"live": shown_live, "ended": ended[:50]}


def _tracks(
    history: Mapping[str, list[tuple[float, float]]], key: str, since: float
) -> dict[str, Any]:
    stable = {t: v for t, v in history.get(f"{key}.stable", []) if t >= since - STEP}
    canary = {t: v for t, v in history.get(f"{key}.canary", []) if t >= since - STEP}
    times = sorted(stable.keys() | canary.keys())
    return {
        "t": times,
        "stable": [stable.get(t) for t in times],
        "canary": [canary.get(t) for t in times],
    }


def audit(source: Source, limit: int = 200) -> dict[str, Any]:
    result = source.audit.verify()
    entries = source.audit.entries(limit=limit)
    entries.reverse()
    return {
        "verify": {
            "ok": result.ok,
            "entries": result.entries,
            "problem": result.problem,
            "at_id": result.at_id,
        },
        "entries": [
            {
                "id": e.id,
                "t": e.at,
                "who": e.who,
                "what": e.what,
                "target": e.target,
                "result": e.result,
                "why": e.why,
            }
            for e in entries
        ],
    }


WEEK = 7 * 86400.0


def dora(source: Source, now: float, weeks: int = 8) -> dict[str, Any]:
    events = read_events(source.audit.entries())
    current = compute(events, now - 30 * 86400, now, source.env)
    trend = []
    for back in range(weeks - 1, -1, -1):
        until = now - back * WEEK
        week = compute(events, until - WEEK, until, source.env)
        trend.append({"until": until, **{m.name: m.value for m in week.metrics}})
    return {
        "metrics": [
            {
                "name": m.name,
                "value": _number(m.value),
                "unit": m.unit,
                "tier": m.tier,
                "how": m.how,
            }
            for m in current.metrics
        ],
        "trend": trend,
        "names": [m.name for m in current.metrics],
    }


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "no data"
    return f"{value:.3g}"


def fingerprint(source: Source, now: float) -> tuple[Any, ...]:
    """What changes when a page would: compared four times a second while someone
    watches. (A pending rule's FOR bar fills in the browser, from its start.)"""
    status = source.status()
    instances = tuple(
        (i.get("instance"), i.get("state"), i.get("release"), i.get("track"), i.get("weight"))
        for i in status.get("instances", [])
        if isinstance(i, dict)
    )
    engine = source.engine()
    rules: tuple[Any, ...] = ()
    if engine is not None:
        rules = (
            engine.paused_all,
            tuple(sorted(engine.paused)),
            tuple(
                (key, st.state.value, st.pending_since, st.last_fired, tuple(st.values.items()))
                for key, st in engine.states.items()
            ),
        )
    runs = tuple(
        (r.get("id"), r.get("state"), r.get("step"), r.get("weight"), len(r.get("lines", [])))
        for r in source.deploys()
    )
    return (
        status.get("phase"),
        instances,
        rules,
        runs,
        int(now // STEP),
        _audit_count(source),
    )


def _audit_count(source: Source) -> int:
    last = source.audit.entries(limit=1)
    return last[0].id if last else 0
