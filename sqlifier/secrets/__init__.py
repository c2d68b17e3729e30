"""Secrets: references resolved just in time, never written to disk or logs.

Planned (see docs/architecture.md).
"""
