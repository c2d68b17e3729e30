"""DORA's four keys for one environment, computed from the deploy events of the audit log.

The definitions are those of ANCHORS.md, section "DORA": deployment frequency, lead time for
changes (commit → running in production), change failure rate (deployments needing a
rollback or hotfix) and failed deployment recovery time; medians, as Google's fourkeys
computes them (over 3 months there: `DEFAULT_WINDOW`). Here, from the events of
`events.py`:

- **deployment frequency**: rollouts completed (ROLLOUT_COMPLETE) in the window, per week;
- **lead time for changes**: the median, over those rollouts, of rollout complete - the
  release's commit time; releases without a commit time are left out, and counted;
- **change failure rate**: of the deployments that reached an outcome in the window
  (ROLLOUT_COMPLETE or ROLLOUT_ABORT), the share that failed: aborted, or rolled back
  (a ROLLBACK naming the release as `from_version`) within 24 h of completing — a rollback
  after that is not held against the deployment. A rollback just after the window still
  counts, when the events given include it;
- **failed deployment recovery time**: the median, over those failures, of the time from
  the first failing signal to traffic back on a good release: for an abort, `detected_at`
  to `restored_at` (the abort's time standing in for either), for a rollback, its ROLLBACK
  to its ROLLBACK_COMPLETE. A failure without a recorded end is left out, and counted.

Only steps carried out (`DeployEvent.ok`) count, except aborts: a rollout that was
aborted failed, whatever became of the abort. A figure without data is None, its tier
too, and its `how` says why.

Tiers (`TIERS`, one table): the elite bounds are ANCHORS.md's — deploys on demand, which
fourkeys reads as "daily": the median week has deploys on ≥ 3 days; lead time < 1 hour;
restores < 1 hour; change failure rate 0-15%. ANCHORS.md names the 2021 tiers but gives
only their elite bounds, so the others are the 2021 State of DevOps report's:

    deployment frequency   high: between once a week and once a month; medium: between
                           once a month and once every six months; low: less often
    lead time              high: one day to one week; medium: one month to six months;
                           low: more than six months
    time to restore        high: less than one day; medium: one day to one week;
                           low: more than six months
    change failure rate    high, medium and low alike: 16-30%

That table has gaps. `TIERS` keeps only each tier's bound on the worse side, and a figure
gets the best tier whose bound it meets: a lead time between 1 hour and 1 day is high,
between one week and one month medium; a restore between one week and six months is low; a
change failure rate of 16-30% is high (the best of the three tiers the report gives it),
above 30% low. A month is fourkeys' 730 hours.
ANCHORS.md's 2023 note (top performers' change failure rate ~5%) is no tier bound.
"""

from __future__ import annotations

import operator
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, Final, Literal

from sqlifier.delivery.events import (
    ROLLBACK,
    ROLLBACK_COMPLETE,
    ROLLOUT_ABORT,
    ROLLOUT_COMPLETE,
    DeployEvent,
)

__all__ = [
    "CHANGE_FAILURE_RATE",
    "DEFAULT_WINDOW",
    "DEPLOYMENT_FREQUENCY",
    "LEAD_TIME",
    "RECOVERY_TIME",
    "ROLLBACK_WINDOW",
    "TIERS",
    "Bound",
    "Dora",
    "Metric",
    "compute",
]

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY
MONTH = 730 * HOUR  # fourkeys' month
DEFAULT_WINDOW = 90 * DAY  # fourkeys' three months
ROLLBACK_WINDOW = DAY  # a rollback this soon after a rollout makes it a failed deployment

DEPLOYMENT_FREQUENCY = "deployment frequency"
LEAD_TIME = "lead time for changes"
CHANGE_FAILURE_RATE = "change failure rate"
RECOVERY_TIME = "failed deployment recovery time"

_PER_WEEK = "per week"
_DEPLOY_DAYS = "deploy days in the median week"
_HOURS = "hours"
_PERCENT = "%"

Op = Literal["<", "<=", ">", ">="]
_OPS: Final[Mapping[Op, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@dataclass(frozen=True, slots=True)
class Bound:
    """One tier's condition: the figure's `measure` compared with `limit` by `op`."""

    tier: str
    measure: str
    op: Op
    limit: float


# Best tier first: a figure gets the first whose bound it meets. See the module docstring
# for where each number comes from.
TIERS: Final[Mapping[str, tuple[Bound, ...]]] = MappingProxyType(
    {
        DEPLOYMENT_FREQUENCY: (
            Bound("elite", _DEPLOY_DAYS, ">=", 3),
            Bound("high", _PER_WEEK, ">=", WEEK / MONTH),  # once a month
            Bound("medium", _PER_WEEK, ">=", WEEK / (6 * MONTH)),  # once in six months
            Bound("low", _PER_WEEK, ">=", 0),
        ),
        LEAD_TIME: (
            Bound("elite", _HOURS, "<", 1),
            Bound("high", _HOURS, "<=", WEEK / HOUR),
            Bound("medium", _HOURS, "<=", 6 * MONTH / HOUR),
            Bound("low", _HOURS, ">", 6 * MONTH / HOUR),
        ),
        CHANGE_FAILURE_RATE: (
            Bound("elite", _PERCENT, "<=", 15),
            Bound("high", _PERCENT, "<=", 30),
            Bound("low", _PERCENT, ">", 30),
        ),
        RECOVERY_TIME: (
            Bound("elite", _HOURS, "<", 1),
            Bound("high", _HOURS, "<", DAY / HOUR),
            Bound("medium", _HOURS, "<=", WEEK / HOUR),
            Bound("low", _HOURS, ">", WEEK / HOUR),
        ),
    }
)


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    value: float | None  # None when there is no data
    unit: str
    tier: str | None  # "elite", "high", "medium", "low"; None when there is no data
    how: str  # one sentence: how it was computed, with the counts


@dataclass(frozen=True, slots=True)
class Dora:
    since: float
    until: float
    env: str
    service: str | None  # None: all services
    metrics: tuple[Metric, ...]

    def metric(self, name: str) -> Metric:
        """The metric called `name`; KeyError for another name."""
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "env": self.env,
            "service": self.service,
            "metrics": [asdict(metric) for metric in self.metrics],
        }


@dataclass(frozen=True, slots=True)
class _Failure:
    deployment: DeployEvent  # its abort, or its completion that was rolled back
    started: float  # the first failing signal
    restored: float | None  # back on a good release; None when not recorded


def compute(
    events: Sequence[DeployEvent],
    since: float,
    until: float,
    env: str,
    service: str | None = None,
) -> Dora:
    """The four keys for `env` (and `service`, else all services) from `since` to `until`."""
    if until <= since:
        raise ValueError(f"the window ends ({until}) before it starts ({since})")
    mine = sorted(
        (e for e in events if e.env == env and service in (None, e.service)),
        key=lambda e: (e.at, e.id),
    )
    outcomes = [
        e
        for e in mine
        if since <= e.at < until
        and (e.what == ROLLOUT_ABORT or (e.what == ROLLOUT_COMPLETE and e.ok))
    ]
    completed = [e for e in outcomes if e.what == ROLLOUT_COMPLETE]
    failures = _failures(mine, outcomes)
    metrics = (
        _frequency(completed, since, until, _nothing_deployed(mine, env, service)),
        _lead_time(completed, mine),
        _failure_rate(outcomes, failures),
        _recovery_time(failures),
    )
    return Dora(since, until, env, service, metrics)


# --- the four keys -----------------------------------------------------------------------


def _frequency(
    completed: Sequence[DeployEvent], since: float, until: float, no_data: str | None
) -> Metric:
    if no_data is not None:
        return Metric(DEPLOYMENT_FREQUENCY, None, _PER_WEEK, None, no_data)
    per_week = len(completed) / (until - since) * WEEK
    weeks = _deploy_days([e.at for e in completed], since, until)
    days = statistics.median(weeks)
    tier = _tier(DEPLOYMENT_FREQUENCY, {_PER_WEEK: per_week, _DEPLOY_DAYS: days})
    how = (
        f"{_count(len(completed), 'rollout')} completed in {_num((until - since) / DAY)} days:"
        f" {_num(per_week)} per week, with deploys on {_num(days)} days in the median week"
        f" (of {len(weeks)})"
    )
    return Metric(DEPLOYMENT_FREQUENCY, per_week, _PER_WEEK, tier, how)


def _lead_time(completed: Sequence[DeployEvent], events: Sequence[DeployEvent]) -> Metric:
    # A completion without the commit time may share its deploy id with a step that has it.
    by_deploy = {e.deploy_id: e.commit_time for e in events if e.commit_time is not None}
    hours = []
    for done in completed:
        commit_time = done.commit_time
        if commit_time is None and done.deploy_id is not None:
            commit_time = by_deploy.get(done.deploy_id)
        if commit_time is not None and commit_time <= done.at:
            hours.append((done.at - commit_time) / HOUR)
    missing = len(completed) - len(hours)
    if not completed:
        return Metric(LEAD_TIME, None, _HOURS, None, "no rollout completed in the window")
    if not hours:
        how = f"no known commit time for the {_count(missing, 'completed rollout')}"
        return Metric(LEAD_TIME, None, _HOURS, None, how)
    value = statistics.median(hours)
    how = (
        f"median over {_count(len(hours), 'completed rollout')} of commit to rollout complete:"
        f" {_duration(value * HOUR)}"
    )
    if missing:
        how += f"; {missing} without a known commit time left out"
    return Metric(LEAD_TIME, value, _HOURS, _tier(LEAD_TIME, {_HOURS: value}), how)


def _failure_rate(outcomes: Sequence[DeployEvent], failures: Sequence[_Failure]) -> Metric:
    if not outcomes:
        how = "no deployment completed or aborted in the window"
        return Metric(CHANGE_FAILURE_RATE, None, _PERCENT, None, how)
    aborted = sum(1 for f in failures if f.deployment.what == ROLLOUT_ABORT)
    rate = 100 * len(failures) / len(outcomes)
    how = (
        f"{len(failures)} of {_count(len(outcomes), 'deployment')} failed ({aborted} aborted,"
        f" {len(failures) - aborted} rolled back within 24 h of completing): {_num(rate)}%"
    )
    tier = _tier(CHANGE_FAILURE_RATE, {_PERCENT: rate})
    return Metric(CHANGE_FAILURE_RATE, rate, _PERCENT, tier, how)


def _recovery_time(failures: Sequence[_Failure]) -> Metric:
    seconds = [
        f.restored - f.started
        for f in failures
        if f.restored is not None and f.restored >= f.started
    ]
    unknown = len(failures) - len(seconds)
    if not failures:
        return Metric(RECOVERY_TIME, None, _HOURS, None, "no failed deployment in the window")
    if not seconds:
        how = f"no recovery recorded for the {_count(unknown, 'failed deployment')}"
        return Metric(RECOVERY_TIME, None, _HOURS, None, how)
    value = statistics.median(seconds) / HOUR
    how = (
        f"median over {_count(len(seconds), 'failed deployment')} of first failing signal"
        f" to back on a good release: {_duration(value * HOUR)}"
    )
    if unknown:
        how += f"; {unknown} without a recorded recovery left out"
    return Metric(RECOVERY_TIME, value, _HOURS, _tier(RECOVERY_TIME, {_HOURS: value}), how)


# --- failures ----------------------------------------------------------------------------


def _failures(events: Sequence[DeployEvent], outcomes: Sequence[DeployEvent]) -> list[_Failure]:
    rolled_back = _rolled_back(events)
    failures = []
    for outcome in outcomes:
        if outcome.what == ROLLOUT_ABORT:
            started = outcome.at if outcome.detected_at is None else outcome.detected_at
            restored = outcome.at if outcome.restored_at is None else outcome.restored_at
            failures.append(_Failure(outcome, started, restored))
        elif (rollback := rolled_back.get(outcome.id)) is not None:
            failures.append(_Failure(outcome, rollback.at, _rollback_end(rollback, events)))
    return failures


def _rolled_back(events: Sequence[DeployEvent]) -> dict[int, DeployEvent]:
    """Completions rolled back within ROLLBACK_WINDOW, by id: their first rollback. A
    rollback is held against the latest completion of the release it rolled back from."""
    latest: dict[tuple[str, str], DeployEvent] = {}
    found: dict[int, DeployEvent] = {}
    for event in events:
        if not event.ok:
            continue
        if event.what == ROLLOUT_COMPLETE:
            latest[event.service, event.version] = event
        elif event.what == ROLLBACK and event.from_version is not None:
            done = latest.get((event.service, event.from_version))
            if done is not None and event.at - done.at <= ROLLBACK_WINDOW:
                found.setdefault(done.id, event)
    return found


def _rollback_end(rollback: DeployEvent, events: Sequence[DeployEvent]) -> float | None:
    """When the rollback completed: its ROLLBACK_COMPLETE (the same deploy id when both
    have one), the first of the service's after it."""
    for event in events:
        if (
            event.what == ROLLBACK_COMPLETE
            and event.ok
            and event.service == rollback.service
            and (event.at, event.id) > (rollback.at, rollback.id)
            and (
                None in (event.deploy_id, rollback.deploy_id)
                or event.deploy_id == rollback.deploy_id
            )
        ):
            return event.at
    return None


# --- arithmetic and words ----------------------------------------------------------------


def _deploy_days(times: Sequence[float], since: float, until: float) -> list[int]:
    """For each week of the window, the number of days with a deploy. Weeks are counted
    back from `until`, whole ones only (the window is one week when shorter), and a day is
    24 hours counted back from the end of its week."""
    weeks = max(1, int((until - since) // WEEK))
    counts = []
    for week in range(weeks):
        end = until - week * WEEK
        start = max(since, end - WEEK)
        counts.append(len({(end - t) // DAY for t in times if start <= t < end}))
    return counts


def _nothing_deployed(events: Sequence[DeployEvent], env: str, service: str | None) -> str | None:
    if events:
        return None
    return (
        f"no deploy of {service} to {env} recorded" if service else f"no deploy to {env} recorded"
    )


def _tier(name: str, measures: Mapping[str, float]) -> str:
    bounds = TIERS[name]
    for bound in bounds:
        if _OPS[bound.op](measures[bound.measure], bound.limit):
            return bound.tier
    return bounds[-1].tier


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _num(x: float) -> str:
    """Three significant digits, without an exponent: 2.5, 33.3, 0.23, 168, 4380."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{_num(seconds)} s"
    if seconds < 2 * HOUR:
        return f"{_num(seconds / 60)} min"
    if seconds < 2 * DAY:
        return f"{_num(seconds / HOUR)} h"
    return f"{_num(seconds / DAY)} d"
