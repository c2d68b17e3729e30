"""The agent: one process per stack and environment that ties everything together.

Planned (see docs/architecture.md).
"""
