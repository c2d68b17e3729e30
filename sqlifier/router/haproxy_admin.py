"""Talking to a running HAProxy: one command on its admin socket, `show stat` read as
rows, and what a non-blocking socket holds (the request log's stream is read once a second,
whatever has gathered).
"""

from __future__ import annotations

import asyncio
import csv
import io
import socket
from pathlib import Path

from sqlifier.router.haproxy_config import HAProxyError

__all__ = ["admin", "drain", "parse_servers_state", "parse_stat", "unrouted"]


async def admin(path: Path, command: str, timeout: float = 5.0) -> str:
    """One command (or several joined by ';') on the admin socket; its answer."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()


def parse_stat(text: str) -> list[dict[str, str]]:
    """`show stat` CSV as one dict per row."""
    if not text.startswith("# "):
        raise HAProxyError(f"unexpected answer to show stat: {text[:200]!r}")
    return list(csv.DictReader(io.StringIO(text[2:])))


def parse_servers_state(text: str) -> list[dict[str, str]]:
    """`show servers state` (format 1: a version line, a `# names` line, rows) as one
    dict per server."""
    lines = text.splitlines()
    if len(lines) < 2 or lines[0].strip() != "1" or not lines[1].startswith("# "):
        raise HAProxyError(f"unexpected answer to show servers state: {text[:200]!r}")
    names = lines[1][2:].split()
    return [dict(zip(names, line.split(), strict=False)) for line in lines[2:] if line.strip()]


def drain(sock: socket.socket, most: int = 16) -> tuple[bytes, bool]:
    """What a non-blocking socket holds now (up to `most` MiB), and whether it is still
    open."""
    chunks: list[bytes] = []
    for _ in range(most):
        try:
            chunk = sock.recv(1024 * 1024)
        except BlockingIOError:
            break
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
    return b"".join(chunks), True


def unrouted(rows: list[dict[str, str]]) -> int:
    for row in rows:
        if row["pxname"] == "no-route" and row["svname"] == "BACKEND":
            return int(row["hrsp_4xx"] or 0)
    return 0
