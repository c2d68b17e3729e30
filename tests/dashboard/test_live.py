"""The live stream of a page just loaded: it starts at the page's version, so the page is
not fetched again when nothing changed (a real Dashboard over a small stand-in Source: no
agent is needed for it; an injected clock, no waiting)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from sqlifier.dashboard import Dashboard
from sqlifier.dashboard.web import Request, Stream
from sqlifier.stack.stackfile import load_stack
from sqlifier.store.audit import AuditLog


class Source:
    def __init__(self, root: Path) -> None:
        (root / "sqlifier.toml").write_text(
            '[stack]\nname = "shop"\n[services.web]\nrun = "python3 app.py"\n'
        )
        self.stack, _ = load_stack(root / "sqlifier.toml")
        self.env = "dev"
        self.audit = AuditLog(root / "audit.db")

    def status(self) -> dict[str, Any]:
        return {"phase": "running", "instances": [], "router": None}

    def engine(self) -> None:
        return None

    def store(self) -> None:
        return None

    def history(self) -> None:
        return None

    def decisions(self) -> None:
        return None

    def deploys(self) -> list[dict[str, Any]]:
        return []

    def redact(self, text: str) -> str:
        return text

    async def call(self, method: str, path: str, body: dict[str, Any], who: str) -> Any:
        return 200, {}


def test_a_page_s_stream_starts_at_the_version_it_was_rendered_at(tmp_path: Path) -> None:
    board = Dashboard(Source(tmp_path), clock=lambda: 1_800_000_000.0)

    async def load() -> tuple[str, str, int]:
        page = await board.handle(Request("GET", "/", {}, {}, b""))
        assert not isinstance(page, Stream)
        shown = re.search(r'<body data-page="overview" data-version="(\d+)"', page.body.decode())
        assert shown is not None
        stream = await board.handle(Request("GET", "/events", {}, {}, b""))
        assert isinstance(stream, Stream)
        hello = (await anext(stream.chunks)).decode()
        await asyncio.sleep(0.05)  # the watcher's first look at the state
        version = board.version
        await stream.chunks.aclose()  # type: ignore[attr-defined]
        return shown.group(1), hello, version

    shown, hello, version = asyncio.run(load())
    assert f"data: {shown}\n" in hello
    assert version == int(shown)  # nothing changed: no change event, no second fetch
