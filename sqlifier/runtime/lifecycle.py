"""The life of one instance, as a pure state machine driven by events and a clock.

    starting ──startup ok──► ready ◄──readiness ok── unready
        │                      │ ──readiness fails──►  │
        └──── exits ───────────┴───────────────────────┴──► (restart policy)
                                                         ├─ restart after a backoff:
                                                         │   starting (first failure)
                                                         │   crashloop (failing again)
                                                         └─ stopped (policy says no)
    stop requested: stopping ──exits──► stopped

The supervisor feeds it events (`started`, `exited`, probe verdicts, `tick`) and carries
out the commands it returns; the machine itself never touches a process or a clock.
Backoff: 1 s, doubling to 60 s; reset once an instance has been up for 60 s.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sqlifier.stack.model import RestartPolicy

__all__ = [
    "BACKOFF_MAX",
    "BACKOFF_START",
    "HEALTHY_RESET",
    "Command",
    "Lifecycle",
    "State",
]

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
HEALTHY_RESET = 60.0


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    UNREADY = "unready"
    CRASHLOOP = "crashloop"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Command(enum.Enum):
    START = "start"  # launch the process now
    STOP = "stop"  # SIGTERM to the process group; SIGKILL after stop_timeout


@dataclass
class Lifecycle:
    """One instance's state; every method returns the commands to carry out."""

    name: str
    policy: RestartPolicy = RestartPolicy.ALWAYS
    has_startup_probe: bool = False
    state: State = State.STOPPED
    started_at: float | None = None
    restart_at: float | None = None
    backoff: float = BACKOFF_START
    failures: int = 0  # consecutive exits without HEALTHY_RESET seconds of uptime
    restarts: int = 0
    last_exit: int | None = None
    reason: str = "not started"
    startup_passed: bool = False
    wanted: bool = False
    probe_restart: bool = False  # a probe asked for this exit: restart whatever the policy
    history: list[tuple[float, State, str]] = field(default_factory=list)

    # --- requests -------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """Run this instance (again)."""
        self.wanted = True
        if self.state in (State.STOPPED, State.CRASHLOOP) and self.restart_at is None:
            return self._launch(now, "started")
        return []

    def stop(self, now: float) -> list[Command]:
        """Stop this instance and keep it stopped."""
        self.wanted = False
        self.restart_at = None
        if self.state in (State.STOPPED, State.STOPPING):
            return []
        if self.started_at is None:
            self._enter(now, State.STOPPED, "stopped before it started")
            return []
        self._enter(now, State.STOPPING, "stop requested")
        return [Command.STOP]

    # --- events ---------------------------------------------------------------------

    def exited(self, now: float, code: int | None, detail: str | None = None) -> list[Command]:
        """The process ended (`code` None when it could not even be launched, `detail`
        saying why)."""
        self.last_exit = code
        uptime = now - self.started_at if self.started_at is not None else 0.0
        self.started_at = None
        self.startup_passed = False
        forced, self.probe_restart = self.probe_restart, False
        if not self.wanted:
            self._enter(now, State.STOPPED, f"stopped (exit code {code})")
            return []
        if uptime >= HEALTHY_RESET:
            self.failures = 0
            self.backoff = BACKOFF_START
        what = detail or ("could not be started" if code is None else f"exited with code {code}")
        if forced:
            what = f"{self.reason} ({what})"
        elif self.policy is RestartPolicy.NEVER or (
            self.policy is RestartPolicy.ON_FAILURE and code == 0
        ):
            self._enter(now, State.STOPPED, f"{what}; restart = {self.policy.value}")
            return []
        self.failures += 1
        delay = self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self.restart_at = now + delay
        state = State.STARTING if self.failures == 1 else State.CRASHLOOP
        self._enter(now, state, f"{what}; restarting in {delay:g}s")
        return []

    def tick(self, now: float) -> list[Command]:
        """Time passed: start a restart that is due."""
        if self.restart_at is not None and now >= self.restart_at and self.wanted:
            self.restart_at = None
            self.restarts += 1
            return self._launch(now, "restarted")
        return []

    def startup(self, now: float, passed: bool) -> list[Command]:
        """The startup probe's verdict (or, without one, the process being up)."""
        if self.state is not State.STARTING and self.state is not State.CRASHLOOP:
            return []
        if passed:
            self.startup_passed = True
            self._enter(now, State.UNREADY, "started; waiting for readiness")
            return []
        return self._restart_for(now, "startup probe failed")

    def readiness(self, now: float, passed: bool) -> list[Command]:
        """Readiness: in or out of traffic; never kills."""
        if not self.startup_passed or self.state is State.STOPPING:
            return []
        if passed and self.state is not State.READY:
            self._enter(now, State.READY, "ready")
        elif not passed and self.state is State.READY:
            self._enter(now, State.UNREADY, "readiness probe failed")
        return []

    def liveness(self, now: float, passed: bool) -> list[Command]:
        """Liveness failures restart the instance (only after startup passed)."""
        if passed or not self.startup_passed or self.state is State.STOPPING:
            return []
        return self._restart_for(now, "liveness probe failed")

    # --- helpers --------------------------------------------------------------------

    def _restart_for(self, now: float, reason: str) -> list[Command]:
        """Stop the process; its exit is a failure restarted with backoff."""
        self.probe_restart = True
        self._enter(now, State.STOPPING, reason)
        return [Command.STOP]

    def _launch(self, now: float, why: str) -> list[Command]:
        self.started_at = now
        self.startup_passed = False
        state = State.CRASHLOOP if self.failures > 1 else State.STARTING
        self._enter(now, state, why)
        return [Command.START]

    def _enter(self, now: float, state: State, reason: str) -> None:
        self.state = state
        self.reason = reason
        self.history.append((now, state, reason))
