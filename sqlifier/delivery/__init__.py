"""Delivery: the parts of deploys the agent and the CLI share.

    releases.py   the releases of an environment: made, listed, marked, pruned
    records.py    a release as recorded, its status, and the service config kept with it
    sources.py    a release's files: from a git commit or a folder, hashed, read-only
    build.py      a release's build command, with a timeout and its output's tail
    plan.py       what a deploy would change, against the live release
    analysis.py   the verdict of a rollout step: expressions and canary vs stable statistics
    schema.py     may a rollback go back to a release, given the database's schema now
    locks.py      one lock per service and environment, stale ones reported
    approvals.py  who may deploy where; the two-person rule
    events.py     the deploy events written to the audit log
    dora.py       the four DORA figures from those events

The rollout itself runs in the agent (agent/deployer.py).
"""
