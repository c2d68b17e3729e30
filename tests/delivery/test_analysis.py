"""Canary analysis: the statistics against hand-computed values, and the step's verdict."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqlifier.delivery.analysis import (
    AnalysisError,
    Check,
    analyse,
    mann_whitney_u,
    parse_expression,
    two_proportion_test,
)
from sqlifier.errors import UserError
from sqlifier.router.metrics import BUCKETS_MS, Counters

# A plausible latency histogram (bucket index -> share), buckets up to 10ms, 15ms, 20ms,
# 30ms and 50ms: the p95 is at the top of the 20-30ms bucket.
TYPICAL = {6: 0.10, 7: 0.30, 8: 0.40, 9: 0.15, 10: 0.05}


def track(
    requests: int, errors: int = 0, shape: Mapping[int, float] = TYPICAL, shift: int = 0
) -> Counters:
    """One track's counters over a step: `errors` 5xx answers and a latency histogram of
    `shape` (shares per bucket), moved `shift` buckets up."""
    latency = [0] * (len(BUCKETS_MS) + 1)
    for bucket, share in shape.items():
        latency[bucket + shift] += round(requests * share)
    latency[max(shape) + shift] += requests - sum(latency)  # rounding leftovers
    counters = Counters(requests=requests, latency=latency)
    counters.status["2xx"] = requests - errors
    counters.status["5xx"] = errors
    return counters


def by_name(checks: Sequence[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


# --- the two-proportion test ---------------------------------------------------------------


def test_two_proportion_z_computed_by_hand() -> None:
    # 30 errors in 1000 against 10 in 1000: rates 0.03 and 0.01, pooled (30+10)/2000 = 0.02.
    # SE = sqrt(0.02 * 0.98 * (1/1000 + 1/1000)) = sqrt(3.92e-5) = 0.0062610
    # z = (0.03 - 0.01) / 0.0062610 = 3.1944
    # p = P(Z > 3.1944); the normal table gives Phi(3.19) = 0.99929 and Phi(3.20) = 0.99931,
    # so p is between 0.00069 and 0.00071 (7.0e-4).
    z, p = two_proportion_test(30, 1000, 10, 1000)
    assert z == pytest.approx(3.1944, abs=1e-4)
    assert 0.00069 < p < 0.00071


def test_two_proportion_is_one_sided() -> None:
    z, p = two_proportion_test(30, 1000, 10, 1000)
    z_swapped, p_swapped = two_proportion_test(10, 1000, 30, 1000)
    assert z_swapped == pytest.approx(-z)
    assert p_swapped == pytest.approx(1 - p)


@pytest.mark.parametrize(
    ("bad_a", "n_a", "bad_b", "n_b"),
    [(0, 0, 3, 10), (3, 10, 0, 0), (0, 0, 0, 0), (0, 100, 0, 100), (100, 100, 50, 50)],
    ids=["empty A", "empty B", "both empty", "both 0%", "both 100%"],
)
def test_two_proportion_without_variance_gives_p_one(
    bad_a: int, n_a: int, bad_b: int, n_b: int
) -> None:
    assert two_proportion_test(bad_a, n_a, bad_b, n_b) == (0.0, 1.0)


def test_two_proportion_with_a_zero_rate_is_still_defined() -> None:
    # 5 in 100 against 0 in 100: pooled 0.025, SE = sqrt(0.025 * 0.975 * 0.02) = 0.022079,
    # z = 0.05 / 0.022079 = 2.2646
    z, p = two_proportion_test(5, 100, 0, 100)
    assert z == pytest.approx(2.2646, abs=1e-4)
    assert p == pytest.approx(1 - NormalDist().cdf(z))


def test_two_proportion_refuses_more_bad_than_requests() -> None:
    with pytest.raises(ValueError, match="a proportion needs 0 <= bad <= n, not 11 of 10"):
        two_proportion_test(11, 10, 0, 10)


# --- the Mann-Whitney U test ---------------------------------------------------------------


def test_mann_whitney_u_computed_by_hand() -> None:
    # A: 2 in bucket 1, 2 in bucket 2; B: 2 in bucket 0, 2 in bucket 1.
    # U_A: each A in bucket 1 beats B's 2 below and ties B's 2 (2 + 2/2 = 3): 2 * 3 = 6;
    #      each A in bucket 2 beats all 4 B: 2 * 4 = 8; U_A = 14 of 16 pairs, mean 8.
    # Ties: bucket sizes 2, 4, 2 -> sum(t^3 - t) = 6 + 60 + 6 = 72; N = 8, N(N-1) = 56.
    # var = 4*4/12 * (9 - 72/56) = 1.33333 * 7.71429 = 10.28571, sd = 3.20713
    # z = (14 - 8 - 0.5) / 3.20713 = 1.7149; Phi(1.71) = 0.95637, Phi(1.72) = 0.95728,
    # so p = P(Z > 1.7149) is between 0.0427 and 0.0437 (4.32e-2).
    u, p = mann_whitney_u([0, 2, 2], [2, 2, 0])
    assert u == 14
    assert 0.0427 < p < 0.0437


def _expand(hist: Sequence[int]) -> list[int]:
    return [bucket for bucket, count in enumerate(hist) for _ in range(count)]


def _brute_force(hist_a: Sequence[int], hist_b: Sequence[int]) -> tuple[float, float]:
    """U by comparing every pair of expanded observations; p from mid-ranks and the
    textbook tie-corrected variance, by another road than the code under test."""
    a, b = _expand(hist_a), _expand(hist_b)
    u = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in itertools.product(a, b))
    pooled = sorted(a + b)
    first = {value: pooled.index(value) + 1 for value in set(pooled)}
    size = Counter(pooled)
    mid_rank = {value: first[value] + (size[value] - 1) / 2 for value in size}
    u_from_ranks = sum(mid_rank[x] for x in a) - len(a) * (len(a) + 1) / 2
    assert u_from_ranks == u
    n_a, n_b, n = len(a), len(b), len(pooled)
    tie_term = sum(t**3 - t for t in size.values()) / (n * (n - 1))
    sd = math.sqrt(n_a * n_b / 12 * ((n + 1) - tie_term))
    z = (u - n_a * n_b / 2 - 0.5) / sd
    return u, 1 - NormalDist().cdf(z)


@pytest.mark.parametrize(
    ("hist_a", "hist_b"),
    [
        ([1, 2, 0, 1, 0], [0, 1, 3, 0, 1]),
        ([3, 0, 0, 0, 2], [1, 1, 1, 1, 1]),
        ([0, 0, 4, 5, 1], [2, 5, 3, 0, 0]),
        ([1, 0, 0, 0, 0], [0, 0, 0, 0, 1]),
        ([5, 5, 5, 5, 5], [5, 5, 5, 5, 5]),
    ],
)
def test_mann_whitney_u_matches_expanded_samples(hist_a: list[int], hist_b: list[int]) -> None:
    u, p = mann_whitney_u(hist_a, hist_b)
    expected_u, expected_p = _brute_force(hist_a, hist_b)
    assert u == expected_u
    assert p == pytest.approx(expected_p, abs=1e-12)


def test_identical_distributions_give_p_about_one_half() -> None:
    hist = track(1000).latency
    u, p = mann_whitney_u(hist, hist)
    assert u == 1000 * 1000 / 2
    assert 0.5 < p < 0.51  # just above one half: the continuity correction


@pytest.mark.parametrize(
    ("hist_a", "hist_b"),
    [([0, 0, 0], [1, 2, 3]), ([1, 2, 3], [0, 0, 0]), ([0, 7, 0], [0, 3, 0])],
    ids=["empty A", "empty B", "all in one bucket"],
)
def test_mann_whitney_u_without_variance_gives_p_one(hist_a: list[int], hist_b: list[int]) -> None:
    assert mann_whitney_u(hist_a, hist_b)[1] == 1.0


def test_mann_whitney_u_refuses_histograms_over_different_buckets() -> None:
    with pytest.raises(ValueError, match="histograms over different buckets: 2 and 3"):
        mann_whitney_u([1, 2], [1, 2, 3])


_HISTOGRAMS = st.lists(st.integers(0, 60), min_size=6, max_size=6)


@given(_HISTOGRAMS, _HISTOGRAMS)
def test_the_two_u_statistics_add_up_to_the_number_of_pairs(a: list[int], b: list[int]) -> None:
    u_a, p_a = mann_whitney_u(a, b)
    u_b, p_b = mann_whitney_u(b, a)
    assert u_a + u_b == sum(a) * sum(b)
    assert 0.0 <= p_a <= 1.0
    assert 0.0 <= p_b <= 1.0


@given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 500), st.integers(1, 500))
def test_the_two_proportion_p_value_follows_the_rates(
    bad_a: int, bad_b: int, n_a: int, n_b: int
) -> None:
    bad_a, bad_b = min(bad_a, n_a), min(bad_b, n_b)
    z, p = two_proportion_test(bad_a, n_a, bad_b, n_b)
    assert 0.0 <= p <= 1.0
    if bad_a * n_b > bad_b * n_a:  # A's rate is higher (in integers)
        assert z > 0
        assert p < 0.5


# --- expressions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "cpu() < 80%",
            "invalid analysis 'cpu() < 80%': cpu() is not measured on a canary; "
            "analysis can use error_rate(), latency(p50|p90|p95|p99) and rps()",
        ),
        (
            "error_rate() < 1% AND log() > 3",
            "invalid analysis 'error_rate() < 1% AND log() > 3': log() is not measured on a "
            "canary; analysis can use error_rate(), latency(p50|p90|p95|p99) and rps()",
        ),
        (
            "error_rate() < 1",
            "invalid analysis 'error_rate() < 1': error_rate() is a percentage; compare it "
            "with a percentage like 80%, not '1'",
        ),
        (
            "latency(p99) < 300ms AND",
            "invalid analysis 'latency(p99) < 300ms AND': expected a signal test like "
            "cpu() > 80% or high_cpu(>80%), found the end of the file",
        ),
        (
            "error_rate(service='api') < 1%",
            "invalid analysis 'error_rate(service='api') < 1%': analysis reads the service "
            "being deployed; remove service=",
        ),
    ],
    ids=["cpu", "log", "unitless percentage", "dangling AND", "another service"],
)
def test_expressions_that_cannot_be_judged_are_refused(text: str, message: str) -> None:
    with pytest.raises(AnalysisError) as caught:
        parse_expression(text)
    assert str(caught.value) == message


def test_a_refused_expression_is_a_value_error_and_a_user_error() -> None:
    with pytest.raises(AnalysisError) as caught:
        analyse(Counters(), Counters(), ["cpu() < 80%"])  # refused even without data
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, UserError)


def test_an_expression_keeps_its_tests_in_base_units() -> None:
    expression = parse_expression("error_rate() < 1% AND latency(p95) <= 300ms")
    assert [(t.key, t.op, t.threshold) for t in expression.tests] == [
        ("error_rate", "<", 0.01),
        ("latency_p95", "<=", 0.3),
    ]


# --- the step's verdict --------------------------------------------------------------------


def test_a_healthy_canary_passes() -> None:
    verdict = analyse(
        track(500, errors=2),
        track(5000, errors=20),
        ["error_rate() < 1%", "latency(p99) < 300ms"],
    )
    assert verdict.outcome == "pass"
    assert [c.name for c in verdict.checks] == [
        "requests",
        "error_rate() < 1%",
        "latency(p99) < 300ms",
        "error_rate vs stable",
        "latency vs stable",
    ]
    assert all(c.passed is True and c.counts for c in verdict.checks)
    assert (verdict.canary_requests, verdict.stable_requests) == (500, 5000)


def test_a_canary_answering_only_5xx_fails_once_it_has_enough_requests() -> None:
    # 50 of 50 against 10 of 1000: pooled 60/1050 = 0.057143,
    # SE = sqrt(0.057143 * 0.942857 * (1/50 + 1/1000)) = 0.033637, z = 0.99 / 0.033637 = 29.4
    verdict = analyse(track(50, errors=50), track(1000, errors=10), [])
    assert verdict.outcome == "fail"
    check = by_name(verdict.checks)["error_rate vs stable"]
    assert check.passed is False
    assert check.value == "100% vs 1%"
    assert check.detail == (
        "the canary had 50 errors (5xx or no response) in 50 requests (100%), the stable "
        "track 10 in 1000 (1%); a difference of 99 percentage points; two-proportion "
        "z = 29.4, one-sided p = 1.1e-190; significantly and materially worse: failed."
    )


def test_unanswered_requests_count_as_errors() -> None:
    canary = track(100)
    canary.failed = 100
    verdict = analyse(canary, track(1000), ["error_rate() < 1%"])
    assert by_name(verdict.checks)["error_rate() < 1%"].value == "100%"
    assert verdict.outcome == "fail"


def test_a_slow_canary_fails() -> None:
    verdict = analyse(track(200), track(2000), [], min_requests=50)
    assert verdict.outcome == "pass"
    slow = analyse(track(200, shift=3), track(2000), [])
    assert slow.outcome == "fail"
    check = by_name(slow.checks)["latency vs stable"]
    assert check.passed is False
    # The p95 sits at the top of the 20-30ms bucket; three buckets up, of the 75-100ms one.
    assert check.value == "p95 100ms vs 30ms"


def test_fewer_than_min_requests_is_inconclusive() -> None:
    verdict = analyse(track(49), track(1000), ["error_rate() < 1%"])
    assert verdict.outcome == "inconclusive"
    assert verdict.checks == (
        Check(
            "requests",
            None,
            "49",
            ">= 50",
            "the canary answered 49 requests in this step and 50 are needed to judge it: "
            "inconclusive, waiting for more.",
        ),
    )


def test_errors_that_fail_the_step_whatever_comes_next_fail_it_before_the_minimum() -> None:
    # 3 errors in 10 requests: even if the 40 still needed all succeed, 3 in 50 is 6%.
    verdict = analyse(track(10, errors=3), track(1000), ["error_rate() < 1%"])
    assert verdict.outcome == "fail"
    check = by_name(verdict.checks)["error_rate() < 1% (certain)"]
    assert check.passed is False
    assert check.detail.startswith(
        "only 10 of the 50 requests needed to judge the step have been answered, but 3 of "
        "them failed; counting the 40 still needed as successes: error_rate() < 1%: the "
        "canary track measured 6%"
    )
    # Without an expression, the comparison with the stable track decides the same way.
    compared = analyse(track(10, errors=3), track(1000), [])
    assert compared.outcome == "fail"
    assert "error_rate vs stable (certain)" in by_name(compared.checks)
    # 1 error in 10 could still end below 5% (1 in 50 is 2%, as on stable): wait for data.
    hopeful = analyse(track(10, errors=1), track(1000, errors=20), ["error_rate() < 5%"])
    assert hopeful.outcome == "inconclusive"


def test_no_requests_is_never_a_pass_even_without_a_minimum() -> None:
    verdict = analyse(Counters(), track(1000), [], min_requests=0)
    assert verdict.outcome == "inconclusive"
    assert verdict.checks[0].threshold == ">= 1"


def test_a_signal_without_data_is_inconclusive() -> None:
    canary = track(100)
    canary.latency = [0] * len(canary.latency)  # requests, but no latency recorded
    verdict = analyse(canary, track(1000), ["latency(p99) < 300ms"])
    check = by_name(verdict.checks)["latency(p99) < 300ms"]
    assert (check.passed, check.value) == (None, "no data")
    assert check.detail == (
        "latency(p99) < 300ms: the canary track has no data (0 latency samples). "
        "The expression is inconclusive: no data is never a pass."
    )
    assert by_name(verdict.checks)["latency vs stable"].passed is None
    assert verdict.outcome == "inconclusive"


def test_and_or_follow_three_valued_logic() -> None:
    canary = track(100)
    canary.latency = [0] * len(canary.latency)
    checks = by_name(
        analyse(
            canary,
            track(1000),
            [
                "error_rate() < 1% OR latency(p99) < 300ms",
                "error_rate() > 1% AND latency(p99) < 300ms",
                "error_rate() < 1% AND latency(p99) < 300ms",
            ],
        ).checks
    )
    assert checks["error_rate() < 1% OR latency(p99) < 300ms"].passed is True
    assert checks["error_rate() > 1% AND latency(p99) < 300ms"].passed is False
    assert checks["error_rate() < 1% AND latency(p99) < 300ms"].passed is None


def test_a_significant_but_tiny_error_rate_increase_passes() -> None:
    # 1.2% against 1.0% over a million requests each: z = 0.002 / sqrt(0.011 * 0.989 * 2e-6)
    # = 13.6, overwhelmingly significant, but only 0.2 percentage points worse.
    assert two_proportion_test(12_000, 1_000_000, 10_000, 1_000_000)[1] < 1e-30
    verdict = analyse(track(1_000_000, errors=12_000), track(1_000_000, errors=10_000), [])
    check = by_name(verdict.checks)["error_rate vs stable"]
    assert check.passed is True
    assert "significant, but less than 0.5 percentage points higher" in check.detail
    assert verdict.outcome == "pass"


def test_a_material_error_rate_increase_that_is_not_significant_passes() -> None:
    verdict = analyse(track(60, errors=1), track(60), [])  # 1.7% against 0%, p = 0.16
    assert by_name(verdict.checks)["error_rate vs stable"].passed is True


def test_a_significant_but_small_latency_shift_passes() -> None:
    # A twentieth of the requests move from 10ms to 15ms: significant over 100k requests
    # each, but the p95 (at the top of the 30ms bucket) does not move.
    shape = dict(TYPICAL)
    shape[6], shape[7] = 0.05, 0.35
    canary, stable = track(100_000, shape=shape), track(100_000)
    assert mann_whitney_u(canary.latency, stable.latency)[1] < 1e-10
    check = by_name(analyse(canary, stable, []).checks)["latency vs stable"]
    assert check.passed is True
    assert "significant, but the p95 is less than 10% or 20ms higher" in check.detail


def test_a_slower_p95_by_a_millisecond_or_two_is_too_small_to_matter() -> None:
    # Everything a bucket slower (1-2 ms instead of 0.5-1 ms): twice as slow, significant,
    # yet a millisecond no user notices: a fresh process is often that much slower.
    fast = dict.fromkeys(range(26), 0.0)
    fast[1] = 1.0
    slow = dict.fromkeys(range(26), 0.0)
    slow[2] = 1.0
    canary, stable = track(500, shape=slow), track(5000, shape=fast)
    check = by_name(analyse(canary, stable, []).checks)["latency vs stable"]
    assert check.value == "p95 1.95ms vs 0.975ms"  # interpolated within the buckets
    assert check.passed is True
    assert "too small to matter: passed" in check.detail


def test_without_enough_stable_traffic_the_expressions_decide() -> None:
    # At the last step (100%) the stable track gets nothing: only the expressions can judge.
    good = analyse(track(500), Counters(), ["error_rate() < 1%"])
    assert good.outcome == "pass"
    comparisons = [c for c in good.checks if c.name.endswith("vs stable")]
    assert [(c.passed, c.counts) for c in comparisons] == [(None, False), (None, False)]
    assert comparisons[0].detail == (
        "the canary had 0 errors (5xx or no response) in 500 requests (0%); the stable track "
        "has 0 requests, fewer than the 50 needed to compare: inconclusive, and not counted: "
        "the expressions decide this step."
    )
    bad = analyse(track(500, errors=50), track(10), ["error_rate() < 1%"])
    assert bad.outcome == "fail"


def test_an_expression_can_read_the_stable_track() -> None:
    verdict = analyse(track(100), track(1000, errors=100), ["error_rate(track='stable') < 1%"])
    check = by_name(verdict.checks)["error_rate(track='stable') < 1%"]
    assert (check.passed, check.value) == (False, "10%")


def test_rps_is_requests_over_the_interval() -> None:
    checks = by_name(
        analyse(track(300), track(300), ["rps() >= 10", "rps() > 10"], seconds=30).checks
    )
    assert (checks["rps() >= 10"].passed, checks["rps() >= 10"].value) == (True, "10")
    assert checks["rps() > 10"].passed is False


def test_rps_needs_the_interval() -> None:
    with pytest.raises(ValueError, match="rps\\(\\) in an analysis needs the interval's length"):
        analyse(track(300), track(300), ["rps() > 1"])


def test_the_verdict_as_json() -> None:
    verdict = analyse(track(10), track(10), [])
    assert verdict.to_json() == {
        "outcome": "inconclusive",
        "canary_requests": 10,
        "stable_requests": 10,
        "checks": [
            {
                "name": "requests",
                "passed": None,
                "value": "10",
                "threshold": ">= 50",
                "detail": "the canary answered 10 requests in this step and 50 are needed "
                "to judge it: inconclusive, waiting for more.",
                "counts": True,
            }
        ],
    }
