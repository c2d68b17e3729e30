"""Delivery: releases, push deploys, canary analysis, rollback, locks and approvals.

Built so far, as bricks the deploy flow is assembled from:

    releases.py   immutable releases from a git ref or a folder, built, kept for rollback
    locks.py      one lock per service and environment, stale ones reported
    analysis.py   the verdict of a rollout step: expressions and canary vs stable statistics

The flow itself (plan, approvals, canary rollout, abort, honest rollback, DORA) is being
built (see docs/architecture.md).
"""
