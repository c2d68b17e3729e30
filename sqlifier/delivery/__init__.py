"""Delivery: releases, push deploys, canary analysis, rollback, locks and approvals.

Planned (see docs/architecture.md).
"""
