"""An instance's life on a virtual clock: restarts, backoff, crash loops, probes, stops."""

from __future__ import annotations

from sqlifier.runtime.lifecycle import Command, Lifecycle, State
from sqlifier.stack.model import RestartPolicy


def started(now: float = 0.0, policy: RestartPolicy = RestartPolicy.ALWAYS) -> Lifecycle:
    life = Lifecycle("web-0", policy)
    assert life.start(now) == [Command.START]
    return life


def test_a_new_instance_starts_then_becomes_ready() -> None:
    life = started()
    assert life.state is State.STARTING
    life.startup(0.5, passed=True)
    assert life.state is State.UNREADY
    life.readiness(1.0, passed=True)
    assert life.state is State.READY


def test_the_first_crash_restarts_after_one_second() -> None:
    life = started()
    life.exited(5.0, code=1)
    assert (life.state, life.restart_at) == (State.STARTING, 6.0)
    assert life.tick(5.9) == []
    assert life.tick(6.0) == [Command.START]
    assert life.restarts == 1


def test_backoff_doubles_to_sixty_seconds_and_shows_a_crash_loop() -> None:
    life = started()
    now = 0.0
    delays = []
    for _ in range(9):
        life.exited(now, code=1)
        assert life.restart_at is not None
        delays.append(life.restart_at - now)
        now = life.restart_at
        life.tick(now)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert life.state is State.CRASHLOOP


def test_backoff_resets_after_sixty_seconds_up() -> None:
    life = started()
    for now in (1.0, 2.0, 4.0):
        life.exited(now, code=1)
        life.tick(life.restart_at or now)
    assert life.backoff == 8
    up_since = life.started_at or 0.0
    life.exited(up_since + 60, code=1)
    assert life.restart_at == up_since + 61
    assert life.state is State.STARTING


def test_restart_policies() -> None:
    never = started(policy=RestartPolicy.NEVER)
    never.exited(3.0, code=1)
    assert (never.state, never.restart_at) == (State.STOPPED, None)
    assert never.reason == "exited with code 1; restart = never"

    on_failure = started(policy=RestartPolicy.ON_FAILURE)
    on_failure.exited(3.0, code=0)
    assert on_failure.state is State.STOPPED
    on_failure.start(4.0)
    on_failure.exited(5.0, code=2)
    assert on_failure.restart_at == 6.0


def test_a_stop_is_not_a_crash() -> None:
    life = started()
    assert life.stop(10.0) == [Command.STOP]
    assert life.state is State.STOPPING
    life.exited(10.5, code=-15)
    assert (life.state, life.restart_at) == (State.STOPPED, None)


def test_readiness_failures_take_out_of_traffic_without_killing() -> None:
    life = started()
    life.startup(0.1, passed=True)
    life.readiness(1.0, passed=True)
    assert life.readiness(2.0, passed=False) == []
    assert life.state is State.UNREADY
    life.readiness(3.0, passed=True)
    assert life.state is State.READY


def test_no_readiness_or_liveness_verdict_before_startup_passes() -> None:
    life = started()
    assert life.readiness(1.0, passed=True) == []
    assert life.liveness(1.0, passed=False) == []
    assert life.state is State.STARTING


def test_liveness_failure_restarts_even_with_restart_never() -> None:
    life = started(policy=RestartPolicy.NEVER)
    life.startup(0.1, passed=True)
    assert life.liveness(30.0, passed=False) == [Command.STOP]
    assert life.state is State.STOPPING
    life.exited(30.2, code=-15)
    assert life.restart_at == 31.2
    assert life.reason.startswith("liveness probe failed")
    assert life.tick(31.2) == [Command.START]


def test_a_failing_startup_probe_restarts_with_backoff() -> None:
    life = started()
    assert life.startup(60.0, passed=False) == [Command.STOP]
    life.exited(60.1, code=-15)
    assert life.restart_at == 61.1


def test_a_command_that_cannot_launch_is_a_failure() -> None:
    life = started()
    life.exited(0.0, code=None)
    assert life.reason == "could not be started; restarting in 1s"
