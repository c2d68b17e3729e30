"""The web dashboard: the stack, the rules and the deploys as they happen, served by the agent.

    browser ──HTTP──► web.py (h11; whole answers and server-sent events)
                         └─► app.Dashboard: pages (Jinja2 templates), /events, login, actions
                                ├─► views.py: what each page shows, read from a Source
                                └─► auth.py: one-time login codes, sessions, CSRF
    agent  ──Source──► status, engine, signal store and history, decisions, audit, deploys,
                       the redactor, and `call` (its own API, for actions)

The agent starts it beside its API on `[dashboard] listen` (127.0.0.1:9465 by default,
"off" for none); a taken port is reported, not fatal. Everything it sends — templates,
script, styles and the vendored chart library (uPlot, MIT, `static/uplot/LICENSE`) — is
in this package: the dashboard works offline. docs/dashboard.md is the user's guide.
"""

from __future__ import annotations

import asyncio

from sqlifier.dashboard.app import Dashboard
from sqlifier.dashboard.source import Source
from sqlifier.dashboard.web import serve

__all__ = ["Dashboard", "Source", "start"]


async def start(dashboard: Dashboard, host: str, port: int) -> asyncio.Server:
    """Listen for browsers on host:port (OSError when the address is taken)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve(reader, writer, dashboard.handle)

    return await asyncio.start_server(answer, host, port)
