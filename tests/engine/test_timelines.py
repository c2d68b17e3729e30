"""The engine's semantics as timelines: samples in, actions out, with exact firing times.

Every case replays samples on the virtual clock of `sqlifier rules test` (ticks every
second, samples at t visible to the tick at t, actions complete at once).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlifier.engine.explain import explain_rule
from sqlifier.engine.machine import Settings, TickResult
from sqlifier.engine.replay import SIGNAL_COLUMNS, Replay, Sample, compile_rules
from sqlifier.lang import Source, check, parse_source
from sqlifier.lang.signals import LOG_LEVELS


def rules(text: str) -> list:  # type: ignore[type-arg]
    source = Source(text, "r.sql")
    parsed, diagnostics = parse_source(source)
    assert diagnostics == []
    assert [d for d in check([(source, parsed)], None) if d.is_error] == []
    return compile_rules([parsed])


def level(
    service: str, signal: str, value: float, start: int, end: int, every: int = 10
) -> list[Sample]:
    factor = SIGNAL_COLUMNS[signal][1]
    return [Sample(float(t), service, signal, value * factor) for t in range(start, end, every)]


def logs(service: str, level_name: str, times: list[int], text: str = "boom") -> list[Sample]:
    return [Sample(float(t), service, "log", float(LOG_LEVELS[level_name]), text) for t in times]


def run(
    text: str,
    samples: list[Sample],
    instances: dict[str, int] | None = None,
    until: float | None = None,
    settings: Settings | None = None,
) -> tuple[list[tuple[float, str, str]], Replay]:
    replay = Replay(
        rules(text), sorted(samples, key=lambda s: s.t), instances or {}, settings or Settings()
    )
    actions = replay.run(start=0.0, until=until)
    return [(a.t, a.action, a.detail) for a in actions], replay


SEED_SCALE = (
    "ON high_cpu(>80%) FOR 3m IF service.name = 'image-processor-svc' "
    "DO SCALE service.name TO instances + 2 LIMIT 20;"
)
SEED_ROLLBACK = (
    "ON log_error(level='critical', service='payment-gateway') > 10 FOR 1m "
    "DO ROLLBACK service 'payment-gateway' TO previous_stable;"
)
IPS = "image-processor-svc"
PG = "payment-gateway"


def test_sustained_cpu_scales_when_for_elapses_and_again_after_another_full_for() -> None:
    actions, _ = run(SEED_SCALE, level(IPS, "cpu", 90, 0, 400), {IPS: 2}, until=400)
    assert actions == [(180.0, "SCALE", "2 -> 4"), (360.0, "SCALE", "4 -> 6")]


def test_an_interruption_restarts_the_for_window() -> None:
    samples = (
        level(IPS, "cpu", 90, 0, 100)
        + level(IPS, "cpu", 50, 100, 110)
        + level(IPS, "cpu", 90, 110, 400)
    )
    actions, _ = run(SEED_SCALE, samples, {IPS: 2}, until=300)
    assert actions == [(290.0, "SCALE", "2 -> 4")]


def test_the_if_condition_limits_the_rule_to_one_service() -> None:
    samples = level(IPS, "cpu", 90, 0, 400) + level("storefront", "cpu", 99, 0, 400)
    actions, replay = run(SEED_SCALE, samples, {IPS: 2, "storefront": 2}, until=200)
    assert actions == [(180.0, "SCALE", "2 -> 4")]
    assert all(a.service == IPS for a in replay.actions)


def test_limit_caps_growth_then_refuses_to_grow_past_it() -> None:
    actions, replay = run(SEED_SCALE, level(IPS, "cpu", 90, 0, 400), {IPS: 19}, until=400)
    assert actions == [(180.0, "SCALE", "19 -> 20")]
    skipped = [d for d in replay.decisions if d.outcome == "skipped" and d.action == "SCALE"]
    assert skipped and skipped[0].t == 360.0 and "LIMIT 20 reached" in skipped[0].reason


def test_limit_bounds_a_scale_down_from_below() -> None:
    text = "ON low_cpu(<20%) FOR 1m DO SCALE service.name TO instances - 1 LIMIT 2;"
    actions, replay = run(text, level("web", "cpu", 5, 0, 300), {"web": 4}, until=300)
    assert actions == [(60.0, "SCALE", "4 -> 3"), (120.0, "SCALE", "3 -> 2")]
    assert any("LIMIT 2 reached" in d.reason for d in replay.decisions if d.t == 180.0)


def test_limit_on_a_formula_that_overshoots_is_clamped_not_refused() -> None:
    text = "ON cpu() > 50% FOR 10s DO SCALE service.name TO instances * 10 LIMIT 7;"
    actions, _ = run(text, level("web", "cpu", 90, 0, 15, every=5), {"web": 2}, until=15)
    assert actions == [(10.0, "SCALE", "2 -> 7")]


def test_an_infinite_count_inside_ceil_is_skipped_and_said() -> None:
    text = "ON cpu() > 1% DO SCALE 'web' TO ceil(cpu() / 0.001%) LIMIT 10;"
    samples = [Sample(0.0, "web", "cpu", 1e308)]
    actions, replay = run(text, samples, {"web": 2}, until=1)
    assert actions == []
    skipped = [d for d in replay.decisions if d.outcome == "skipped" and d.action == "SCALE"]
    assert skipped and "the new count is not a number (inf)" in skipped[0].reason


def test_count_window_fires_on_the_eleventh_line_within_a_minute() -> None:
    samples = logs(PG, "critical", list(range(100, 111)))
    actions, _ = run(SEED_ROLLBACK, samples, {PG: 1}, until=200)
    assert actions == [(110.0, "ROLLBACK", "current -> previous_stable")]


def test_count_window_slides_so_old_lines_stop_counting() -> None:
    samples = logs(PG, "critical", list(range(10))) + logs(PG, "critical", [61, 62])
    actions, _ = run(SEED_ROLLBACK, samples, {PG: 1}, until=120)
    assert actions == []  # at t=61 the lines at t <= 1 have left the window: 10 in 60s


def test_only_the_named_level_counts() -> None:
    samples = logs(PG, "error", list(range(20))) + logs(PG, "critical", list(range(5)))
    actions, _ = run(SEED_ROLLBACK, samples, {PG: 1}, until=60)
    assert actions == []


def test_rollback_happens_once_then_records_why_and_notifies() -> None:
    samples = logs(PG, "critical", list(range(11))) + logs(PG, "critical", list(range(30, 45)))
    actions, replay = run(SEED_ROLLBACK, samples, {PG: 1}, until=100)
    assert actions[0] == (10.0, "ROLLBACK", "current -> previous_stable")
    assert [a[1] for a in actions[1:]] == ["NOTIFY"]
    assert actions[1][0] == 40.0  # 11 new lines after the window restarted at t=10
    assert "itself a rollback" in actions[1][2]
    skipped = [d for d in replay.decisions if d.outcome == "skipped" and d.action == "ROLLBACK"]
    assert len(skipped) == 1 and "never rolled back" in skipped[0].reason


def test_count_window_restarts_after_the_action() -> None:
    text = "ON log_error() > 2 FOR 1m DO RESTART service.name;"
    samples = logs("api", "error", [0, 1, 2, 3, 4])
    actions, _ = run(text, samples, {"api": 1}, until=60)
    # fires at t=2 (3 lines); the window restarts: lines 3 and 4 are only 2
    assert actions == [(2.0, "RESTART", "RESTART service.name")]


def test_cooldown_delays_the_next_window() -> None:
    text = "ON cpu() > 80% FOR 1m DO SCALE service.name TO instances + 1 COOLDOWN 2m;"
    actions, replay = run(text, level("web", "cpu", 95, 0, 400), {"web": 1}, until=400)
    # 60: fires; cooldown to 180; a new full minute: 240; cooldown to 360; ...
    assert actions == [(60.0, "SCALE", "1 -> 2"), (240.0, "SCALE", "2 -> 3")]
    assert any(d.outcome == "pending" and d.t == 180.0 for d in replay.decisions)


def test_no_data_never_fires_and_is_recorded() -> None:
    samples = level(IPS, "cpu", 90, 0, 101)  # the last sample at t=100, stale after t=130
    actions, replay = run(SEED_SCALE, samples, {IPS: 2}, until=400)
    assert actions == []
    no_data = [d for d in replay.decisions if d.reason.startswith("no data")]
    assert no_data and no_data[0].t == 131.0 and "high_cpu(>80%)" in no_data[0].reason


def test_a_gap_in_the_data_restarts_the_window() -> None:
    samples = level(IPS, "cpu", 90, 0, 101) + level(IPS, "cpu", 90, 200, 500)
    actions, _ = run(SEED_SCALE, samples, {IPS: 2}, until=500)
    assert actions == [(380.0, "SCALE", "2 -> 4")]


def test_the_action_budget_stops_runaway_rules_and_notifies_once() -> None:
    text = "ON cpu() > 50% DO SCALE service.name TO instances + 1;"
    actions, replay = run(text, level("web", "cpu", 90, 0, 40, every=5), {"web": 1}, until=40)
    scales = [a for a in actions if a[1] == "SCALE"]
    assert [a[0] for a in scales] == [float(t) for t in range(10)]
    notes = [a for a in actions if a[1] == "NOTIFY"]
    assert len(notes) == 1 and notes[0][0] == 10.0 and "budget" in notes[0][2]
    assert any(d.outcome == "skipped" and "budget" in d.reason for d in replay.decisions)


def test_budget_frees_up_as_the_window_slides() -> None:
    text = "ON cpu() > 50% DO SCALE service.name TO instances + 1;"
    settings = Settings(action_budget=2, action_window=60)
    actions, _ = run(
        text, level("web", "cpu", 90, 0, 100, every=5), {"web": 1}, until=70, settings=settings
    )
    assert [a[0] for a in actions if a[1] == "SCALE"] == [0.0, 1.0, 60.0, 61.0]


def test_when_two_rules_disagree_the_one_keeping_more_capacity_wins() -> None:
    text = (
        "RULE small ON cpu() > 50% FOR 10s DO SCALE service.name TO instances + 1;\n"
        "RULE big ON cpu() > 50% FOR 10s DO SCALE service.name TO instances + 3;\n"
    )
    actions, replay = run(text, level("web", "cpu", 90, 0, 15, every=5), {"web": 2}, until=10)
    assert actions == [(10.0, "SCALE", "2 -> 5")]
    assert replay.actions[0].rule == "big"
    lost = [d for d in replay.decisions if d.rule == "small" and d.outcome == "skipped"]
    assert lost and "rule big keeps more capacity" in lost[0].reason


def test_a_scale_down_waits_after_a_scale_up() -> None:
    text = (
        "RULE up ON cpu() > 50% FOR 10s DO SCALE service.name TO instances + 1 LIMIT 3;\n"
        "RULE down ON rps() < 5 FOR 20s DO SCALE service.name TO instances - 1 LIMIT 1;\n"
    )
    samples = level("web", "cpu", 90, 0, 12, every=2) + level("web", "rps", 1, 0, 400, every=5)
    actions, replay = run(text, samples, {"web": 2}, until=400)
    assert actions[0] == (10.0, "SCALE", "2 -> 3")
    downs = [a for a in actions if a[2] == "3 -> 2"]
    assert downs and downs[0][0] == 310.0
    assert any("waits 5m after the scale-up" in d.reason for d in replay.decisions)


def test_dry_run_records_and_does_nothing() -> None:
    text = "ON cpu() > 80% FOR 30s DO SCALE service.name TO instances + 1 DRY RUN;"
    actions, replay = run(text, level("web", "cpu", 90, 0, 100), {"web": 1}, until=70)
    assert actions == []
    would = [d for d in replay.decisions if d.outcome == "would fire"]
    assert [d.t for d in would] == [30.0, 60.0] and would[0].detail == "1 -> 2"


def test_and_needs_both_or_needs_either() -> None:
    both = "ON cpu() > 80% AND rps() > 100 FOR 20s DO RESTART service.name;"
    either = "ON cpu() > 80% OR rps() > 100 FOR 20s DO RESTART service.name;"
    samples = level("web", "cpu", 90, 0, 100, every=5) + level("web", "rps", 50, 0, 100, every=5)
    assert run(both, samples, {"web": 1}, until=60)[0] == []
    assert run(either, samples, {"web": 1}, until=30)[0] == [
        (20.0, "RESTART", "RESTART service.name")
    ]


def test_scale_expression_reads_signal_values() -> None:
    text = (
        "RULE autoscale ON cpu(service='shop') > 70% FOR 1m "
        "DO SCALE 'shop' TO max(ceil(instances * cpu() / 60%), 2) LIMIT 10;"
    )
    actions, _ = run(text, level("shop", "cpu", 90, 0, 100), {"shop": 4}, until=60)
    assert actions == [(60.0, "SCALE", "4 -> 6")]


def test_notify_fills_in_placeholders() -> None:
    text = "RULE slow ON latency(p99) > 300ms FOR 20s DO NOTIFY '{service.name} p99 is {value} ({rule})';"
    actions, _ = run(text, level("web", "latency_p99", 0.45, 0, 60, every=5), {"web": 1}, until=20)
    assert actions == [(20.0, "NOTIFY", "web p99 is 450ms (slow)")]


def test_a_rule_naming_a_service_that_is_not_there_records_no_data() -> None:
    text = "ON cpu(service='gone') > 80% DO RESTART 'gone';"
    actions, replay = run(text, level("web", "cpu", 90, 0, 30), {"web": 1}, until=20)
    assert actions == []
    assert any("service gone is not in the stack" in d.reason for d in replay.decisions)


def test_restarts_count_signal() -> None:
    text = "ON restarts() > 3 FOR 5m DO RESTART service.name, NOTIFY 'restarted';"
    samples = [Sample(float(t), "pay", "restart", 1.0, "pay-0") for t in (10, 50, 100, 290)]
    actions, _ = run(text, samples, {"pay": 1}, until=400)
    assert actions == [(290.0, "RESTART", "RESTART service.name"), (290.0, "NOTIFY", "restarted")]


@pytest.mark.parametrize("minute_offset", [0, 30])
def test_schedule_fires_once_in_a_matching_minute(minute_offset: int) -> None:
    text = "ON schedule('*/2 * * * *') DO NOTIFY 'tick';"
    samples = [Sample(0.0, "web", "rps", 1.0)]
    actions, _ = run(text, samples, {"web": 1}, until=299 + minute_offset)
    assert [a[0] for a in actions] == [0.0, 120.0, 240.0]


@pytest.mark.parametrize(
    ("day", "fires"),
    [
        (2, True),  # Friday 1970-01-02: the day of month matches
        (5, True),  # Monday 1970-01-05: the weekday matches
        (6, False),  # Tuesday 1970-01-06: neither
    ],
)
def test_schedule_fires_on_its_day_of_month_or_its_weekday(day: int, fires: bool) -> None:
    text = "ON schedule('0 12 2 * mon') DO NOTIFY 'noon';"
    noon = (day - 1) * 86400.0 + 12 * 3600
    replay = Replay(rules(text), [Sample(noon - 30, "web", "rps", 1.0)], {"web": 1}, Settings())
    actions = replay.run(start=noon - 30, until=noon + 30)
    assert [a.t for a in actions] == ([noon] if fires else [])


@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.sampled_from(["a", "b"]), st.integers(0, 100)),
        max_size=80,
    ),
    st.sampled_from(
        [
            "ON cpu() > 50% FOR 20s DO SCALE service.name TO instances + 1 LIMIT 4;",
            "ON low_cpu(<30%) FOR 10s DO SCALE service.name TO instances - 1 LIMIT 1 COOLDOWN 30s;",
            "ON cpu() > 60% DO NOTIFY 'hot' DRY RUN;",
        ]
    ),
)
@settings(max_examples=60, deadline=None)
def test_the_fast_path_decides_exactly_like_the_full_evaluation(
    points: list[tuple[int, str, int]], text: str
) -> None:
    samples = sorted(
        (Sample(float(t), service, "cpu", value / 100) for t, service, value in points),
        key=lambda s: s.t,
    )
    fast = Replay(rules(text), samples, {"a": 2, "b": 2})
    full = Replay([replace(r, simple=None) for r in rules(text)], samples, {"a": 2, "b": 2})
    assert fast.rules[0].simple is not None
    fast.run(start=0.0, until=320)
    full.run(start=0.0, until=320)
    assert fast.actions == full.actions
    assert fast.decisions == full.decisions


def explained(replay: Replay, rule: str, service: str, now: float) -> dict:  # type: ignore[type-arg]
    found = explain_rule(replay.engine, rule, service, now)
    assert found is not None
    return found


def test_explain_says_why_in_every_state() -> None:
    text = (
        "RULE hot ON cpu() > 80% FOR 30s DO SCALE service.name TO instances + 1 LIMIT 3 COOLDOWN 1m;\n"
        "RULE dry ON cpu() > 80% FOR 30s DO SCALE service.name TO instances + 1 DRY RUN;\n"
        "RULE gone ON cpu(service='gone') > 80% DO RESTART 'gone';\n"
        "RULE loop ON rps() > 1 DO RESTART service.name;\n"
    )
    samples = level("web", "cpu", 90, 0, 200, every=5) + level("api", "rps", 5, 0, 200, every=5)
    replay = Replay(rules(text), sorted(samples, key=lambda s: s.t), {"web": 1, "api": 1})

    replay.run(start=0.0, until=10)
    pending = explained(replay, "hot", "web", 10)
    assert pending["state"] == "pending"
    assert pending["note"] == "cpu() > 80%: 90%; fires at t=30s if it holds"
    assert pending["tests"][0]["held"] == "10s" and pending["tests"][0]["window"] == "30s"
    assert explained(replay, "gone", "gone", 10)["note"] == "service gone is not in the stack"
    budget = explained(replay, "loop", "api", 10)
    assert budget["state"] == "budget exhausted"
    assert budget["note"].startswith("action budget of api exhausted: 10 actions in the last 10m")

    replay.run(start=11.0, until=30)
    cooling = explained(replay, "hot", "web", 30)
    assert cooling["state"] == "cooldown" and cooling["note"] == "cooling down until t=90s"
    assert explained(replay, "dry", "web", 30)["state"] == "dry run"

    replay.engine.paused.add("hot")
    replay.run(start=31.0, until=125)
    paused = explained(replay, "hot", "web", 125)
    assert paused["state"] == "paused" and paused["note"] == "the rule is paused"
    replay.engine.paused.clear()

    quiet = Replay(rules(text), level("web", "cpu", 10, 0, 60, every=5), {"web": 1, "api": 1})
    quiet.run(start=0.0, until=20)
    assert explained(quiet, "hot", "web", 20)["state"] == "inactive"
    assert explained(quiet, "hot", "web", 20)["note"] == "cpu() > 80%: 10%"
    quiet.run(start=21.0, until=100)  # samples end at t=55: no data from t=86
    stale = explained(quiet, "hot", "web", 100)
    assert stale["state"] == "no data" and stale["note"] == "no data for cpu() > 80%"


def test_actions_on_one_service_are_serialized() -> None:
    text = (
        "RULE up ON cpu() > 50% FOR 5s DO SCALE service.name TO instances + 1;\n"
        "RULE bounce ON rps() > 10 FOR 7s DO RESTART service.name;\n"
    )
    samples = level("web", "cpu", 90, 0, 30, every=1) + level("web", "rps", 50, 0, 30, every=1)
    replay = Replay(rules(text), sorted(samples, key=lambda s: s.t), {"web": 1})
    engine = replay.engine

    def tick(t: float) -> TickResult:  # the replay's clock, driven by hand
        for sample in replay.samples:
            if t - 1 < sample.t <= t:
                replay._feed(sample)
        return engine.tick(t, replay, ["web"])

    scale = [c for t in range(6) for c in tick(float(t)).commands]
    assert [(c.rule, c.verb, c.detail) for c in scale] == [("up", "SCALE", "1 -> 2")]
    tick(6.0)
    # The SCALE is still running at t=7, when the other rule's FOR has elapsed.
    later = tick(7.0)
    assert later.commands == []
    skipped = [d for d in later.decisions if d.rule == "bounce"]
    assert skipped and skipped[0].reason == "skipped: lock on web held by rule up (SCALE 1 -> 2)"
    engine.complete(scale[0], 8.0, replay)
    after = tick(8.0)  # the lock is free: it acts at once
    assert [(c.rule, c.verb) for c in after.commands] == [("bounce", "RESTART")]
