"""The rollout of a deploy as timelines: observations in, commands out, with exact times.

Every case runs the pure machine (`delivery.rollout.Rollout`) in a virtual world
(`rollout_world.World`): the clock jumps from one deadline to the next, the platform
answers at once unless a command is said to take time, and 20 requests a second flow
through the router, split by the canary's share. The service's rollout, unless a case
says otherwise: steps 10%, 50%, 100%; pause 30 s; judged every 10 s; bake 30 s; 50
requests needed; 2 stable instances.
"""

from __future__ import annotations

from sqlifier.delivery.rollout import Phase, Rollout
from sqlifier.delivery.rollout.messages import (
    Abort,
    Approved,
    Begin,
    CanariesStarted,
    CleanUpNow,
    CountersRead,
    CrashLooping,
    Interrupted,
    Pause,
    Readopted,
    Resume,
    ShareSet,
    StableCount,
    Tick,
)
from sqlifier.router.metrics import Counters
from sqlifier.stack.model import Service, Warmup
from tests.delivery.rollout_world import Traffic, World, service

START = [(0.0, "event deploy start"), (0.0, "say: deploy of v2 started by alice")]


def rollout(spec: Service | None = None, **options: object) -> Rollout:
    return Rollout("web", "v2", "v1", "alice", spec or service(), **options)  # type: ignore[arg-type]


def reads(start: float, end: float) -> list[tuple[float, str]]:
    """The counters read every 10 s from `start` to `end`, both included."""
    return [(float(t), "read counters") for t in range(int(start), int(end) + 1, 10)]


def test_a_good_release_goes_through_its_steps_bakes_and_is_promoted() -> None:
    world = World(rollout()).go()
    assert world.platform() == [
        (0.0, "count stable"),
        (0.0, "start canaries 1"),  # 10% of 2 instances: one canary
        (0.0, "admit web-0"),
        (0.0, "share 10"),
        *reads(0, 30),  # the step's start, then every interval; passed after `pause`
        (30.0, "share 50"),  # still one canary
        *reads(30, 60),
        (60.0, "start canaries 2"),
        (60.0, "admit web-1"),
        (60.0, "share 100"),
        *reads(60, 90),
        *reads(90, 120),  # the bake, judged the same
        (120.0, "promote"),
        (120.0, "retire web-0,web-1"),
    ]
    assert world.shown()[:3] == [*START, (0.0, "notify start")]
    assert world.shown(since=120.0) == [
        (120.0, "read counters"),
        (120.0, "say: step 3 at 100%: pass (requests 600)"),
        (120.0, "event rollout step"),
        (120.0, "notify step"),
        (120.0, "promote"),
        (120.0, "live v2"),
        (120.0, "event rollout complete"),
        (120.0, "notify promote"),
        (120.0, "say: complete"),
        (120.0, "say: promoted; stopping 2 old instance(s)"),
        (120.0, "retire web-0,web-1"),
    ]
    run = world.run
    assert (run.phase, run.promoted, run.weight, run.error) == (Phase.COMPLETE, True, 100.0, None)
    assert run.ended
    steps = [text for text in world.said() if text.startswith("step ") and "% of traffic" in text]
    assert steps == [
        "step 1/3: 10% of traffic",
        "step 2/3: 50% of traffic",
        "step 3/3: 100% of traffic",
    ]


def test_a_failing_step_aborts_at_its_first_judging_traffic_first() -> None:
    # The interval's verdict alone (the early check, off here, is in test_early_abort.py).
    spec = service(early_abort=False)
    world = World(rollout(spec), traffic=Traffic(canary_errors=0.5)).go()
    verdict = "error_rate vs stable (certain): 20% vs 0%"
    assert world.shown(since=10.0) == [
        (10.0, "read counters"),
        (10.0, "share 0"),  # before anything else, even the verdict's line
        (10.0, f"say: step 1 at 10%: fail ({verdict.replace(':', '')})"),
        (10.0, f"say: aborted: analysis failed: {verdict}; all traffic is back on v1"),
        (10.0, "event rollout abort"),
        (10.0, "mark v2 failed checks+failed_at+failed_reason"),
        (10.0, "notify abort"),
        (10.0, "say: stopping the canary in 30s"),
        (40.0, "stop canaries"),  # after the bake time
    ]
    run = world.run
    assert (run.phase, run.weight, run.detected_at, run.restored_at) == (
        Phase.ABORTED,
        0.0,
        10.0,
        10.0,
    )
    assert run.error == f"analysis failed: {verdict}"
    assert "share 50" not in [what for _, what in world.platform()]


def test_no_traffic_is_no_pass_the_rollout_pauses_after_pause_x3_and_says_so_once() -> None:
    world = World(rollout(), traffic=Traffic(rps=0)).go(until=300)
    assert world.platform() == [
        (0.0, "count stable"),
        (0.0, "start canaries 1"),
        (0.0, "admit web-0"),
        (0.0, "share 10"),
        *reads(0, 300),  # judged on, never passed
    ]
    paused = [(t, what) for t, what in world.shown() if what.split(" ")[0] in ("notify", "audit")]
    assert paused == [
        (0.0, "notify start"),
        (90.0, "notify pause"),
        (90.0, "audit rollout pause ok"),
    ]
    run = world.run
    assert run.phase is Phase.PAUSED
    assert run.paused_by == "analysis: too few requests after 90s (0 of 50)"
    assert world.said().count(f"paused: {run.paused_by}; resume it when traffic comes") == 1
    # It waits for data before: not paused at 30 s, when the step could have passed.
    assert "say: step 1 at 10%: inconclusive (0 canary requests)" in dict(world.shown()).values()

    world.at(300.0, Abort("aborted by bob: no traffic today")).resume(until=400)
    assert world.platform(since=300.0)[-2:] == [(300.0, "share 0"), (330.0, "stop canaries")]
    assert run.error == "aborted by bob: no traffic today"


def test_a_crash_looping_canary_aborts_the_rollout_at_once() -> None:
    looping = CrashLooping("web-0", "exited with code 1; restarting in 4s")
    world = World(rollout()).at(15.0, looping).go()
    assert world.platform(since=10.0) == [
        (10.0, "read counters"),
        (15.0, "share 0"),
        (45.0, "stop canaries"),
    ]
    assert world.run.phase is Phase.ABORTED
    assert world.run.error == "canary web-0 is crash looping: exited with code 1; restarting in 4s"


def test_a_crash_loop_while_canaries_start_is_for_the_start_to_report() -> None:
    # A canary that does not become ready fails StartCanaries itself.
    world = World(rollout(), took={"start": 5.0})
    world.at(1.0, CrashLooping("web-0", "exited")).go(until=5)
    assert world.platform()[1:4] == [
        (0.0, "start canaries 1"),
        (5.0, "admit web-0"),
        (5.0, "share 10"),
    ]


def slow_warmup() -> Service:
    return service(warmup=Warmup(requests=5, path="/", max_p95=0.1, timeout=10.0))


def never_warm(_instance: str, _round: int) -> tuple[tuple[float, ...], int]:
    return (0.5,) * 5, 0


def test_an_abort_during_the_warm_up_moves_no_traffic_and_admits_nothing() -> None:
    world = World(rollout(slow_warmup()), warm=never_warm, took={"warm": 1.0})
    world.at(2.5, Abort("aborted by bob: wrong build")).go()
    assert world.platform() == [
        (0.0, "count stable"),
        (0.0, "start canaries 1"),
        (0.0, "warm round web-0 x5"),
        (1.0, "warm round web-0 x5"),
        (2.0, "warm round web-0 x5"),
        (3.0, "share 0"),  # the round under way ended at 3 s; its answer changes nothing
        (33.0, "stop canaries"),
    ]
    assert world.run.error == "aborted by bob: wrong build"
    assert not [text for text in world.said() if "warm after" in text]


def test_a_canary_never_warm_within_the_timeout_takes_no_traffic() -> None:
    world = World(rollout(slow_warmup()), warm=never_warm, took={"warm": 4.0}).go()
    assert [what for _, what in world.platform()] == [
        "count stable",
        "start canaries 1",
        "warm round web-0 x5",
        "warm round web-0 x5",
        "warm round web-0 x5",
        "share 0",
        "stop canaries",
    ]
    assert world.first("share 0") == 12.0  # the first round to end past 10 s
    assert world.run.error == (
        "web-0 of v2 was not warm after 10s: p95 500ms over 5 requests (max_p95 100ms); "
        "it took no traffic"
    )


def test_a_slow_to_warm_canary_takes_traffic_once_warm() -> None:
    def warm_on_third(_instance: str, round_number: int) -> tuple[tuple[float, ...], int]:
        return ((0.05,) if round_number >= 3 else (0.3,)) * 5, 0

    world = World(rollout(slow_warmup()), warm=warm_on_third, took={"warm": 1.0}).go(until=5)
    assert world.shown()[4:12] == [
        (0.0, "start canaries 1"),
        (0.0, "warm round web-0 x5"),
        (1.0, "say: web-0 warming up: p95 300ms over 5 requests"),
        (1.0, "warm round web-0 x5"),
        (2.0, "say: web-0 warming up: p95 300ms over 5 requests"),
        (2.0, "warm round web-0 x5"),
        (3.0, "say: web-0 warm after 3 round(s): p95 50ms over 5 requests"),
        (3.0, "admit web-0"),
    ]


def test_a_canary_that_does_not_start_aborts_traffic_first() -> None:
    world = World(rollout(), start_error="web-0 did not become ready within 120s").go()
    assert world.platform() == [
        (0.0, "count stable"),
        (0.0, "start canaries 1"),
        (0.0, "share 0"),
        (30.0, "stop canaries"),
    ]
    assert world.run.error == "the canary did not start: web-0 did not become ready within 120s"


def test_a_rollback_during_a_rollout_is_its_abort_and_moves_traffic_at_once() -> None:
    world = World(rollout()).at(42.0, Abort("rollback asked for by root: looks wrong")).go()
    assert world.platform(since=40.0) == [
        (40.0, "read counters"),
        (42.0, "share 0"),
        (72.0, "stop canaries"),
    ]
    run = world.run
    assert (run.phase, run.detected_at, run.restored_at) == (Phase.ABORTED, 42.0, 42.0)
    assert run.error == "rollback asked for by root: looks wrong"
    # The last verdict's checks are recorded with the abort.
    assert world.shown(since=42.0)[3] == (42.0, "mark v2 failed checks+failed_at+failed_reason")


def test_a_migration_that_fails_stops_the_deploy_before_any_canary() -> None:
    spec = service(migrate="alembic upgrade head", schema_version="alembic current")
    world = World(rollout(spec), tasks={"migrate": (False, "exit 1: boom")}, took={"run": 5.0})
    world.go()
    why = (
        "the migration failed: exit 1: boom; no instance of v2 took traffic (the database "
        "may be partly migrated: check it before retrying)"
    )
    assert world.shown()[3:] == [
        (0.0, "say: migrate: alembic upgrade head"),
        (0.0, "run migrate"),
        (5.0, "mark v2 failed failed_at+failed_reason"),
        (5.0, "event rollout abort"),  # it started: DORA counts a failed deployment
        (5.0, f"say: failed: {why}"),
    ]
    assert (world.run.phase, world.run.error, world.run.ended) == (Phase.FAILED, why, True)


def test_a_migration_runs_then_the_schema_revision_is_recorded_before_the_canary() -> None:
    spec = service(migrate="alembic upgrade head", schema_version="alembic current")
    world = World(rollout(spec), tasks={"schema_version": (True, "0002_note (head)")})
    world.go(until=0)
    assert world.shown()[3:12] == [
        (0.0, "say: migrate: alembic upgrade head"),
        (0.0, "run migrate"),
        (0.0, "say: migrate: done"),
        (0.0, "mark v2 - migrated_at"),
        (0.0, "run schema_version"),
        (0.0, "say: schema revision: 0002_note"),
        (0.0, "mark v2 - schema"),
        (0.0, "count stable"),
        (0.0, "start canaries 1"),
    ]


def test_a_migration_that_already_ran_for_the_release_is_not_run_again() -> None:
    world = World(rollout(service(migrate="migrate.sh"), migrated=True)).go(until=0)
    assert (0.0, "say: migrate: already ran for this release") in world.shown()
    assert "run migrate" not in [what for _, what in world.shown()]


def test_an_abort_during_the_migration_waits_for_it_to_end() -> None:
    world = World(rollout(service(migrate="migrate.sh")), took={"run": 5.0})
    world.at(2.0, Abort("aborted by bob")).go()
    assert world.platform() == [(0.0, "run migrate"), (5.0, "share 0"), (35.0, "stop canaries")]
    assert (5.0, "mark v2 - migrated_at") in world.shown()  # it did run


def awaiting(**options: object) -> Rollout:
    return rollout(awaiting="production requires a second approval", expires=3600.0, **options)


def test_a_deploy_awaiting_approval_expires_at_its_deadline() -> None:
    world = World(awaiting()).go()
    assert world.shown() == [
        (0.0, "say: production requires a second approval"),
        (3600.0, "say: expired: no approver approved it in time"),
        (3600.0, "audit deploy expired"),
    ]
    assert (world.run.phase, world.run.ended) == (Phase.EXPIRED, True)


def test_an_approved_deploy_starts_when_approved() -> None:
    world = World(awaiting()).at(120.0, Approved("bob")).go(until=120)
    assert world.shown()[1:4] == [
        (120.0, "say: approved by bob"),
        (120.0, "event deploy start"),
        (120.0, "say: deploy of v2 started by alice"),
    ]
    assert world.run.approved_by == ["bob"]
    assert world.run.phase is Phase.STEP


def test_an_abort_while_awaiting_approval_ends_it_before_it_started() -> None:
    world = World(awaiting()).at(60.0, Abort("aborted by bob")).go()
    assert world.shown()[1:] == [(60.0, "say: aborted: aborted by bob before it started")]
    assert world.platform() == []


def test_after_an_agent_restart_a_deploy_awaiting_approval_waits_on_until_its_deadline() -> None:
    # A previous agent took the request at 0; this one starts at 1000.
    note = "the agent restarted: still awaiting approval"
    resumed = rollout(awaiting=note, expires=3600.0, approved_by=("alice",))
    world = World(resumed, now=1000.0).go()
    assert world.shown() == [
        (1000.0, f"say: {note}"),
        (3600.0, "say: expired: no approver approved it in time"),
        (3600.0, "audit deploy expired"),
    ]
    # One whose deadline passed while no agent ran expires as the new agent starts.
    late = World(rollout(awaiting=note, expires=3600.0), now=4000.0).go()
    assert late.shown()[0] == (4000.0, "say: expired: no approver approved it in time")


def test_a_rollout_the_agent_stops_during_ends_failed_and_counts_as_a_failed_deploy() -> None:
    world = World(rollout()).at(45.0, Interrupted("the agent stopped during the deploy")).go()
    assert world.shown(since=45.0) == [
        (45.0, "mark v2 failed failed_at+failed_reason"),
        (45.0, "event rollout abort"),
        (45.0, "say: failed: the agent stopped during the deploy"),
    ]
    assert (world.run.phase, world.run.ended) == (Phase.FAILED, True)


def test_pause_holds_a_passing_step_and_resume_lets_it_pass_at_the_next_judging() -> None:
    world = World(rollout()).at(5.0, Pause("bob: look at the logs"))
    world.at(45.0, Resume("bob")).go(until=60)
    assert world.shown(since=5.0)[:2] == [
        (5.0, "say: paused by bob: look at the logs"),
        (5.0, "notify pause"),
    ]
    assert (45.0, "say: resumed by bob") in world.shown()
    assert world.first("share 50") == 50.0  # not at 30 s: paused then
    assert world.first("event rollout step") == 50.0


def test_a_failure_while_paused_still_aborts() -> None:
    traffic = Traffic(canary_errors=0.5, errors_from=35.0)
    world = World(rollout(), traffic=traffic).at(5.0, Pause("bob")).go(until=100)
    assert world.first("share 0") == 40.0
    assert world.run.phase is Phase.ABORTED


def test_slow_start_ramps_the_first_share_and_each_later_canarys_weight() -> None:
    world = World(rollout(service(warmup=Warmup(slow_start=2.0)))).go(until=70)
    assert world.platform()[:10] == [
        (0.0, "count stable"),
        (0.0, "start canaries 1"),
        (0.0, "admit web-0"),
        (0.0, "weight web-0 100"),
        (0.0, "share 0.1"),
        (0.5, "share 2.5"),
        (1.0, "share 5"),
        (1.5, "share 7.5"),
        (2.0, "share 10"),
        (2.0, "read counters"),  # the step (and its pause) begins at the full share
    ]
    assert world.platform(since=62.0)[:9] == [
        (62.0, "read counters"),
        (62.0, "start canaries 2"),
        (62.0, "admit web-1"),
        (62.0, "weight web-1 1"),
        (62.0, "share 100"),
        (62.0, "read counters"),
        (62.5, "weight web-1 25"),
        (63.0, "weight web-1 50"),
        (63.5, "weight web-1 75"),
    ]
    assert world.first("weight web-1 100") == 64.0


def test_a_failure_during_the_bake_aborts_with_the_old_instances_still_running() -> None:
    # At 100% the stable track has no requests to compare with: an expression judges.
    traffic = Traffic(canary_errors=0.5, errors_from=95.0)
    world = World(rollout(service(analysis=("error_rate() < 5%",))), traffic=traffic).go()
    assert world.platform(since=90.0) == [
        (90.0, "read counters"),
        (90.0, "read counters"),  # the bake's start
        # 50% 5xx from 95 s: certain for the early check at 98 s, before the 100 s verdict
        (98.0, "share 0"),
        (128.0, "stop canaries"),
    ]
    assert (world.run.phase, world.run.promoted) == (Phase.ABORTED, False)


def test_a_service_without_a_canary_is_replaced_one_instance_at_a_time() -> None:
    world = World(rollout(service(routes=False))).go()
    assert world.shown()[3:] == [
        (0.0, "say: no canary for this service: replacing instances one at a time"),
        (0.0, "replace"),
        (0.0, "live v2"),
        (0.0, "event rollout complete"),
        (0.0, "notify promote"),
        (0.0, "say: complete"),
    ]
    assert world.run.phase is Phase.COMPLETE


def test_a_replacement_that_fails_is_aborted_with_every_instance_back() -> None:
    failed = World(rollout(service(routes=False)), replace_error="web-1 did not start").go()
    why = "web-1 did not start; every instance is back on v1"
    assert failed.shown()[-4:] == [
        (0.0, "replace"),
        (0.0, "event rollout abort"),
        (0.0, "mark v2 failed failed_at+failed_reason"),
        (0.0, f"say: aborted: {why}"),
    ]
    assert (failed.run.phase, failed.run.error) == (Phase.ABORTED, why)


def test_an_answer_the_rollout_does_not_await_changes_nothing() -> None:
    run = rollout()
    run.step(0.0, Begin())
    assert [type(c).__name__ for c in run.step(0.0, StableCount(2))] == ["StartCanaries"]
    assert run.step(1.0, ShareSet(10.0)) == []  # no share was asked for
    assert run.step(1.0, CountersRead(Counters(), Counters())) == []
    assert run.step(1.0, Tick()) == []  # nothing is due while the canaries start
    assert (run.phase, run.weight, run.step_ends) == (Phase.STARTING_CANARY, 0.0, None)
    assert [type(c).__name__ for c in run.step(2.0, CanariesStarted(("web-0",)))] == [
        "Admit",
        "SetShare",
    ]


def test_an_abort_while_canaries_start_stops_them_once_started_and_admits_none() -> None:
    world = World(rollout(), took={"start": 5.0}).at(2.0, Abort("aborted by bob")).go()
    assert world.platform() == [
        (0.0, "count stable"),
        (0.0, "start canaries 1"),
        (5.0, "share 0"),  # the start's answer, come after the abort, changes nothing
        (35.0, "stop canaries"),
    ]
    assert world.run.phase is Phase.ABORTED


def test_an_abort_while_a_share_is_being_set_waits_for_its_own_share_of_zero() -> None:
    world = World(rollout(), took={"share": 1.0}).at(0.5, Abort("aborted by bob")).go()
    assert world.platform()[3:5] == [(0.0, "share 10"), (1.0, "share 0")]
    # The answer to "share 10" is not taken for the abort's: the record waits for 0.
    assert world.first("say: aborted: aborted by bob; all traffic is back on v1") == 2.0
    assert world.run.restored_at == 2.0


# --- after an agent restart: the rollout goes on ------------------------------------------


def restored(state: str, step: int, weight: float, **options: object) -> Rollout:
    """The run as the record of an agent that died at 0 showed it; the next one starts at
    1000."""
    run = rollout(**options)
    record = {"state": state, "step": step, "steps": [10.0, 50.0, 100.0], "weight": weight}
    run.restore({**record, "approved_by": ["alice"], "paused_by": None})
    return run


def readopted(run: Rollout, canaries: tuple[str, ...], share: float, until: float) -> World:
    world = World(run, now=1000.0, canaries=len(canaries))
    world.share = share  # the router kept the share while no agent ran
    world.feed(Readopted(canaries))
    return world.resume(until)


def test_after_an_agent_restart_the_rollout_goes_on_at_its_step_judged_from_the_adoption() -> None:
    world = readopted(restored("step", 2, 50.0), ("web-0",), 50.0, until=10_000)
    assert world.shown()[0] == (
        1000.0,
        "say: the agent restarted: 1 canary instance(s) adopted at step 2/3 (50%); "
        "judging starts again",
    )
    assert world.platform() == [
        (1000.0, "count stable"),
        (1000.0, "share 50"),  # the step's share, as the router already had it
        *reads(1000, 1030),  # the step's whole pause again, from the adoption
        (1030.0, "start canaries 2"),
        (1030.0, "admit web-1"),
        (1030.0, "share 100"),
        *reads(1030, 1060),
        *reads(1060, 1090),
        (1090.0, "promote"),
        (1090.0, "retire web-0,web-1"),
    ]
    assert (world.run.phase, world.run.error) == (Phase.COMPLETE, None)
    assert "event rollout complete" in [what for _, what in world.shown()]


def test_after_an_agent_restart_during_the_bake_the_bake_starts_again() -> None:
    world = readopted(restored("baking", 3, 100.0), ("web-0", "web-1"), 100.0, until=10_000)
    assert world.platform() == [
        (1000.0, "count stable"),
        *reads(1000, 1030),
        (1030.0, "promote"),
        (1030.0, "retire web-0,web-1"),
    ]
    assert world.run.phase is Phase.COMPLETE


def test_after_an_agent_restart_without_its_canaries_traffic_goes_to_stable_then_it_pauses() -> (
    None
):
    world = readopted(restored("step", 2, 50.0), (), 50.0, until=1500)
    why = (
        "the agent restarted and the canary instances of v2 were gone; all traffic is on "
        "v1: `sqlifier rollout resume web` goes on, `sqlifier rollout abort web` ends the deploy"
    )
    assert world.shown() == [
        (1000.0, "share 0"),  # first
        (1000.0, f"say: paused: {why}"),
        (1000.0, "notify pause"),
        (1000.0, "audit rollout pause ok"),
    ]
    assert (world.run.phase, world.run.paused_by, world.share) == (Phase.PAUSED, why, 0.0)
    assert world.run.error is None  # never failed for the restart alone

    # Resumed: the step's canary starts again, warms up, and takes the step's share.
    world.at(1500.0, Resume("bob")).resume(until=1501)
    assert world.platform(since=1500.0) == [
        (1500.0, "count stable"),
        (1500.0, "start canaries 1"),
        (1500.0, "admit web-0"),
        (1500.0, "share 50"),
        (1500.0, "read counters"),
    ]
    assert world.run.paused_by is None

    # Or aborted: nothing more is moved, the run ends aborted.
    held = readopted(restored("step", 2, 50.0), (), 50.0, until=1500)
    held.at(1500.0, Abort("aborted by bob")).resume(until=10_000)
    assert held.run.phase is Phase.ABORTED
    assert held.run.error == "aborted by bob"


def test_a_rollout_paused_for_want_of_traffic_and_readopted_waits_again_after_resume() -> None:
    # It was paused for want of traffic when its agent died; the next agent adopts it at
    # its step, still paused (the record says so): the first verdict changes nothing.
    starved = "analysis: too few requests after 90s (0 of 50)"
    run = restored("paused", 1, 10.0)
    run.paused_by = starved
    world = World(run, now=1000.0, canaries=1, traffic=Traffic(rps=0))
    world.share = 10.0
    world.feed(Readopted(("web-0",)))
    world.resume(until=1035)
    assert (world.run.phase, world.run.paused_by) == (Phase.PAUSED, starved)
    # Traffic comes, slowly (0.8 canary requests a second), and the user resumes at 1040.
    # The step began at the adoption, 90 s before 1090, but the wait for enough requests
    # starts again from the resume: no new pause at 1090 (48 canary requests of 50), and
    # the step passes at 1100 with 56.
    world.traffic.rps = 8.0
    world.at(1040.0, Resume("bob")).resume(until=1200)
    assert world.run.paused_by is None
    assert "audit rollout pause ok" not in [what for _, what in world.shown(since=1040.0)]
    assert world.first("share 50") == 1100.0


def test_after_an_agent_restart_before_any_canary_the_deploy_goes_on_or_holds() -> None:
    # Approved, not started yet: it starts.
    world = readopted(restored("approved", 0, 0.0), (), 0.0, until=1000)
    assert world.platform()[:3] == [
        (1000.0, "count stable"),
        (1000.0, "start canaries 1"),
        (1000.0, "admit web-0"),
    ]
    # The migration was cut off: held, and resuming runs it again.
    spec = service(migrate="./migrate")
    world = readopted(restored("migrating", 0, 0.0, spec=spec), (), 0.0, until=1100)
    assert world.platform() == [(1000.0, "share 0")]
    assert "during the migration; check the database" in str(world.run.paused_by)
    world.at(1100.0, Resume("bob")).resume(until=1100)
    assert world.platform(since=1100.0)[:2] == [(1100.0, "run migrate"), (1100.0, "count stable")]
    # A replacement cut off (the instances are all back on v1): held, resumed replaces.
    spec = service(routes=False)
    world = readopted(restored("replacing", 0, 0.0, spec=spec), (), 0.0, until=1100)
    assert "every instance runs v1" in str(world.run.paused_by)
    world.at(1100.0, Resume("bob")).resume(until=1100)
    assert world.platform(since=1100.0) == [(1100.0, "replace")]
    assert world.run.phase is Phase.COMPLETE


def test_a_new_deploy_asked_for_stops_an_aborted_rollouts_canaries_at_once() -> None:
    # Aborted at 10 s, its canaries would stop after the bake (at 40 s); a new deploy of
    # the service asked for at 12 s has them stopped then, so the lock is free at once.
    world = World(rollout(), traffic=Traffic(canary_errors=0.5)).at(12.0, CleanUpNow()).go()
    assert world.shown(since=12.0) == [
        (12.0, "say: a new deploy is asked for: stopping the canary now"),
        (12.0, "stop canaries"),
    ]
    assert (world.run.phase, world.run.ended) == (Phase.ABORTED, True)
    # Asked for during a rollout, it changes nothing: the lock is the rollout's.
    world = World(rollout()).at(12.0, CleanUpNow()).go()
    assert world.run.phase is Phase.COMPLETE
    assert "a new deploy is asked for: stopping the canary now" not in world.said()


# --- the early check between verdicts (more in test_early_abort.py) -----------------------


def test_a_release_answering_only_5xx_at_a_60s_interval_is_off_the_traffic_within_a_second() -> (
    None
):
    spec = service(steps=(1.0, 10.0, 50.0, 100.0), pause=120.0, interval=60.0)
    traffic = Traffic(rps=600.0, canary_errors=1.0)  # 6 canary requests a second at 1%
    world = World(rollout(spec), traffic=traffic).go()
    first_error = 1 / 6  # the canary's first request, each one a 5xx
    assert world.platform(since=0.0, peeks=True)[3:8] == [
        (0.0, "share 1"),
        (0.0, "read counters"),  # the step begins
        (0.5, "peek counters"),  # 3 errors in 3 requests: certain
        (0.5, "share 0"),  # the abort's first command: traffic back on stable
        (30.5, "stop canaries"),
    ]
    assert world.first("share 0") - first_error <= 1.0
    assert world.run.error is not None and world.run.error.startswith("early analysis: ")


def test_one_percent_5xx_against_003_percent_is_judged_at_the_interval_only() -> None:
    spec = service(steps=(1.0, 10.0, 50.0, 100.0), pause=120.0, interval=60.0)
    traffic = Traffic(rps=2_000.0, canary_errors=0.01, stable_errors=0.0003)
    world = World(rollout(spec), traffic=traffic).go()
    assert world.platform() == [
        (0.0, "count stable"),
        (0.0, "start canaries 1"),
        (0.0, "admit web-0"),
        (0.0, "share 1"),
        (0.0, "read counters"),
        (60.0, "read counters"),  # the verdict fails it: 1% vs 0.03%, significant
        (60.0, "share 0"),
        (90.0, "stop canaries"),
    ]
    assert world.run.error is not None and world.run.error.startswith("analysis failed: ")
