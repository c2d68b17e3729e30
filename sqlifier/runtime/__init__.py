"""The runtime: the supervisor of local processes, probes and instance identities.

Planned (see docs/architecture.md).
"""
