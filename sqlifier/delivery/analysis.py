"""Canary analysis of one rollout step: may the rollout go on, must it stop, or must it wait?

Each step is judged from the router's counters of the two tracks over the step's interval:

- **enough data**: fewer canary requests than `min_requests` (never fewer than one) is
  inconclusive, whatever else is true: the rollout waits. No data never counts as a pass.
- **the rollout's `analysis` expressions**, signal tests of the rule language (what one may
  hold is `sqlifier.lang.analysis`'s to say) read on the canary track: `error_rate()` (5xx
  and unanswered requests over requests), `latency(pNN)` (from the latency histogram) and
  `rps()` (requests over the interval's seconds). A signal without data makes its test
  inconclusive; AND and OR follow three-valued logic (an OR with
  one true test holds even if another has no data).
- **a comparison with the stable track**: error rates with a one-sided two-proportion z-test,
  latency histograms with a one-sided Mann-Whitney U test. Statistical significance alone is
  not enough at large volumes, where a difference no one would notice is still significant,
  so the canary fails only when it is also *materially* worse: an error rate at least half a
  percentage point higher (`MIN_ERROR_RATE_INCREASE`), a p95 at least 10% and at least
  20 ms higher (`MIN_P95_INCREASE`, `MIN_P95_INCREASE_MS`: a fresh process answering in
  18 ms where the warm ones take 10 ms is 80% slower, on a busy machine, and no user can
  tell). When the stable track has fewer than `min_requests` (it has none at the last
  step, 100%), the comparisons are shown as inconclusive but do not count: the
  expressions decide the step alone; a rollout without expressions then passes such a step on
  its request count, so one that wants an absolute bound writes it (`error_rate() < 1%`).

With too few canary requests nothing else is evaluated: a few unlucky requests judged by
rates and percentiles would fail a good release.

Every check says its numbers in a sentence for the audit log. Only the standard library does
the statistics: the normal tail is `erfc`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from sqlifier.engine.compiled import Test, Tree, compile_rule, show_value, signal_unit
from sqlifier.lang import ast
from sqlifier.lang.analysis import SUPPORTED_SIGNALS, AnalysisError, parse_analysis
from sqlifier.lang.units import Type
from sqlifier.router.metrics import Counters, percentile

__all__ = [
    "CERTAIN_ALPHA",
    "CERTAIN_ERRORS",
    "CERTAIN_MARGIN",
    "MIN_ERROR_RATE_INCREASE",
    "MIN_P95_INCREASE",
    "MIN_P95_INCREASE_MS",
    "SUPPORTED_SIGNALS",
    "AnalysisError",
    "Check",
    "Expression",
    "Outcome",
    "Verdict",
    "analyse",
    "binomial_tail",
    "certain_failure",
    "mann_whitney_u",
    "parse_expression",
    "two_proportion_test",
]

MIN_ERROR_RATE_INCREASE = 0.005  # absolute: half a percentage point
MIN_P95_INCREASE = 0.10  # relative: the canary's p95 at least 10% above the stable one's
MIN_P95_INCREASE_MS = 20.0  # and absolute: at least 20 ms above it

# The early check (`certain_failure`): a failure so blatant it needs no interval to tell.
CERTAIN_ERRORS = 3  # never fewer errors than this
CERTAIN_MARGIN = 0.05  # a release failing 5 points more often than stable could show them...
CERTAIN_ALPHA = 0.001  # ...with a probability below this (exact binomial tail)

Outcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Check:
    """One thing the analysis looked at, with its numbers written out for the audit log."""

    name: str
    passed: bool | None  # None: inconclusive
    value: str
    threshold: str
    detail: str
    counts: bool = True  # False: shown, but not part of the outcome (no stable to compare)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "detail": self.detail,
            "counts": self.counts,
        }


@dataclass(frozen=True)
class Verdict:
    """The analysis of one step: its outcome and every check behind it."""

    outcome: Outcome
    checks: tuple[Check, ...]
    canary_requests: int
    stable_requests: int

    def to_json(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "canary_requests": self.canary_requests,
            "stable_requests": self.stable_requests,
            "checks": [check.to_json() for check in self.checks],
        }


@dataclass(frozen=True)
class Expression:
    """An analysis expression ready to evaluate: its signal tests and how they combine."""

    text: str
    tests: tuple[Test, ...]
    tree: Tree


# --- statistics ----------------------------------------------------------------------------


def two_proportion_test(bad_a: int, n_a: int, bad_b: int, n_b: int) -> tuple[float, float]:
    """The z statistic and the one-sided p-value that A's rate is greater than B's.

    Pooled standard error. When the test is undefined (an empty sample, or both rates 0% or
    both 100%, so no variance), z is 0 and p is 1.0: no evidence of anything.
    """
    for bad, n in ((bad_a, n_a), (bad_b, n_b)):
        if n < 0 or not 0 <= bad <= n:
            raise ValueError(f"a proportion needs 0 <= bad <= n, not {bad} of {n}")
    if n_a == 0 or n_b == 0:
        return 0.0, 1.0
    pooled = (bad_a + bad_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance <= 0:
        return 0.0, 1.0
    z = (bad_a / n_a - bad_b / n_b) / math.sqrt(variance)
    return z, _upper_tail(z)


def mann_whitney_u(hist_a: Sequence[int], hist_b: Sequence[int]) -> tuple[float, float]:
    """U for A, and the one-sided p-value that A is stochastically greater (slower) than B.

    The samples are two histograms over the same buckets: the observations in one bucket
    are ties and share their mid-rank. The p-value is the normal approximation with the tie
    correction of the variance and a continuity correction of one half. When it is
    undefined (an empty sample, or every observation in one bucket), p is 1.0.
    """
    if len(hist_a) != len(hist_b):
        raise ValueError(f"histograms over different buckets: {len(hist_a)} and {len(hist_b)}")
    if any(count < 0 for count in (*hist_a, *hist_b)):
        raise ValueError("a histogram count is never negative")
    n_a, n_b = sum(hist_a), sum(hist_b)
    # Integers throughout: 2U and the tie term are exact however many requests there are.
    twice_u, below, ties = 0, 0, 0
    for a, b in zip(hist_a, hist_b, strict=True):
        twice_u += a * (2 * below + b)  # each B below counts 1, each B in the bucket 1/2
        below += b
        t = a + b
        ties += t**3 - t
    u = twice_u / 2
    n = n_a + n_b
    if n_a == 0 or n_b == 0:
        return u, 1.0
    variance = n_a * n_b / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return u, 1.0
    z = (u - n_a * n_b / 2 - 0.5) / math.sqrt(variance)
    return u, _upper_tail(z)


def binomial_tail(bad: int, n: int, rate: float) -> float:
    """P(X >= bad) for X binomial over `n` requests that each fail with probability `rate`:
    how likely a release failing at `rate` shows `bad` errors or more in `n` requests.

    Exact, summed from `bad` up in log space; the terms fall geometrically once past the
    mean, so it stops when they no longer change the sum. At or below the mean it is at
    least one half, and 1.0 is returned: no evidence of anything.
    """
    if n < 0 or not 0 <= bad <= n:
        raise ValueError(f"a proportion needs 0 <= bad <= n, not {bad} of {n}")
    if not 0 <= rate <= 1:
        raise ValueError(f"a rate is between 0 and 1, not {rate}")
    if bad == 0 or bad <= n * rate:
        return 1.0
    if rate == 0:
        return 0.0
    if rate == 1:
        return 1.0
    log_rate, log_rest = math.log(rate), math.log1p(-rate)
    log_term = (
        math.lgamma(n + 1) - math.lgamma(bad + 1) - math.lgamma(n - bad + 1)
        + bad * log_rate + (n - bad) * log_rest
    )  # fmt: skip
    term, total = math.exp(log_term), 0.0
    for k in range(bad, n + 1):
        total += term
        if term <= total * 1e-15:
            break
        term *= (n - k) / (k + 1) * rate / (1 - rate)
    return min(1.0, total)


def _upper_tail(z: float) -> float:
    """P(Z > z) for a standard normal Z, accurate far into the tail (unlike 1 - cdf)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


# --- expressions ---------------------------------------------------------------------------


def parse_expression(text: str) -> Expression:
    """An analysis expression ready to evaluate (`sqlifier.lang.analysis` says what one may
    hold); AnalysisError says what is wrong."""
    trigger = parse_analysis(text)
    # The rule around the trigger only lets the engine compile its tests; it never runs.
    rule = ast.Rule(trigger, (ast.Notify(ast.String("analysis")),))
    compiled = compile_rule(rule, "<analysis>")
    return Expression(text, compiled.tests, compiled.tree)


def _read(test: Test, tracks: Mapping[str, Counters], seconds: float | None) -> float | None:
    """The canary's (or, with track=, that track's) value of a signal; None without data."""
    series, _, track = test.key.partition(".")
    counters = tracks[track or "canary"]
    if test.signal == "error_rate":
        return _bad(counters) / counters.requests if counters.requests else None
    if test.signal == "latency":
        ms = percentile(counters.latency, float(series.removeprefix("latency_p")))
        return ms / 1000 if ms is not None else None
    assert seconds is not None  # analyse refuses rps() without it
    return counters.requests / seconds


def _evidence(test: Test, tracks: Mapping[str, Counters], seconds: float | None) -> str:
    """What a value was computed from, in words."""
    track = test.key.partition(".")[2] or "canary"
    counters = tracks[track]
    if test.signal == "error_rate":
        return f"{_bad(counters)} errors (5xx or no response) in {counters.requests} requests"
    if test.signal == "latency":
        return f"{sum(counters.latency)} latency samples"
    return f"{counters.requests} requests in {seconds:g} seconds"


def _combine(tree: Tree, results: Sequence[bool | None]) -> bool | None:
    """AND and OR in three-valued logic: None (no data) only where it could change the
    answer."""
    if isinstance(tree, int):
        return results[tree]
    op, children = tree
    values = [_combine(child, results) for child in children]
    deciding = op == "OR"  # one true operand decides an OR, one false operand an AND
    if any(v is deciding for v in values):
        return deciding
    if any(v is None for v in values):
        return None
    return not deciding


def _expression_check(
    expression: Expression, tracks: Mapping[str, Counters], seconds: float | None
) -> Check:
    results: list[bool | None] = []
    shown: list[str] = []
    sentences: list[str] = []
    for test in expression.tests:
        value = _read(test, tracks, seconds)
        held = test.holds(value) if value is not None else None
        results.append(held)
        where = test.key.partition(".")[2] or "canary"
        if value is None:
            shown.append("no data")
            sentences.append(
                f"{test.text}: the {where} track has no data ({_evidence(test, tracks, seconds)})"
            )
            continue
        text = show_value(value, signal_unit(test.signal))
        shown.append(text)
        verb = "holds" if held else "does not hold"
        sentences.append(
            f"{test.text}: the {where} track measured {text} "
            f"from {_evidence(test, tracks, seconds)}, so it {verb}"
        )
    passed = _combine(expression.tree, results)
    single = len(expression.tests) == 1 and expression.tests[0].op is not None
    threshold = _threshold(expression.tests[0]) if single else expression.text
    ending = {True: "passed", False: "failed", None: "is inconclusive: no data is never a pass"}
    return Check(
        expression.text,
        passed,
        ", ".join(shown),
        threshold,
        "; ".join(sentences) + f". The expression {ending[passed]}.",
    )


def _threshold(test: Test) -> str:
    assert test.op is not None and test.threshold is not None
    return f"{test.op} {show_value(test.threshold, test.unit)}"


# --- comparisons with the stable track -----------------------------------------------------


def _bad(counters: Counters) -> int:
    """Requests answered 5xx or not at all; never more than the requests (a retried
    request can count as unanswered on one instance and answered on another)."""
    return min(counters.status["5xx"] + counters.failed, counters.requests)


def _error_rate_comparison(
    canary: Counters, stable: Counters, min_requests: int, alpha: float
) -> Check:
    name = "error_rate vs stable"
    threshold = (
        f"p >= {alpha:g} or less than {_pp(MIN_ERROR_RATE_INCREASE)} percentage points higher"
    )
    bad_c, bad_s = _bad(canary), _bad(stable)
    rate_c = bad_c / canary.requests
    said = (
        f"the canary had {bad_c} errors (5xx or no response) in {canary.requests} requests "
        f"({_pct(rate_c)})"
    )
    if stable.requests < min_requests:
        seen = f"{stable.requests} requests"
        return _not_compared(name, _pct(rate_c), threshold, said, seen, min_requests)
    rate_s = bad_s / stable.requests
    z, p = two_proportion_test(bad_c, canary.requests, bad_s, stable.requests)
    increase = rate_c - rate_s
    significant = p < alpha
    material = increase >= MIN_ERROR_RATE_INCREASE - 1e-12  # 1.5% - 1.0% is 0.00499999...
    worse = significant and material
    if worse:
        verdict = "significantly and materially worse: failed"
    elif significant:
        verdict = (
            f"significant, but less than {_pp(MIN_ERROR_RATE_INCREASE)} percentage points "
            "higher, too small to matter: passed"
        )
    else:
        verdict = f"not significant at alpha {alpha:g}: passed"
    detail = (
        f"{said}, the stable track {bad_s} in {stable.requests} ({_pct(rate_s)}); "
        f"a difference of {_pp(increase)} percentage points; two-proportion z = {z:.3g}, "
        f"one-sided p = {p:.2g}; {verdict}."
    )
    return Check(name, not worse, f"{_pct(rate_c)} vs {_pct(rate_s)}", threshold, detail)


def _latency_comparison(
    canary: Counters, stable: Counters, min_requests: int, alpha: float
) -> Check:
    name = "latency vs stable"
    threshold = (
        f"p >= {alpha:g} or p95 less than {MIN_P95_INCREASE:.0%} "
        f"or {MIN_P95_INCREASE_MS:g}ms higher"
    )
    samples_c, samples_s = sum(canary.latency), sum(stable.latency)
    p95_c = percentile(canary.latency, 95)
    value_c = _ms(p95_c)
    said = f"the canary's p95 was {value_c} from {samples_c} latency samples"
    if stable.requests < min_requests or samples_s < min_requests:
        seen = f"{min(stable.requests, samples_s)} requests with a latency"
        return _not_compared(name, value_c, threshold, said, seen, min_requests)
    if p95_c is None or samples_c < min_requests:
        detail = (
            f"the canary has {samples_c} latency samples, fewer than the {min_requests} "
            "needed to compare: inconclusive, no data is never a pass."
        )
        return Check(name, None, value_c, threshold, detail)
    p95_s = percentile(stable.latency, 95)
    assert p95_s is not None  # the stable track has samples
    u, p = mann_whitney_u(canary.latency, stable.latency)
    pairs = samples_c * samples_s
    increase = p95_c / p95_s - 1
    significant = p < alpha
    material = increase >= MIN_P95_INCREASE - 1e-12 and p95_c - p95_s >= MIN_P95_INCREASE_MS - 1e-9
    worse = significant and material
    if worse:
        verdict = "significantly and materially slower: failed"
    elif significant:
        verdict = (
            f"significant, but the p95 is less than {MIN_P95_INCREASE:.0%} or "
            f"{MIN_P95_INCREASE_MS:g}ms higher, too small to matter: passed"
        )
    else:
        verdict = f"not significantly slower at alpha {alpha:g}: passed"
    detail = (
        f"{said}, the stable track's {_ms(p95_s)} from {samples_s} ({increase:+.1%}); "
        f"Mann-Whitney U = {u:g} of {pairs} pairs (no difference: {pairs / 2:g}), "
        f"one-sided p = {p:.2g}; {verdict}."
    )
    return Check(name, not worse, f"p95 {value_c} vs {_ms(p95_s)}", threshold, detail)


def _not_compared(
    name: str, value: str, threshold: str, said: str, seen: str, needed: int
) -> Check:
    detail = (
        f"{said}; the stable track has {seen}, fewer than the {needed} needed to "
        "compare: inconclusive, and not counted: the expressions decide this step."
    )
    return Check(name, None, value, threshold, detail, counts=False)


def _pct(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def _pp(difference: float) -> str:
    return f"{difference * 100:.3g}"


def _ms(ms: float | None) -> str:
    return show_value(ms / 1000, Type.DURATION) if ms is not None else "no data"


# --- the step ------------------------------------------------------------------------------


def analyse(
    canary: Counters,
    stable: Counters,
    expressions: Sequence[str],
    min_requests: int = 50,
    alpha: float = 0.01,
    seconds: float | None = None,
) -> Verdict:
    """Judge one rollout step from both tracks' counters over the same interval.

    `seconds` is the interval's length; it is needed only by rps() in an expression (a
    ValueError without it). Expressions are parsed first, so a bad one raises AnalysisError
    whatever the data.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is a probability between 0 and 1, not {alpha}")
    parsed = [parse_expression(text) for text in expressions]
    uses_rps = any(t.signal == "rps" for e in parsed for t in e.tests)
    if uses_rps and (seconds is None or seconds <= 0):
        raise ValueError(f"rps() in an analysis needs the interval's length, not {seconds}")
    needed = max(min_requests, 1)  # zero requests is no data, never a pass
    enough = canary.requests >= needed
    gate = Check(
        "requests",
        True if enough else None,
        str(canary.requests),
        f">= {needed}",
        f"the canary answered {canary.requests} requests in this step and {needed} are "
        f"needed to judge it: {'enough' if enough else 'inconclusive, waiting for more'}.",
    )
    checks = [gate]
    if not enough:
        doomed = _certain_failure(canary, stable, parsed, needed, alpha)
        if doomed is not None:
            checks.append(doomed)
    if enough:
        tracks = {"canary": canary, "stable": stable}
        checks += [_expression_check(e, tracks, seconds) for e in parsed]
        checks.append(_error_rate_comparison(canary, stable, needed, alpha))
        checks.append(_latency_comparison(canary, stable, needed, alpha))
    return Verdict(_outcome(checks), tuple(checks), canary.requests, stable.requests)


def _certain_failure(
    canary: Counters,
    stable: Counters,
    expressions: Sequence[Expression],
    needed: int,
    alpha: float,
) -> Check | None:
    """Too few requests to pass a step can still be enough to fail it: when the errors
    seen so far fail an error-rate test even if every request still needed succeeds, the
    verdict is certain and waiting would only send more users to a broken release."""
    bad = _bad(canary)
    if bad == 0:
        return None
    padded = Counters.from_json(canary.to_json())
    padded.status["2xx"] += needed - canary.requests
    padded.requests = needed
    prefix = (
        f"only {canary.requests} of the {needed} requests needed to judge the step have "
        f"been answered, but {bad} of them failed; counting the {needed - canary.requests} "
        "still needed as successes: "
    )
    tracks = {"canary": padded, "stable": stable}
    for expression in expressions:
        if not all(t.signal == "error_rate" and not t.key.partition(".")[2] for t in
                   expression.tests):  # fmt: skip
            continue
        check = _expression_check(expression, tracks, None)
        if check.passed is False:
            return replace(check, name=f"{check.name} (certain)", detail=prefix + check.detail)
    if stable.requests >= needed:
        check = _error_rate_comparison(padded, stable, needed, alpha)
        if check.passed is False:
            return replace(check, name=f"{check.name} (certain)", detail=prefix + check.detail)
    return None


def certain_failure(
    canary: Counters,
    stable: Counters,
    expressions: Sequence[str],
    min_requests: int = 50,
    alpha: float = 0.01,
) -> Verdict | None:
    """The early check, run between the interval's verdicts: a failing Verdict when the
    step's failure is already certain, else None (the interval's verdict decides).

    Certain means both:

    - **the step's own verdict fails now**: an error-rate expression, or the comparison of
      error rates with the stable track, fails on the requests so far, counting the ones
      still missing to reach `min_requests` as successes (the test `analyse` makes with too
      few requests); and
    - **beyond doubt**: at least `CERTAIN_ERRORS` errors, and a release failing
      `CERTAIN_MARGIN` (5 percentage points) more often than the line it failed — the
      stable track's error rate, or the expression's bound — would show that many errors
      in that many requests with a probability below `CERTAIN_ALPHA` (one in a thousand;
      exact binomial tail).

    The second keeps the early check to blatant failures: a canary failing 1% of its
    requests against 0.03% on stable is left to the interval's verdict, however many
    requests it has answered, while one answering 100% 5xx is certain at its third error.
    """
    parsed = [parse_expression(text) for text in expressions]
    needed = max(min_requests, 1)
    bad, n = _bad(canary), canary.requests
    if bad < CERTAIN_ERRORS:
        return None
    found = _failing_now(canary, stable, parsed, needed, alpha)
    if found is None:
        return None
    failing, line, against = found
    bound = min(1.0, line + CERTAIN_MARGIN)
    p = binomial_tail(bad, n, bound)
    if p >= CERTAIN_ALPHA:
        return None
    doubt = Check(
        "beyond doubt",
        False,
        f"{bad} errors in {n} requests",
        f"p >= {CERTAIN_ALPHA:g} at {_pct(bound)}",
        f"a release failing {_pp(CERTAIN_MARGIN)} percentage points more often than "
        f"{against}, {_pct(bound)} of its requests, would show {bad} or more errors in {n} "
        f"requests with probability {p:.2g} (exact binomial tail), below {CERTAIN_ALPHA:g}: "
        "the failure is certain, and no later request can make it a pass worth waiting for.",
    )
    gate = Check(
        "requests",
        True,
        str(n),
        f">= {CERTAIN_ERRORS} errors",
        f"the canary answered {n} requests in this step so far, {bad} of them errors: "
        "enough to tell a blatant failure, whatever the interval.",
    )
    return Verdict("fail", (gate, failing, doubt), n, stable.requests)


def _failing_now(
    canary: Counters,
    stable: Counters,
    expressions: Sequence[Expression],
    needed: int,
    alpha: float,
) -> tuple[Check, float, str] | None:
    """The step's own error-rate check that fails on the requests so far (padded with
    successes up to `needed`, as `analyse` would), the error rate it failed to stay
    within (the stable track's, or the expression's bound) and that line in words."""
    padded = canary.requests < needed
    if padded:
        check = _certain_failure(canary, stable, expressions, needed, alpha)
    else:
        check = None
        tracks = {"canary": canary, "stable": stable}
        for expression in expressions:
            if not all(t.signal == "error_rate" and not t.key.partition(".")[2] for t in
                       expression.tests):  # fmt: skip
                continue
            found = _expression_check(expression, tracks, None)
            if found.passed is False:
                check = replace(found, name=f"{found.name} (certain)")
                break
        if check is None and stable.requests >= needed:
            found = _error_rate_comparison(canary, stable, needed, alpha)
            if found.passed is False:
                check = replace(found, name=f"{found.name} (certain)")
    if check is None:
        return None
    if check.name.startswith("error_rate vs stable"):
        rate = _bad(stable) / stable.requests
        return check, rate, f"the stable track's {_pct(rate)}"
    text = check.name.removesuffix(" (certain)")
    expression = next(e for e in expressions if e.text == text)
    bounds = [t.threshold for t in expression.tests if t.threshold is not None]
    line = max(bounds, default=0.0)
    return check, line, f"the bound of {text}, {_pct(line)}"


def _outcome(checks: Sequence[Check]) -> Outcome:
    counted = [c.passed for c in checks if c.counts]
    if False in counted:
        return "fail"
    if None in counted:
        return "inconclusive"
    return "pass"
