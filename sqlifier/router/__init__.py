"""The data plane: the embedded router or HAProxy, routes, weights and drain.

`routes.py` holds the decisions both data planes share: which service a request goes to
(longest host/path prefix) and which track serves it (an exact, evenly spread canary
share). The data plane processes themselves are planned (see docs/architecture.md).
"""
