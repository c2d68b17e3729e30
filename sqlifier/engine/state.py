"""The engine's values: what a rule can be in, what it decided, what must be done.

`RuleState` is the one mutable record, the state of one rule for one service; the engine
changes it at each tick, `persist.py` saves and restores part of it and `explain.py` reads
it. Everything else here is an immutable value handed out of the engine.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KEEP_DECISIONS",
    "Command",
    "Decision",
    "RuleState",
    "Settings",
    "State",
    "TickResult",
]

KEEP_DECISIONS = 20  # per rule and service, in memory, for explanations


class State(enum.Enum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    COOLDOWN = "cooldown"
    NO_DATA = "no data"
    DRY_RUN = "dry run"
    PAUSED = "paused"
    BUDGET = "budget exhausted"


@dataclass(frozen=True, slots=True)
class Settings:
    scale_down_delay: float = 300.0
    action_budget: int = 10
    action_window: float = 600.0


@dataclass(frozen=True, slots=True)
class Decision:
    t: float
    rule: str
    service: str
    outcome: str  # fired | would fire | skipped | pending | no data | cleared | done | failed
    reason: str
    action: str | None = None  # the verb: SCALE, NOTIFY, ...
    detail: str | None = None  # "2 -> 4", the message, the command
    values: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "rule": self.rule,
            "service": self.service,
            "outcome": self.outcome,
            "reason": self.reason,
            "action": self.action,
            "detail": self.detail,
            "values": dict(self.values),
        }


@dataclass(frozen=True, slots=True)
class Command:
    """Something to do. `firing` groups the commands of one firing of one rule."""

    firing: int
    t: float
    rule: str
    service: str  # the service the rule was evaluated for
    target: str  # the service acted on
    verb: str  # SCALE RESTART ROLLBACK "ABORT ROLLOUT" ... NOTIFY RUN
    detail: str
    reason: str
    count: int | None = None  # SCALE: the new instance count
    previous: int | None = None  # SCALE: the count before
    to: str | None = None  # ROLLBACK: previous_stable | previous | a version
    text: str | None = None  # NOTIFY: the message; RUN: the command line
    env: Mapping[str, str] = field(default_factory=dict)  # RUN: the event
    release: str | None = None  # ROLLBACK: the release rolled back from


@dataclass(slots=True)
class TickResult:
    decisions: list[Decision] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)


@dataclass(slots=True)
class RuleState:
    """The state of one rule for one service."""

    state: State = State.INACTIVE
    held: dict[int, float] = field(default_factory=dict)  # level test -> true since
    restart: float = -math.inf  # events at or before this are out of the window
    cooldown_until: float | None = None
    running: int | None = None  # the firing whose commands are in progress
    last_fired: float | None = None
    pending_since: float | None = None
    values: dict[int, float | None] = field(default_factory=dict)
    note: str = ""  # why it is in its state, in words
    skip: str | None = None  # the last skip recorded, so that it is recorded once
    history: deque[Decision] = field(default_factory=lambda: deque(maxlen=KEEP_DECISIONS))
