"""The rollout of one deploy or rollback, as a pure state machine.

Like the rule engine (`engine/machine.py`) and an instance's lifecycle
(`runtime/lifecycle.py`), a run never reads a clock and never touches a process or the
router: `run.step(now, observation)` returns the commands to carry out, in order, and
`run.deadline` says when it wants to be told the time again (`Tick`). The agent's
executor (`agent/executor.py`) carries the commands out through the platform seam and
feeds their answers back; the timeline tests (tests/delivery/test_rollout_*.py) feed
them on a virtual clock.

A deploy (`Rollout`), phase by phase (`Phase`: its value is the record's `state`):

    awaiting approval ──Approved──► approved ──► migrating (RunTask migrate, schema_version)
         │ deadline: expired                         │ failure: failed, no canary existed
         ▼                                           ▼
    starting canary (StartCanaries) ──► warming up (WarmRound, until p95 <= max_p95)
         ──► slow start (the first share ramps up) ──► step (SetShare, then judged every
         interval on ReadCounters: fail ─► aborting; pass after `pause` ─► next step;
         between verdicts, every half second, ReadCounters(early) for the early check:
         a certain failure ─► aborting, anything else changes nothing;
         too few requests for pause x 3 ─► paused, notified once; waiting for data)
         ──► baking (judged the same) ──► promoting (Promote) ──► complete (Retire)

    aborting: SetShare(0) first, always, even before the line of the verdict that failed;
    then the record, the release marked failed, a notification, and after the bake time
    StopCanaries ──► aborted

An abort comes from a failed verdict, a crash-looping canary, a canary that does not
start or warm up, ABORT ROLLOUT or a rollback pre-empting the rollout; asked for before
any canary exists, it waits for the migration to end. Pause and resume only mark the
run (`paused_by`): judging goes on, and a failure still aborts. A service without a
canary goes straight from migrating to `replacing` (Replace) ──► complete or aborted.

A rollback (`Rollback`): CountStable ──► StartCanaries (as many as the stable ones) ──►
warming up ──► Admit + Promote (all traffic on them in one update) ──► rolled back
(Retire); a target that does not start or warm up ends `failed` with the live release
untouched. Without a canary: Replace.

After an agent restart, a run is restored from its record (`Run.restore`) and told
`Readopted` with the canaries the new agent adopted: it goes on at its step, judging from
then on; where its canaries are gone or a migration or a replacement was cut off, it sets
the canary share to 0 first and pauses until `Resume` (or `Abort`). A rollback starts
again. Nothing ends `failed` only because the agent restarted.

Observations (`messages.py`) are what happened: Begin, Readopted, Tick, Approved, Abort,
Pause, Resume, Interrupted (the agent stops), CrashLooping, and the answers to commands
(TaskDone, StableCount, CanariesStarted, RoundDone, ShareSet, CountersRead, Promoted,
Replaced, CanariesStopped, Retired). A command with an answer is always the last of the
list it is in, and an answer the run stopped waiting for (it moved on meanwhile) changes
nothing. Commands are either on the platform (RunTask, CountStable, StartCanaries,
WarmRound, Admit, SetWeight, SetShare, ReadCounters, StopCanaries, Promote, Retire,
Replace) or on the record (Say, Notify, Event, Audit, MarkRelease, WentLive).
"""

from sqlifier.delivery.rollout.base import EPSILON, Run, WarmGate, canary_possible
from sqlifier.delivery.rollout.deploy import RAMP_EVERY, Rollout
from sqlifier.delivery.rollout.messages import TERMINAL, Command, Observation, Phase
from sqlifier.delivery.rollout.rollback import Rollback

__all__ = [
    "EPSILON",
    "RAMP_EVERY",
    "TERMINAL",
    "Command",
    "Observation",
    "Phase",
    "Rollback",
    "Rollout",
    "Run",
    "WarmGate",
    "canary_possible",
]
