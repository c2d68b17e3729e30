"""The CPU signal's window (`[engine] cpu_window`): a noisy but steady load makes no rule
with a FOR flap, a sustained one still fires, and a step in the load is seen within the
window.

The samplers and the rules are the agent's own (`Samplers`, the engine's replay on its
virtual clock, one tick a second); only the readings of the process are generated: the
process sampler (psutil's CPU times) is replaced by a generator of noisy readings, because
a real process whose CPU use jitters exactly as asked cannot be made on a shared machine.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sqlifier.engine.replay import Replay, Sample, compile_rules
from sqlifier.engine.series import SeriesStore
from sqlifier.lang import Source, check, parse_source
from sqlifier.runtime.lifecycle import State
from sqlifier.signals.samplers import CPU_WINDOW, InstanceSample, Samplers
from sqlifier.stack import load_stack
from sqlifier.stack.model import Service

Load = Callable[[float], float]  # time -> the share of a core used in the second up to it


class GeneratedReadings:
    """Stands in for `ProcessSampler`: each instance's CPU reading at `t` is `load(t)`."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.t = 0.0

    def sample(self, roots: dict[str, int], t: float) -> dict[str, InstanceSample]:
        return {key: InstanceSample(self.load(self.t), 50_000_000) for key in roots}


def readings(
    load: Load, seconds: int, tmp_path: Path, **window: float
) -> list[tuple[float, float]]:
    """The `cpu` series the samplers write for one instance of `web`, one step a second."""
    instance = SimpleNamespace(
        id="web-0_1",
        name="web-0",
        track="stable",
        service=SimpleNamespace(name="web"),
        launched=SimpleNamespace(pid=1),
        draining=False,
        life=SimpleNamespace(state=State.READY, restarts=0),
    )
    supervisor: Any = SimpleNamespace(
        all_instances=lambda: [instance],
        services={"web": Service("web", "web", tmp_path)},
        state_dir=tmp_path,
    )
    store = SeriesStore()
    samplers = Samplers(store, supervisor, clock=lambda: generated.t, **window)
    generated = GeneratedReadings(load)
    samplers.processes = generated  # type: ignore[assignment]
    for t in range(1, seconds + 1):
        generated.t = float(t)
        samplers.step(float(t))
    return store.recent("web", "cpu", 0.0)


def actions(rule: str, series: list[tuple[float, float]]) -> list[tuple[float, str]]:
    source = Source(rule, "r.sql")
    parsed, diagnostics = parse_source(source)
    assert diagnostics == []
    assert [d for d in check([(source, parsed)], None) if d.is_error] == []
    samples = [Sample(t, "web", "cpu", value) for t, value in series]
    replay = Replay(compile_rules([parsed]), samples, {"web": 1})
    return [(a.t, a.detail) for a in replay.run(start=0.0, until=series[-1][0])]


HOT = "RULE hot ON cpu() > 80% FOR 30s IF service.name = 'web' DO SCALE 'web' TO instances + 1 LIMIT 50;"


def noisy(level: float, jitter: float, seed: int) -> Load:
    """A steady load whose every one-second reading is off by up to `jitter`, at random."""
    rng = random.Random(seed)
    return lambda t: max(0.0, level + rng.uniform(-jitter, jitter))


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_load_below_the_threshold_fires_no_rule_with_a_for(
    tmp_path: Path, seed: int
) -> None:
    """65% of a core, each second anywhere from 40% to 90%: a fifth of the readings are
    above 80%, and an hour of them never holds above it for the 30 s of FOR."""
    raw = readings(noisy(0.65, 0.25, seed), 3600, tmp_path, cpu_window=1.0)
    assert sum(value > 0.8 for _, value in raw) > 0.15 * len(raw)  # the noise is real
    assert actions(HOT, readings(noisy(0.65, 0.25, seed), 3600, tmp_path)) == []


@pytest.mark.parametrize("seed", range(5))
def test_a_noisy_sustained_load_above_the_threshold_fires_once_per_for_or_so(
    tmp_path: Path, seed: int
) -> None:
    """92% of a core, each second anywhere from 79% to 100% and more: the rule fires, and
    again after each further FOR with few restarts of its window (it never flaps back and
    forth: each firing is a SCALE one more, LIMIT aside)."""
    fired = actions(HOT, readings(noisy(0.92, 0.13, seed), 600, tmp_path))
    assert fired, "a sustained load must fire"
    assert fired[0][0] <= 2 * 30 + CPU_WINDOW + 1
    assert len(fired) >= 10  # 600 s / 30 s at most 20; dips restart a window now and then
    assert all(later - earlier >= 30 for (earlier, _), (later, _) in pairwise(fired))


def step(at: float, before: float = 0.05, after: float = 0.95) -> Load:
    """A load that goes from `before` to `after` at `at` (a reading covering the moment
    gets its share of each)."""

    def load(t: float) -> float:
        share = min(max(t - at, 0.0), 1.0)
        return before * (1 - share) + after * share

    return load


@pytest.mark.parametrize(("window", "seen"), [(1.0, 101.0), (2.0, 102.0), (5.0, 103.0)])
def test_a_step_in_the_load_is_seen_within_the_window(
    tmp_path: Path, window: float, seen: float
) -> None:
    """The step at 100.3 s: the reading at 101 covers 0.7 s of it (68%)."""
    rule = (
        "RULE hot ON cpu() > 50% FOR 30s IF service.name = 'web' DO SCALE 'web' TO instances + 1;"
    )
    fired = actions(rule, readings(step(100.3), 200, tmp_path, cpu_window=window))
    assert fired[0][0] == seen + 30


def test_the_default_window_is_the_stack_files_and_a_window_is_whole_intervals(
    tmp_path: Path,
) -> None:
    (tmp_path / "sqlifier.toml").write_text('[stack]\nname = "w"\n\n[services.web]\nrun = "x"\n')
    stack, _ = load_stack(tmp_path / "sqlifier.toml")
    assert stack.engine.cpu_window == CPU_WINDOW == 2.0
    store: Any = SeriesStore()
    assert Samplers(store, None).cpu_readings == 2  # type: ignore[arg-type]
    assert Samplers(store, None, cpu_window=5.0).cpu_readings == 5  # type: ignore[arg-type]
    assert Samplers(store, None, cpu_window=0.3).cpu_readings == 1  # type: ignore[arg-type]
    assert Samplers(store, None, cpu_window=4, interval=2).cpu_readings == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ('cpu_window = "10m"', "engine.cpu_window must be at most 5m, found '10m'"),
        ('cpu_window = "0s"', "engine.cpu_window must be longer than zero"),
        ("cpu_window = 5", "engine.cpu_window must be a duration"),
    ],
)
def test_a_bad_cpu_window_is_an_error_at_its_line(
    tmp_path: Path, written: str, message: str
) -> None:
    from sqlifier.errors import DiagnosticsError

    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "w"\n\n[engine]\n{written}\n\n[services.web]\nrun = "x"\n'
    )
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(tmp_path / "sqlifier.toml")
    (found,) = caught.value.diagnostics
    assert (found.line, found.col) == (5, 14)
    assert message in found.message


def test_a_stack_file_sets_the_window(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(
        '[stack]\nname = "w"\n\n[engine]\ncpu_window = "5s"\n\n[services.web]\nrun = "x"\n'
    )
    stack, _ = load_stack(tmp_path / "sqlifier.toml")
    assert stack.engine.cpu_window == 5.0
