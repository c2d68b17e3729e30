"""The data plane: the embedded router or HAProxy, routes, weights and drain.

`routes.py` holds the decisions both data planes share: which service a request goes to
(longest host/path prefix) and which track serves it (an exact, evenly spread canary
share). `proxy.py` is the embedded data plane's HTTP/1.1 reverse proxy. Running it as its
own process beside the agent, HAProxy, drain and the measurements are planned (see
docs/architecture.md).
"""
