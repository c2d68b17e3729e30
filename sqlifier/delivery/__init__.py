"""Delivery: releases, push deploys, canary analysis, rollback, locks and approvals.

Built so far, as bricks the deploy flow is assembled from:

    releases.py   immutable releases from a git ref or a folder, built, kept for rollback
    locks.py      one lock per service and environment, stale ones reported
    analysis.py   the verdict of a rollout step: expressions and canary vs stable statistics
    plan.py       what a deploy would change, against the live release
    approvals.py  who may deploy where; the two-person rule
    events.py     the deploy events written to the audit log
    dora.py       the four DORA figures from those events

The flow itself (the deploy command, canary rollout in the agent, abort, honest rollback,
migrations) is being built (see docs/architecture.md).
"""
