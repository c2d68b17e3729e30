"""DORA figures from the audit log: histories written with `deploy_event` into a real
AuditLog in tmp_path, read back with `read_events`, and figures worked out by hand."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from sqlifier.delivery.dora import (
    CHANGE_FAILURE_RATE,
    DEPLOYMENT_FREQUENCY,
    LEAD_TIME,
    RECOVERY_TIME,
    Dora,
    _tier,
    compute,
)
from sqlifier.delivery.events import (
    DEPLOY_START,
    ROLLBACK,
    ROLLBACK_COMPLETE,
    ROLLOUT_ABORT,
    ROLLOUT_COMPLETE,
    ROLLOUT_STEP,
    DeployEvent,
    deploy_event,
    read_events,
)
from sqlifier.store.audit import AuditLog

H = 3600.0
D = 24 * H
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SINCE, UNTIL = T0, T0 + 14 * D


def at(day: int, hour: int, minute: int = 0) -> float:
    return T0 + day * D + hour * H + minute * 60


class History:
    """An audit log in tmp_path whose clock the script sets before each event."""

    def __init__(self, path: Path) -> None:
        self.now = T0
        self.audit = AuditLog(path, clock=lambda: self.now)

    def event(
        self, when: float, what: str, version: str, service: str = "web", **fields: Any
    ) -> None:
        self.now = when
        fields.setdefault("env", "production")
        deploy_event(
            self.audit, what, who="alice", stack="shop", service=service, version=version, **fields
        )

    def events(self) -> list[DeployEvent]:
        return read_events(AuditLog(self.audit.path).entries())


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "production" / "audit.db")


def script(h: History) -> None:
    """Two weeks of production deploys: web v1-v6 and api v7 (days from T0, UTC)."""
    # Before the window: not counted anywhere.
    h.event(at(-3, 10), DEPLOY_START, "v0", commit_time=at(-3, 9), deploy_id="d0")
    h.event(at(-3, 10, 30), ROLLOUT_COMPLETE, "v0", commit_time=at(-3, 9), deploy_id="d0")
    # v1: committed 08:00, complete 10:30 -> lead time 2.5 h.
    h.event(at(1, 10), DEPLOY_START, "v1", commit="a1", commit_time=at(1, 8), deploy_id="d1")
    h.event(at(1, 10, 15), ROLLOUT_STEP, "v1", commit_time=at(1, 8), deploy_id="d1", weight=10)
    h.event(at(1, 10, 30), ROLLOUT_COMPLETE, "v1", commit_time=at(1, 8), deploy_id="d1")
    # v2: committed 09:00, complete 10:20 -> 1 h 20 min; rolled back to v1 at 14:20, 4 h
    # later (a failure), done at 14:32 -> recovery 12 min.
    h.event(at(3, 10), DEPLOY_START, "v2", commit_time=at(3, 9), deploy_id="d2")
    h.event(at(3, 10, 20), ROLLOUT_COMPLETE, "v2", commit_time=at(3, 9), deploy_id="d2")
    h.event(at(3, 14, 20), ROLLBACK, "v1", from_version="v2", deploy_id="r1", why="5xx")
    h.event(at(3, 14, 32), ROLLBACK_COMPLETE, "v1", from_version="v2", deploy_id="r1")
    # v3: aborted at 09:15; first failing signal 09:10, traffic on stable at 09:11 -> 1 min.
    h.event(at(5, 9), DEPLOY_START, "v3", commit_time=at(5, 8), deploy_id="d3")
    h.event(
        at(5, 9, 15),
        ROLLOUT_ABORT,
        "v3",
        commit_time=at(5, 8),
        deploy_id="d3",
        detected_at=at(5, 9, 10),
        restored_at=at(5, 9, 11),
        why="canary error rate 4% vs 0.1%",
    )
    # v4: a release from a plain folder, no commit time: left out of the lead time.
    h.event(at(6, 11), DEPLOY_START, "v4", deploy_id="d4")
    h.event(at(6, 12), ROLLOUT_COMPLETE, "v4", deploy_id="d4")
    # v5: committed 06:00, complete 12:00 -> 6 h; rolled back 48 h later: not its failure.
    h.event(at(8, 11), DEPLOY_START, "v5", commit_time=at(8, 6), deploy_id="d5")
    h.event(at(8, 12), ROLLOUT_COMPLETE, "v5", commit_time=at(8, 6), deploy_id="d5")
    h.event(at(10, 12), ROLLBACK, "v4", from_version="v5", deploy_id="r2")
    h.event(at(10, 12, 30), ROLLBACK_COMPLETE, "v4", from_version="v5", deploy_id="r2")
    # v6: the commit time is only on its start; complete a day after the commit -> 24 h.
    # Its rollback was refused (the lock was held): not a rollback.
    h.event(at(12, 11), DEPLOY_START, "v6", commit_time=at(11, 12), deploy_id="d6")
    h.event(at(12, 12), ROLLOUT_COMPLETE, "v6", deploy_id="d6")
    h.event(at(12, 13), ROLLBACK, "v5", from_version="v6", result="refused: locked by bob")
    # api v7: committed 11:00, complete 12:00 -> lead time 1 h.
    h.event(at(2, 11), DEPLOY_START, "v7", service="api", commit_time=at(2, 11), deploy_id="d7")
    h.event(at(2, 12), ROLLOUT_COMPLETE, "v7", service="api", commit_time=at(2, 11))
    # Other environments and other entries do not count.
    h.event(at(4, 12), ROLLOUT_COMPLETE, "v1", env="staging", commit_time=at(1, 8))
    h.now = at(4, 13)
    h.audit.record("alice", "up", "shop/production", "ok")


def figures(dora: Dora) -> dict[str, tuple[float | None, str, str | None, str]]:
    return {m.name: (m.value, m.unit, m.tier, m.how) for m in dora.metrics}


def test_one_service_by_hand(history: History) -> None:
    script(history)
    dora = compute(history.events(), SINCE, UNTIL, "production", "web")
    m = figures(dora)
    # 5 rollouts completed (v1, v2, v4, v5, v6) in 14 days: 5 / 14 * 7 = 2.5 per week.
    # Weeks back from UNTIL: days 7-13 had deploys on days 8 and 12 (2), days 0-6 on days
    # 1, 3 and 6 (3): median 2.5 days, short of elite's 3; at least monthly: high.
    assert m[DEPLOYMENT_FREQUENCY] == (
        2.5,
        "per week",
        "high",
        "5 rollouts completed in 14 days: 2.5 per week, with deploys on 2.5 days in the"
        " median week (of 2)",
    )
    # Lead times 1.33 h (v2), 2.5 h (v1), 6 h (v5), 24 h (v6); v4 has none.
    # Median (2.5 + 6) / 2 = 4.25 h: between 1 h and a week, high.
    assert m[LEAD_TIME] == (
        4.25,
        "hours",
        "high",
        "median over 4 completed rollouts of commit to rollout complete: 4.25 h;"
        " 1 without a known commit time left out",
    )
    # 6 deployments reached an outcome (5 complete, v3 aborted); failed: v3 and v2 (rolled
    # back 4 h after completing). 2 / 6 = 33.3%: above 30%, low.
    assert m[CHANGE_FAILURE_RATE] == (
        pytest.approx(100 / 3),
        "%",
        "low",
        "2 of 6 deployments failed (1 aborted, 1 rolled back within 24 h of completing): 33.3%",
    )
    # v3: 60 s (09:10 -> 09:11), v2: 720 s (14:20 -> 14:32). Median 390 s = 6.5 min =
    # 0.1083 h: under an hour, elite.
    assert m[RECOVERY_TIME] == (
        pytest.approx(390 / 3600),
        "hours",
        "elite",
        "median over 2 failed deployments of first failing signal to back on a good"
        " release: 6.5 min",
    )
    assert (dora.since, dora.until, dora.env, dora.service) == (SINCE, UNTIL, "production", "web")


def test_all_services_by_hand(history: History) -> None:
    script(history)
    m = figures(compute(history.events(), SINCE, UNTIL, "production"))
    # web's 5 rollouts and api's v7: 6 / 14 * 7 = 3 per week. Days 0-6 had deploys on days
    # 1, 2, 3 and 6 (4), days 7-13 on 2: median 3 days, elite.
    assert m[DEPLOYMENT_FREQUENCY][:3] == (3.0, "per week", "elite")
    assert m[DEPLOYMENT_FREQUENCY][3].endswith("with deploys on 3 days in the median week (of 2)")
    # Lead times 1, 1.33, 2.5, 6, 24 h: median 2.5 h, high.
    assert m[LEAD_TIME][:3] == (2.5, "hours", "high")
    assert m[LEAD_TIME][3].startswith("median over 5 completed rollouts")
    # 2 failures of 7 deployments: 28.6%, within 30%: high.
    assert m[CHANGE_FAILURE_RATE][:3] == (pytest.approx(200 / 7), "%", "high")
    assert m[CHANGE_FAILURE_RATE][3].startswith("2 of 7 deployments failed")
    # api had no failure: the same two recoveries as web's.
    assert m[RECOVERY_TIME][:3] == (pytest.approx(390 / 3600), "hours", "elite")


def test_a_service_without_failures(history: History) -> None:
    script(history)
    m = figures(compute(history.events(), SINCE, UNTIL, "production", "api"))
    # 1 rollout in 14 days = 0.5 per week, on 1 day in one week and none in the other.
    assert m[DEPLOYMENT_FREQUENCY][:3] == (0.5, "per week", "high")
    # Exactly one hour is not under an hour.
    assert m[LEAD_TIME][:3] == (1.0, "hours", "high")
    assert m[CHANGE_FAILURE_RATE] == (
        0.0,
        "%",
        "elite",
        "0 of 1 deployment failed (0 aborted, 0 rolled back within 24 h of completing): 0%",
    )
    assert m[RECOVERY_TIME] == (None, "hours", None, "no failed deployment in the window")


def test_other_environments_are_apart(history: History) -> None:
    script(history)
    m = figures(compute(history.events(), SINCE, UNTIL, "staging"))
    assert m[DEPLOYMENT_FREQUENCY][0] == 0.5
    assert m[LEAD_TIME][0] == pytest.approx((at(4, 12) - at(1, 8)) / H)


def test_empty_history_has_no_figures() -> None:
    m = figures(compute([], SINCE, UNTIL, "production", "web"))
    assert m == {
        DEPLOYMENT_FREQUENCY: (None, "per week", None, "no deploy of web to production recorded"),
        LEAD_TIME: (None, "hours", None, "no rollout completed in the window"),
        CHANGE_FAILURE_RATE: (
            None,
            "%",
            None,
            "no deployment completed or aborted in the window",
        ),
        RECOVERY_TIME: (None, "hours", None, "no failed deployment in the window"),
    }


def test_no_rollout_in_the_window_is_a_frequency_of_zero(history: History) -> None:
    history.event(at(-3, 10, 30), ROLLOUT_COMPLETE, "v0")
    m = figures(compute(history.events(), SINCE, UNTIL, "production"))
    assert m[DEPLOYMENT_FREQUENCY] == (
        0.0,
        "per week",
        "low",
        "0 rollouts completed in 14 days: 0 per week, with deploys on 0 days in the median"
        " week (of 2)",
    )
    assert m[LEAD_TIME][0] is None


def test_a_rollback_just_after_the_window_fails_its_deployment(history: History) -> None:
    history.event(at(13, 23), ROLLOUT_COMPLETE, "v1")
    history.event(at(14, 1), ROLLBACK, "v0", from_version="v1")
    m = figures(compute(history.events(), SINCE, UNTIL, "production"))
    assert m[CHANGE_FAILURE_RATE][0] == 100.0
    # The rollback has no ROLLBACK_COMPLETE yet: its recovery is unknown.
    assert m[RECOVERY_TIME] == (
        None,
        "hours",
        None,
        "no recovery recorded for the 1 failed deployment",
    )


def test_a_rollback_is_held_against_the_latest_rollout_of_its_release(history: History) -> None:
    # v1 rolled out twice; rolled back 30 h after the first, 6 h after the second.
    history.event(at(1, 0), ROLLOUT_COMPLETE, "v1")
    history.event(at(2, 0), ROLLOUT_COMPLETE, "v1")
    history.event(at(2, 6), ROLLBACK, "v0", from_version="v1", deploy_id="r")
    history.event(at(2, 7), ROLLBACK_COMPLETE, "v0", deploy_id="other")
    history.event(at(2, 8), ROLLBACK_COMPLETE, "v0", deploy_id="r")
    m = figures(compute(history.events(), SINCE, UNTIL, "production"))
    assert m[CHANGE_FAILURE_RATE][3].startswith("1 of 2 deployments failed")
    # Completed by the entry with its deploy id: 2 h.
    assert m[RECOVERY_TIME][:3] == (2.0, "hours", "high")


def test_an_abort_without_times_recovers_at_once(history: History) -> None:
    history.event(at(1, 0), ROLLOUT_ABORT, "v1", result="failed: stable did not answer")
    m = figures(compute(history.events(), SINCE, UNTIL, "production"))
    assert m[CHANGE_FAILURE_RATE][:3] == (100.0, "%", "low")
    assert m[RECOVERY_TIME][0] == 0.0
    assert m[RECOVERY_TIME][3].endswith(": 0 s")


def test_recovery_leaves_out_failures_without_an_end(history: History) -> None:
    history.event(at(1, 0), ROLLOUT_ABORT, "v1", detected_at=at(0, 23, 30))  # 30 min
    history.event(at(2, 0), ROLLOUT_COMPLETE, "v2")
    history.event(at(2, 1), ROLLBACK, "v1", from_version="v2")  # never completed
    m = figures(compute(history.events(), SINCE, UNTIL, "production"))
    assert m[RECOVERY_TIME] == (
        0.5,
        "hours",
        "elite",
        "median over 1 failed deployment of first failing signal to back on a good release:"
        " 30 min; 1 without a recorded recovery left out",
    )


def test_to_json(history: History) -> None:
    script(history)
    data = json.loads(json.dumps(compute(history.events(), SINCE, UNTIL, "production").to_json()))
    assert {k: data[k] for k in ("since", "until", "env", "service")} == {
        "since": SINCE,
        "until": UNTIL,
        "env": "production",
        "service": None,
    }
    assert [m["name"] for m in data["metrics"]] == [
        DEPLOYMENT_FREQUENCY,
        LEAD_TIME,
        CHANGE_FAILURE_RATE,
        RECOVERY_TIME,
    ]
    assert data["metrics"][0] == {
        "name": DEPLOYMENT_FREQUENCY,
        "value": 3.0,
        "unit": "per week",
        "tier": "elite",
        "how": "6 rollouts completed in 14 days: 3 per week, with deploys on 3 days in the"
        " median week (of 2)",
    }


def test_a_window_must_not_end_before_it_starts() -> None:
    with pytest.raises(ValueError, match="ends"):
        compute([], UNTIL, SINCE, "production")


@pytest.mark.parametrize(
    ("name", "measures", "tier"),
    [
        (DEPLOYMENT_FREQUENCY, {"deploy days in the median week": 3, "per week": 3}, "elite"),
        (DEPLOYMENT_FREQUENCY, {"deploy days in the median week": 2.5, "per week": 7}, "high"),
        # once a month (730 h): 168 / 730 per week
        (
            DEPLOYMENT_FREQUENCY,
            {"deploy days in the median week": 0, "per week": 168 / 730},
            "high",
        ),
        (DEPLOYMENT_FREQUENCY, {"deploy days in the median week": 0, "per week": 0.2}, "medium"),
        (
            DEPLOYMENT_FREQUENCY,
            {"deploy days in the median week": 0, "per week": 168 / 4380},
            "medium",
        ),
        (DEPLOYMENT_FREQUENCY, {"deploy days in the median week": 0, "per week": 0.03}, "low"),
        (LEAD_TIME, {"hours": 0.99}, "elite"),
        (LEAD_TIME, {"hours": 1}, "high"),
        (LEAD_TIME, {"hours": 168}, "high"),
        (LEAD_TIME, {"hours": 169}, "medium"),
        (LEAD_TIME, {"hours": 4380}, "medium"),
        (LEAD_TIME, {"hours": 4381}, "low"),
        (CHANGE_FAILURE_RATE, {"%": 0}, "elite"),
        (CHANGE_FAILURE_RATE, {"%": 15}, "elite"),
        (CHANGE_FAILURE_RATE, {"%": 16}, "high"),
        (CHANGE_FAILURE_RATE, {"%": 30}, "high"),
        (CHANGE_FAILURE_RATE, {"%": 31}, "low"),
        (RECOVERY_TIME, {"hours": 0.99}, "elite"),
        (RECOVERY_TIME, {"hours": 1}, "high"),
        (RECOVERY_TIME, {"hours": 24}, "medium"),
        (RECOVERY_TIME, {"hours": 168}, "medium"),
        (RECOVERY_TIME, {"hours": 169}, "low"),
    ],
)
def test_tiers(name: str, measures: dict[str, float], tier: str) -> None:
    assert _tier(name, measures) == tier


# --- the event vocabulary ----------------------------------------------------------------


def test_deploy_event_records_the_contract(history: History) -> None:
    history.now = at(1, 0)
    entry = deploy_event(
        history.audit,
        ROLLBACK,
        who="bob",
        stack="shop",
        env="production",
        service="web",
        version="v1",
        why="5xx after deploy",
        commit="abc",
        commit_time=at(0, 0),
        deploy_id="r1",
        from_version="v2",
    )
    assert (entry.what, entry.target, entry.service, entry.result, entry.why) == (
        "rollback",
        "shop/production/web v1",
        "web",
        "ok",
        "5xx after deploy",
    )
    assert entry.details == {
        "version": "v1",
        "commit": "abc",
        "commit_time": at(0, 0),
        "deploy_id": "r1",
        "from_version": "v2",
    }
    [event] = history.events()
    assert (event.stack, event.env, event.service, event.version, event.from_version) == (
        "shop",
        "production",
        "web",
        "v1",
        "v2",
    )
    assert (event.commit, event.commit_time, event.deploy_id, event.ok) == (
        "abc",
        at(0, 0),
        "r1",
        True,
    )


def test_deploy_event_refuses_other_words(history: History) -> None:
    with pytest.raises(ValueError, match="'deployed' is not a deploy event"):
        deploy_event(
            history.audit, "deployed", who="a", stack="s", env="e", service="web", version="v"
        )


def test_read_events_skips_other_entries(history: History) -> None:
    history.audit.record("alice", "up", "shop/production", "ok")
    history.audit.record("alice", ROLLOUT_COMPLETE, "shop/production", "ok")  # no release
    history.audit.record("alice", "traffic", "shop/production/web v1", "ok")
    assert history.events() == []


def test_malformed_details_are_tolerated(history: History) -> None:
    history.now = at(1, 0)
    bad = {"commit_time": "yesterday", "deploy_id": 7, "detected_at": float("nan"), "commit": ""}
    history.audit.record("alice", ROLLOUT_ABORT, "shop/production/web v1", "ok", details=bad)
    history.now = at(1, 1)
    history.audit.record("alice", ROLLOUT_COMPLETE, "shop/production/web v2", "ok")  # no details
    history.now = at(1, 2)
    history.audit.record(
        "alice", ROLLBACK, "shop/production/web v1", "ok", details={"from_version": ["v2"]}
    )
    # Details that are not an object, written by something other than sqlifier.
    with closing(sqlite3.connect(history.audit.path)) as db, db:
        db.execute(
            "INSERT INTO audit (at, who, what, target, result, details)"
            " VALUES (?, 'x', ?, 'shop/production/web v3', 'ok', '[1, 2]')",
            (at(1, 3), ROLLOUT_COMPLETE),
        )
    events = history.events()
    assert [(e.version, e.commit, e.commit_time, e.deploy_id, e.detected_at) for e in events] == [
        ("v1", None, None, None, None),
        ("v2", None, None, None, None),
        ("v1", None, None, None, None),
        ("v3", None, None, None, None),
    ]
    assert events[2].from_version is None
    assert events[3].details == {}
    m = figures(compute(events, SINCE, UNTIL, "production"))
    # v1 aborted, v2 and v3 complete; the rollback names no release it rolled back from.
    assert m[CHANGE_FAILURE_RATE][3].startswith("1 of 3 deployments failed (1 aborted, 0 rolled")
    assert m[LEAD_TIME] == (
        None,
        "hours",
        None,
        "no known commit time for the 2 completed rollouts",
    )
    assert m[RECOVERY_TIME][0] == 0.0  # the abort's own time stands in for both ends
