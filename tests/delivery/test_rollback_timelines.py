"""A rollback as timelines: the target release's instances start beside the live ones,
warm up, and take all the traffic in one update (see test_rollout_timelines.py for the
virtual world). During a rollout the rollback is the rollout's abort instead: that case
is `test_a_rollback_during_a_rollout_is_its_abort_and_moves_traffic_at_once` there."""

from __future__ import annotations

from sqlifier.delivery.rollout import Phase, Rollback
from sqlifier.delivery.rollout.messages import Readopted
from sqlifier.stack.model import Service, Warmup
from tests.delivery.rollout_world import World, service

WARM = Warmup(requests=3, path="/", max_p95=0.1, timeout=10.0)


def rollback(spec: Service | None = None) -> Rollback:
    return Rollback("web", "v1", "v2", spec or service(warmup=WARM))


def test_a_rollback_warms_the_target_then_moves_all_traffic_in_one_update() -> None:
    world = World(rollback(), took={"start": 2.0, "warm": 0.5}).go()
    assert world.shown() == [
        (0.0, "event rollback"),
        (0.0, "notify rollback"),
        (0.0, "count stable"),
        (0.0, "start canaries 2"),  # as many as the live release runs
        (2.0, "warm round web-0 x3"),
        (2.5, "say: web-0 warm after 1 round(s): p95 10ms over 1 requests"),
        (2.5, "warm round web-1 x3"),
        (3.0, "say: web-1 warm after 1 round(s): p95 10ms over 1 requests"),
        (3.0, "admit web-0,web-1"),
        (3.0, "promote"),
        (3.0, "mark v2 rolled back rolled_back_at+rolled_back_to"),
        (3.0, "live v1"),
        (3.0, "event rollback complete"),
        (3.0, "say: all traffic on v1; v2 drains and stops"),
        (3.0, "notify rollback"),
        (3.0, "say: rolled back"),
        (3.0, "retire web-0,web-1"),
    ]
    run = world.run
    assert (run.phase, run.detected_at, run.restored_at, run.weight) == (
        Phase.ROLLED_BACK,
        0.0,
        3.0,
        100.0,
    )


def test_a_target_that_does_not_warm_up_is_stopped_and_the_live_release_keeps_traffic() -> None:
    def cold(_instance: str, _round: int) -> tuple[tuple[float, ...], int]:
        return (0.5, 0.5, 0.5), 0

    world = World(rollback(), warm=cold, took={"warm": 6.0}).go()
    assert world.platform() == [
        (0.0, "count stable"),
        (0.0, "start canaries 2"),
        (0.0, "warm round web-0 x3"),
        (6.0, "warm round web-0 x3"),
        (12.0, "stop canaries"),
    ]
    assert world.run.phase is Phase.FAILED
    assert world.run.error == (
        "web-0 of v1 was not warm after 10s: p95 500ms over 3 requests (max_p95 100ms); "
        "it took no traffic; v2 still takes the traffic"
    )
    assert world.run.restored_at is None


def test_a_target_that_does_not_start_fails_with_the_live_release_untouched() -> None:
    world = World(rollback(), start_error="web-0 exited with code 1").go()
    assert world.platform() == [(0.0, "count stable"), (0.0, "start canaries 2")]
    assert (
        world.run.error == "v1 did not start: web-0 exited with code 1; v2 still takes the traffic"
    )


def test_a_service_without_a_canary_is_rolled_back_by_replacing_its_instances() -> None:
    world = World(rollback(service(routes=False))).go()
    assert world.platform() == [(0.0, "replace")]
    assert world.run.phase is Phase.ROLLED_BACK
    failed = World(rollback(service(routes=False)), replace_error="web-0 did not start").go()
    assert failed.run.error == "v1 did not start: web-0 did not start; v2 still runs"
    assert failed.run.phase is Phase.FAILED


def test_after_an_agent_restart_a_rollback_starts_again() -> None:
    run = rollback()
    run.restore({"state": "warming up", "detected_at": 5.0})
    world = World(run, now=1000.0)
    world.feed(Readopted())
    world.resume(until=10_000)
    assert world.shown()[:3] == [
        (1000.0, "say: the agent restarted: the rollback starts again"),
        (1000.0, "count stable"),
        (1000.0, "start canaries 2"),
    ]
    assert (world.run.phase, world.run.detected_at) == (Phase.ROLLED_BACK, 5.0)
    assert "event rollback" not in [what for _, what in world.shown()]  # counted once
