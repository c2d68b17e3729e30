"""Delivery: the parts of deploys the agent and the CLI share.

    releases.py   the releases of an environment: made, listed, marked, pruned
    records.py    a release as recorded, its status, and the service config kept with it
    sources.py    a release's files: from a git commit or a folder, hashed, read-only
    build.py      a release's build command, with a timeout and its output's tail
    plan.py       what a deploy would change, against the live release
    rollout/      the rollout of one deploy or rollback, a pure state machine: phases,
                  observations in, commands out (its package docstring tells the flow)
    analysis.py   the verdict of a rollout step: canary vs stable, thresholds and tests
    schema.py     may a rollback go back to a release, given the database's schema now
    locks.py      one lock per service and environment, stale ones reported
    approvals.py  who may deploy where; the two-person rule
    budget.py     what a spent error budget asks of a deploy (approver, freeze, slower canary)
    events.py     the deploy events written to the audit log
    dora.py       the four DORA figures from those events

The agent carries a rollout's commands out (`agent/executor.py`) through the platform
seam. Making a release (`sources.py`, `build.py`) reads git and runs the build command:
the CLI does it before anything that runs changes.
"""
