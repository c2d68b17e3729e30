"""The engine's fast paths decide exactly what the full evaluation decides.

Rules of plain level tests (one, or several under AND / OR) and states that cannot change
at a tick (cooling down, acting, held but refused for the reason already recorded) are
answered without the full evaluation. Generated timelines run through two engines, one
with every fast path turned off, and must give the same decisions, states and notes.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from sqlifier.engine.machine import Engine, RuleState
from sqlifier.engine.replay import Replay, Sample, compile_rules
from sqlifier.lang import Source, check, parse_source
from sqlifier.lang.signals import LOG_LEVELS

RULES = """
RULE hot ON cpu() > 80% FOR 20s DO SCALE service.name TO instances + 1 LIMIT 4;
RULE cool ON cpu() > 60% FOR 10s DO NOTIFY 'warm {value}' COOLDOWN 30s;
RULE both ON rps() > 100 AND cpu() > 50% FOR 15s DO SCALE service.name TO instances + 2 LIMIT 5;
RULE either ON error_rate() > 5% OR latency(p99) > 300ms FOR 10s DO RESTART service.name;
RULE crit ON log_error(level='critical') > 3 FOR 30s DO ROLLBACK service.name TO previous_stable;
RULE quiet ON rps() < 10 FOR 30s IF service.name = 'b' DO SCALE service.name TO instances - 1 LIMIT 1;
"""
SERVICES = ("a", "b", "c")


class FullEngine(Engine):
    """Every rule through the full evaluation, every tick."""

    def _quiet(self, *args: object) -> bool:
        return False

    def _still_blocked(self, *args: object) -> bool:  # type: ignore[override]
        return False


def compiled() -> list:  # type: ignore[type-arg]
    source = Source(RULES, "r.sql")
    parsed, diagnostics = parse_source(source)
    assert diagnostics == []
    assert [d for d in check([(source, parsed)], None) if d.is_error] == []
    return compile_rules([parsed])


# A step every 5 seconds: one signal of one service, at a value around the rules' thresholds
# (base units), or that many critical log lines.
READINGS = [
    *(("cpu", v) for v in (0.3, 0.55, 0.7, 0.9)),
    *(("rps", v) for v in (5.0, 50.0, 150.0)),
    *(("error_rate", v) for v in (0.01, 0.1)),
    *(("latency_p99", v) for v in (0.1, 0.5)),
    *(("critical", v) for v in (0.0, 2.0, 5.0)),
]
STEP = st.tuples(st.sampled_from(SERVICES), st.sampled_from(READINGS))


def samples_of(steps: list[tuple[str, tuple[str, float]]]) -> list[Sample]:
    samples = []
    critical = float(LOG_LEVELS["critical"])
    for i, (service, (signal, value)) in enumerate(steps):
        t = float(i * 5)
        if signal == "critical":
            samples += [Sample(t, service, "log", critical, "boom")] * int(value)
        else:
            samples.append(Sample(t, service, signal, value))
    return samples


def replay(engine: type[Engine], samples: list[Sample], fast: bool) -> Replay:
    rules = compiled()
    if not fast:
        rules = [replace(r, simple=None, levels_only=False) for r in rules]
    run = Replay(rules, samples, dict.fromkeys(SERVICES, 2))
    run.engine = engine(run.rules, run.settings)
    run.run(start=0.0, until=samples[-1].t + 60 if samples else 60.0)
    return run


def states(run: Replay) -> dict[tuple[str, str], tuple[object, ...]]:
    def shown(s: RuleState) -> tuple[object, ...]:
        return (s.state, s.note, s.pending_since, s.cooldown_until, s.last_fired, s.skip)

    return {key: shown(s) for key, s in run.engine.states.items()}


@settings(max_examples=60, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=60))
def test_the_fast_paths_decide_as_the_full_evaluation(
    steps: list[tuple[str, tuple[str, float]]],
) -> None:
    samples = samples_of(steps)
    fast = replay(Engine, samples, fast=True)
    full = replay(FullEngine, samples, fast=False)
    assert fast.decisions == full.decisions
    assert states(fast) == states(full)
