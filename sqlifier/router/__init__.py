"""The data plane: the embedded router or HAProxy, routes, weights and drain.

Planned (see docs/architecture.md).
"""
