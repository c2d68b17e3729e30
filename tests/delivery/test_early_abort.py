"""The early check: between the interval's verdicts, twice a second, a failure that is
already certain aborts the rollout at once, traffic first; anything less waits for the
verdict.

The statistics against brute force, the check on hand-made counters, timelines of the pure
machine in the virtual world (`rollout_world`), and a property on generated traffic: the
early check never aborts where the interval's verdict would pass.
"""

from __future__ import annotations

import math
import random
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sqlifier.delivery.analysis import (
    CERTAIN_ALPHA,
    CERTAIN_ERRORS,
    CERTAIN_MARGIN,
    analyse,
    binomial_tail,
    certain_failure,
)
from sqlifier.delivery.rollout import Phase, Rollout
from sqlifier.delivery.rollout.judging import EARLY_EVERY
from sqlifier.delivery.rollout.messages import Pause
from sqlifier.errors import DiagnosticsError
from sqlifier.router.metrics import Counters
from sqlifier.stack import load_stack
from sqlifier.stack.model import Service
from tests.delivery.rollout_world import Traffic, World, service
from tests.delivery.test_analysis import track

# --- the binomial tail ---------------------------------------------------------------------


def brute_tail(bad: int, n: int, rate: float) -> float:
    return sum(math.comb(n, k) * rate**k * (1 - rate) ** (n - k) for k in range(bad, n + 1))


@pytest.mark.parametrize(
    ("bad", "n", "rate"),
    [(3, 3, 0.05), (5, 10, 0.1), (8, 40, 0.05), (30, 200, 0.08), (1, 1, 0.5), (60, 100, 0.4)],
)
def test_the_binomial_tail_is_the_sum_of_its_terms(bad: int, n: int, rate: float) -> None:
    assert binomial_tail(bad, n, rate) == pytest.approx(brute_tail(bad, n, rate), rel=1e-9)


def test_the_binomial_tail_at_or_below_the_mean_is_no_evidence() -> None:
    assert binomial_tail(0, 10, 0.1) == 1.0
    assert binomial_tail(5, 100, 0.05) == 1.0  # exactly the mean
    assert binomial_tail(3, 3, 0.0) == 0.0  # a release that never fails shows no error
    # A million requests: summed from the observed count up, stopped once negligible.
    assert binomial_tail(60_000, 1_000_000, 0.05) < 1e-100
    with pytest.raises(ValueError, match="0 <= bad <= n"):
        binomial_tail(4, 3, 0.1)
    with pytest.raises(ValueError, match="between 0 and 1"):
        binomial_tail(1, 3, 1.5)


@given(st.integers(1, 60), st.data(), st.floats(0.001, 0.999))
def test_the_binomial_tail_matches_brute_force(n: int, data: st.DataObject, rate: float) -> None:
    bad = data.draw(st.integers(0, n))
    expected = brute_tail(bad, n, rate) if bad > n * rate else 1.0
    assert binomial_tail(bad, n, rate) == pytest.approx(expected, rel=1e-9, abs=1e-300)


# --- the check on counters -----------------------------------------------------------------


def test_three_errors_in_three_requests_against_a_healthy_stable_are_certain() -> None:
    verdict = certain_failure(track(3, 3), track(300, 0), ())
    assert verdict is not None and verdict.outcome == "fail"
    names = [c.name for c in verdict.checks if c.passed is False]
    assert names == ["error_rate vs stable (certain)", "beyond doubt"]
    doubt = verdict.checks[-1]
    assert doubt.value == "3 errors in 3 requests"
    # 0.05 ** 3 = 1.25e-4: a release failing 5% of its requests would show that rarely.
    assert "probability 0.00013" in doubt.detail
    assert verdict.canary_requests == 3 and verdict.stable_requests == 300


def test_fewer_errors_than_the_minimum_are_never_certain() -> None:
    assert CERTAIN_ERRORS == 3
    assert certain_failure(track(2, 2), track(300, 0), ()) is None


def test_a_one_percent_canary_against_003_percent_is_left_to_the_verdict() -> None:
    # The interval's verdict fails it (0.97 points higher, significant)...
    canary, stable = track(10_000, 100), track(1_000_000, 300)
    assert analyse(canary, stable, ()).outcome == "fail"
    # ...but it is no blatant failure: the early check leaves it to the verdict.
    assert certain_failure(canary, stable, ()) is None
    # Its worst start either: three errors, but in more than a handful of requests.
    assert certain_failure(track(40, 3), track(4_000, 1), ()) is None


def test_a_canary_as_bad_as_its_stable_track_is_not_certain() -> None:
    # The whole service fails a third of its requests: the canary is no worse.
    assert certain_failure(track(30, 10), track(3_000, 1_000), ()) is None


def test_without_a_stable_track_only_an_expression_can_make_it_certain() -> None:
    # At 100% no stable request: no comparison counts, so the verdict passes on the
    # request count; the early check must not fail it either.
    assert analyse(track(100, 100), Counters(), (), min_requests=50).outcome == "pass"
    assert certain_failure(track(20, 20), Counters(), ()) is None
    verdict = certain_failure(track(20, 20), Counters(), ("error_rate() < 5%",))
    assert verdict is not None
    assert [c.name for c in verdict.checks if c.passed is False] == [
        "error_rate() < 5% (certain)",
        "beyond doubt",
    ]
    assert "the bound of error_rate() < 5%, 5%" in verdict.checks[-1].detail
    # Against that bound, 10% of 20 at 10% is no blatant failure: the verdict decides.
    assert certain_failure(track(60, 6), Counters(), ("error_rate() < 5%",)) is None


def test_half_the_requests_failing_is_certain_within_a_dozen_requests() -> None:
    assert certain_failure(track(6, 3), track(600, 0), ()) is None  # 0.0022: not yet
    assert certain_failure(track(8, 4), track(800, 0), ()) is not None  # 0.00037


def test_past_min_requests_the_steps_own_checks_on_the_requests_so_far_decide() -> None:
    verdict = certain_failure(track(200, 100), track(20_000, 6), (), min_requests=50)
    assert verdict is not None
    failing = verdict.checks[1]
    assert failing.name == "error_rate vs stable (certain)"
    assert "only" not in failing.detail  # nothing padded: the requests are enough
    assert failing.value == "50% vs 0.03%"


# --- timelines -----------------------------------------------------------------------------

STEPS = (1.0, 10.0, 50.0, 100.0)


def rollout(spec: Service) -> Rollout:
    return Rollout("web", "v2", "v1", "alice", spec)


def first_error(world: World) -> float:
    """When the canary answered its first 5xx: the traffic flows evenly from the share's
    change, `rps` requests a second, the canary's share of them failing."""
    start = world.first("share 1")
    t = world.traffic
    return start + 1 / (t.rps * 0.01 * t.canary_errors)


@pytest.mark.parametrize("interval", [10.0, 60.0])
def test_a_release_answering_only_5xx_is_off_the_traffic_within_a_second(interval: float) -> None:
    spec = service(steps=STEPS, pause=120.0, interval=interval, bake=30.0)
    traffic = Traffic(rps=1_000.0, canary_errors=1.0)  # 10 canary requests a second
    world = World(rollout(spec), traffic=traffic).go()
    shared = world.first("share 0")
    assert shared - first_error(world) <= 1.0
    assert world.platform(peeks=True)[3:] == [
        (0.0, "share 1"),
        (0.0, "read counters"),  # the step begins: judged at `interval`, peeked at before
        (0.5, "peek counters"),
        (0.5, "share 0"),  # traffic first, before the line of the check that failed
        (30.5, "stop canaries"),
    ]
    run = world.run
    assert (run.phase, run.detected_at, run.restored_at) == (Phase.ABORTED, 0.5, 0.5)
    assert run.error is not None
    assert run.error.startswith(
        f"early analysis: certain failure 0.5s into the step, before the {interval:g}s "
        "verdict: error_rate vs stable (certain): 10% vs 0%; beyond doubt: 5 errors in 5"
    )
    said = world.shown(since=0.5, peeks=True)
    assert said[:3] == [
        (0.5, "peek counters"),
        (0.5, "share 0"),
        (
            0.5,
            "say: step 1 at 1%: certain failure 0.5s in (requests 5, "
            "error_rate vs stable (certain) 10% vs 0%, beyond doubt 5 errors in 5 requests)",
        ),
    ]
    assert (0.5, "event rollout abort") in said
    # The verdict recorded is the early check's, with its numbers.
    assert run.verdict is not None
    assert [c["name"] for c in run.verdict["checks"]][-1] == "beyond doubt"


def test_with_the_early_check_off_the_same_release_is_caught_at_the_interval() -> None:
    spec = service(steps=STEPS, pause=120.0, interval=60.0, early_abort=False)
    world = World(rollout(spec), traffic=Traffic(rps=1_000.0, canary_errors=1.0)).go()
    assert world.first("share 0") == 60.0
    assert "peek counters" not in [what for _, what in world.platform(peeks=True)]
    assert world.run.error is not None and world.run.error.startswith("analysis failed: ")


def test_a_slow_trickle_of_canary_requests_is_certain_at_its_third_error() -> None:
    # 2 canary requests a second: the third arrives at 1.5 s, peeked at that very moment.
    spec = service(steps=STEPS, pause=120.0, interval=60.0)
    world = World(rollout(spec), traffic=Traffic(rps=200.0, canary_errors=1.0)).go()
    assert world.first("share 0") == 1.5
    assert world.first("share 0") - first_error(world) <= 1.0


def test_half_the_answers_failing_is_caught_early_too() -> None:
    spec = service(steps=STEPS, pause=120.0, interval=60.0)
    world = World(rollout(spec), traffic=Traffic(rps=2_000.0, canary_errors=0.5)).go()
    assert world.first("share 0") - first_error(world) <= 1.0


def test_one_percent_against_003_percent_is_judged_at_the_interval_only() -> None:
    spec = service(steps=STEPS, pause=120.0, interval=60.0)
    traffic = Traffic(rps=2_000.0, canary_errors=0.01, stable_errors=0.0003)
    world = World(rollout(spec), traffic=traffic).go()
    peeks = [t for t, what in world.platform(peeks=True) if what == "peek counters"]
    # Peeked at twice a second all along, aborted by none of them.
    assert peeks[:3] == [0.5, 1.0, 1.5] and len(peeks) == 60 / EARLY_EVERY - 1
    assert all(b - a == pytest.approx(EARLY_EVERY) for a, b in pairwise(peeks))
    assert world.first("share 0") == 60.0
    assert world.run.error is not None
    assert world.run.error.startswith("analysis failed: error_rate vs stable: 1% vs 0.0303%")


def test_a_passing_step_is_peeked_at_but_judged_and_passed_at_its_intervals() -> None:
    spec = service(pause=30.0, interval=10.0)
    world = World(rollout(spec), traffic=Traffic(rps=200.0)).go()
    assert world.run.phase is Phase.COMPLETE
    reads = [t for t, what in world.platform() if what == "read counters" and t <= 30.0]
    assert reads == [0.0, 10.0, 20.0, 30.0, 30.0]  # the step's end, the next one's start
    assert world.first("share 50") == 30.0
    # No line for a peek that found nothing.
    assert not any("certain" in text for text in world.said())


def test_a_paused_rollout_that_turns_bad_mid_step_is_still_aborted_early() -> None:
    spec = service(steps=STEPS, pause=120.0, interval=60.0)
    traffic = Traffic(rps=1_000.0, canary_errors=1.0, errors_from=20.0)
    world = World(rollout(spec), traffic=traffic).at(5.0, Pause("bob")).go()
    # The step is judged from its start: the 200 good answers before 20 s dilute the
    # errors, which are certain at 25 of 225 (11%), 2.5 s in; long before the verdict.
    assert world.first("share 0") == 22.5
    assert world.run.phase is Phase.ABORTED


# --- no false aborts, on generated traffic -------------------------------------------------


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw: geometric skips when few succeed, a normal draw when many do."""
    if p <= 0 or n == 0:
        return 0
    if p >= 1:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1 - p)
    if n * p > 50:
        return min(n, max(0, round(rng.gauss(n * p, math.sqrt(n * p * (1 - p))))))
    hits, i, log_q = 0, 0, math.log1p(-p)
    while True:
        i += int(min(n, math.log(1.0 - rng.random()) / log_q)) + 1
        if i > n:
            return hits
        hits += 1


def counters(requests: int, bad: int) -> Counters:
    return track(requests, bad)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    canary_rate=st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.01, 0.05, 0.5, 1.0])),
    stable_rate=st.one_of(st.floats(0.0, 0.05), st.sampled_from([0.0, 0.0003])),
    rps=st.integers(10, 5_000),
    share=st.sampled_from([1.0, 10.0, 50.0, 100.0]),
    interval=st.sampled_from([2.0, 5.0, 10.0, 30.0, 60.0]),
    min_requests=st.sampled_from([1, 10, 50, 200]),
    expressions=st.sampled_from([(), ("error_rate() < 1%",), ("error_rate() < 5%",)]),
    seed=st.integers(0, 2**32 - 1),
)
@example(1.0, 0.0, 1_000, 1.0, 60.0, 50, (), 0)
@example(0.01, 0.0003, 5_000, 1.0, 60.0, 50, (), 1)
def test_the_early_check_never_aborts_where_the_intervals_verdict_would_pass(
    canary_rate: float,
    stable_rate: float,
    rps: int,
    share: float,
    interval: float,
    min_requests: int,
    expressions: tuple[str, ...],
    seed: int,
) -> None:
    """Traffic at steady rates, drawn every half second: wherever the early check aborts,
    the interval's verdict on the same traffic (at the first verdict after the abort)
    does not pass; and a canary failing at most a point more often than stable is never
    aborted early."""
    rng = random.Random(seed)
    per_tick = rps * EARLY_EVERY
    canary_n = canary_bad = stable_n = stable_bad = 0
    aborted_at: float | None = None
    ticks = round(interval / EARLY_EVERY)
    for tick in range(1, ticks + 1):
        total = binomial(rng, round(per_tick * 2), 0.5)  # about rps x 0.5 s
        to_canary = binomial(rng, total, share / 100)
        canary_n += to_canary
        canary_bad += binomial(rng, to_canary, canary_rate)
        stable_n += total - to_canary
        stable_bad += binomial(rng, total - to_canary, stable_rate)
        if tick == ticks:
            break  # the verdict's moment: the verdict judges, not the early check
        early = certain_failure(
            counters(canary_n, canary_bad),
            counters(stable_n, stable_bad),
            expressions,
            min_requests,
        )
        if early is not None and aborted_at is None:
            aborted_at = tick * EARLY_EVERY
    if aborted_at is None:
        return
    if share < 100:
        assert canary_rate > stable_rate + 0.01, "a canary a point from stable aborted early"
    verdict = analyse(
        counters(canary_n, canary_bad),
        counters(stable_n, stable_bad),
        expressions,
        min_requests,
        seconds=interval,
    )
    assert verdict.outcome != "pass", (
        f"aborted early at {aborted_at}s, but the {interval:g}s verdict passes: "
        f"{canary_bad}/{canary_n} vs {stable_bad}/{stable_n}"
    )


# --- the setting ---------------------------------------------------------------------------

STACK = """
[stack]
name = "shop"

[services.web]
run = "python app.py"
routes = ["/"]

[services.web.rollout]
interval = "1m"
"""


def test_the_early_check_is_on_unless_the_stack_file_turns_it_off(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(STACK)
    assert load_stack(path)[0].services["web"].rollout.early_abort is True
    path.write_text(STACK + "early_abort = false\n")
    assert load_stack(path)[0].services["web"].rollout.early_abort is False
    path.write_text(STACK + 'early_abort = "no"\n')
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    (problem,) = caught.value.diagnostics
    assert (problem.line, "early_abort" in problem.message) == (11, True)


def test_the_constants_are_the_documented_ones() -> None:
    assert (CERTAIN_ERRORS, CERTAIN_MARGIN, CERTAIN_ALPHA, EARLY_EVERY) == (3, 0.05, 0.001, 0.5)
