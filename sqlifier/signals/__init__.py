"""Signals: samplers, router statistics and the log tailer feeding the series store.

Planned (see docs/architecture.md); the catalogue of built-in signal names and their
types lives in `sqlifier.lang.signals` because the checker needs it.
"""
