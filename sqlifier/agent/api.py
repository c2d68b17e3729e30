"""The agent's HTTP API: a routing table, typed requests, one error shape.

    request ─► token ─► route (404, 405 + Allow) ─► JSON body ─► typed request (400)
            ─► endpoint ─► (status, JSON)

A route names its method, its path, the request class its body becomes (checked against
the route's schema in `openapi.py` first, `requests.py`) and the endpoint that answers
it. Every error the API makes has one shape, `{"error": "..."}`: 401 for a missing or
wrong token, 404 for a path it does not serve, 405 with `Allow` for a method a path does
not take, 400 for a body that is not JSON or does not match its schema (naming the
field), 413 for a body over 64 KiB, 408 for a request that has not arrived 10 s after its
connection opened, 503 for a connection beyond the 256 open at once, and 500 with an id for
a bug in an endpoint — the id and the traceback go to the agent's log (`runtime/http.py`
makes sure every request gets an answer before its connection closes).

Refusals that are outcomes rather than errors (an unknown rule, a deploy refused) answer
200 with `"ok": false` and the reason, as the CLI expects.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlifier.agent.openapi import body_schema
from sqlifier.agent.requests import BadBody, parse
from sqlifier.runtime.http import REQUEST_TIMEOUT, Gate, Incoming, Outgoing, serve

__all__ = ["BACKLOG", "Api", "Reply", "Route", "error"]

BACKLOG = 1024  # connections the kernel queues for the API before the agent accepts them
MAX_CONNECTIONS = 256  # open at once; the one beyond is answered 503

Reply = tuple[int, Any]  # a status and what becomes the JSON body
Endpoint = Callable[[Any, str], Awaitable[Reply]]  # (the typed request, who asks)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    request: type[Any]
    endpoint: Endpoint


def error(status: int, message: str) -> Outgoing:
    """The API's one error shape."""
    return _json(status, {"error": message})


class Api:
    """Answers the agent's requests from its routing table; one instance per agent run."""

    def __init__(
        self,
        token: str,
        routes: Iterable[Route],
        timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.token = token
        self.routes: dict[str, dict[str, Route]] = {}
        for route in routes:
            self.routes.setdefault(route.path, {})[route.method] = route
        self.timeout = timeout
        self.gate = Gate(max_connections)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer the one request of an accepted connection, then close it."""
        await serve(reader, writer, self.handle, error, timeout=self.timeout, gate=self.gate)

    async def handle(self, incoming: Incoming) -> Outgoing:
        """The answer to one request (an endpoint's exception is the server's 500)."""
        given = incoming.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
            return error(401, "missing or wrong token")
        path = incoming.target.split("?", 1)[0]
        methods = self.routes.get(path)
        if methods is None:
            return error(404, f"no such endpoint: {incoming.method} {path}")
        route = methods.get(incoming.method)
        if route is None:
            allowed = ", ".join(sorted(methods))
            answer = error(405, f"{incoming.method} is not allowed on {path}; use {allowed}")
            return Outgoing(answer.status, answer.body, headers=(("Allow", allowed),))
        try:
            body = json.loads(incoming.body or b"{}")
            request = parse(route.request, body_schema(path, route.method), body)
        except BadBody as exc:
            return error(400, str(exc))
        except ValueError as exc:
            return error(400, f"bad request: the body is not JSON: {exc}")
        except RecursionError:
            return error(400, "bad request: the body is nested too deeply")
        who = incoming.headers.get("x-sqlifier-user", "unknown")
        status, answer = await route.endpoint(request, who)
        return _json(status, answer)


def _json(status: int, body: Any) -> Outgoing:
    return Outgoing(status, json.dumps(body).encode())
