"""The engine's state across an agent restart: saved as JSON, loaded into a new engine."""

from __future__ import annotations

import json

from sqlifier.engine.compiled import CompiledRule, ServiceView
from sqlifier.engine.machine import Engine, State
from sqlifier.engine.persist import load_state, save_state
from sqlifier.engine.replay import compile_rules
from sqlifier.engine.series import SeriesStore
from sqlifier.lang import Source, parse_source

HOT = "RULE hot ON cpu() > 80% FOR 30s DO SCALE service.name TO instances + 1 COOLDOWN 60s;"


def compiled(text: str) -> list[CompiledRule]:
    parsed, diagnostics = parse_source(Source(text, "r.sql"))
    assert diagnostics == []
    return compile_rules([parsed])


class World:
    """One service, `web`, at 95% CPU (`fired_at` samples it every second, as the agent does)."""

    def __init__(self) -> None:
        self.store = SeriesStore()

    def service(self, name: str) -> ServiceView | None:
        return ServiceView("web", instances=2) if name == "web" else None


def fired_at(engine: Engine, world: World, start: int, end: int) -> list[int]:
    """The seconds in [start, end) at which the engine acted."""
    fired = []
    for t in range(start, end):
        world.store.put("web", "cpu", float(t), 0.95)
        if engine.tick(float(t), world, ["web"]).commands:
            fired.append(t)
    return fired


def restarted(saved: dict[str, object], text: str, now: float, saved_at: float) -> Engine:
    engine = Engine(compiled(text))
    load_state(engine, json.loads(json.dumps(saved)), now, saved_at=saved_at)
    return engine


def test_a_condition_held_before_a_short_restart_keeps_its_start() -> None:
    world = World()
    before = Engine(compiled(HOT))
    assert fired_at(before, world, 0, 20) == []
    after = restarted(save_state(before), HOT, now=25.0, saved_at=19.0)
    assert fired_at(after, world, 25, 40) == [30]


def test_after_a_long_gap_the_window_starts_again() -> None:
    world = World()
    before = Engine(compiled(HOT))
    fired_at(before, world, 0, 20)
    after = restarted(save_state(before), HOT, now=100.0, saved_at=19.0)
    assert fired_at(after, world, 100, 140) == [130]


def test_an_action_in_progress_counts_as_done_and_its_cooldown_starts() -> None:
    world = World()
    before = Engine(compiled(HOT))
    assert fired_at(before, world, 0, 31) == [30]
    after = restarted(save_state(before), HOT, now=40.0, saved_at=31.0)
    assert after.states[("hot", "web")].state is State.COOLDOWN
    assert after.states[("hot", "web")].cooldown_until == 100.0


def test_a_rule_whose_text_changed_starts_fresh() -> None:
    world = World()
    before = Engine(compiled(HOT))
    fired_at(before, world, 0, 31)
    changed = HOT.replace("FOR 30s", "FOR 20s")
    after = restarted(save_state(before), changed, now=40.0, saved_at=31.0)
    assert after.states == {}


def test_pauses_budgets_and_rollbacks_round_trip() -> None:
    engine = Engine(compiled(HOT))
    fired_at(engine, World(), 0, 31)
    engine.paused = {"hot"}
    engine.rolled_back = {("web", "v2")}
    saved = save_state(engine)
    again = restarted(saved, HOT, now=31.0, saved_at=31.0)
    assert save_state(again)["paused"] == ["hot"]
    assert save_state(again)["rolled_back"] == [["web", "v2"]]
    assert save_state(again)["budget"] == {"web": [30.0]}
    assert save_state(again)["scaled_up"] == {"web": 30.0}
