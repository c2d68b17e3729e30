"""The data plane: how requests reach the instances, embedded in Python or run by HAProxy.

Both data planes take the same desired state from the agent and answer with the same
counts; `control.py` is the one Protocol between them and the agent.

    state.py           what the agent wants: routes, backends with track and state, shares
    routes.py          the decisions both planes share: the route a request takes (longest
                       host/path prefix) and its track (an exact, evenly spread canary share)
    metrics.py         request counts by status class and a latency histogram
    control.py         the agent's side: JSON lines over a unix socket, one Protocol
    __main__.py        the data plane process (`python -m sqlifier.router`), either kind
    h1.py              HTTP/1.1 message syntax on bytes, without I/O
    proxy.py           the embedded plane: the reverse proxy and its state (design notes)
    client.py          a client's connection to it: requests read and answered in turn
    exchange.py        one request on its way, from its head to the end of the answer
    upstreams.py       connections to instances, pooled per backend; backends in rotation
    flow.py            writes gathered per loop turn; why a client's reading is paused
    haproxy.py         the HAProxy plane: starting, reloading and driving HAProxy
    haproxy_config.py  its generated configuration, maps and files
    haproxy_admin.py   its admin socket: commands, `show stat`, the request log's stream
    tls.py             TLS at the front door for both planes: certificates watched and
                       swapped without a dropped connection, the redirect, self-signed
    internal.py        services' internal addresses (`ORDERS_URL`), in both planes
"""
