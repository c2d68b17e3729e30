"""The store: state and the audit log (SQLite by default).

Planned (see docs/architecture.md).
"""
