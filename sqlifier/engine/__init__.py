"""The rule engine: one pure state machine per rule and service, driven by a clock.

Planned (see docs/architecture.md).
"""
