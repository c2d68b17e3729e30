"""The agent's API against hostile or broken clients, on a real agent started with
`up --detach`: every request is answered in the API's one error shape, and the CLI keeps
answering while a crowd of idle connections is open."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apps import APP
from tests.conftest import run_sqlifier

WAIT = 30.0  # generous bound on what happens at once or within the agent's 10 s


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "app.py").write_text(APP)
    (root / "sqlifier.toml").write_text(
        f'[stack]\nname = "t"\n\n[services.web]\nrun = "{sys.executable} app.py"\n'
        'probes.readiness = { http = "/", period = "200ms" }\n'
    )
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr
    yield root
    run_sqlifier("down", cwd=root)


def socket_of(root: Path) -> str:
    return str(root / ".sqlifier" / "dev" / "agent.sock")


def head(root: Path, method: str, path: str, length: int | None, extra: str = "") -> bytes:
    token = (root / ".sqlifier" / "dev" / "token").read_text().strip()
    size = "" if length is None else f"Content-Length: {length}\r\n"
    return (
        f"{method} {path} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {token}\r\n"
        f"{size}{extra}\r\n"
    ).encode()


def parse(raw: bytes) -> tuple[int, Any]:
    top, _, body = raw.partition(b"\r\n\r\n")
    return int(top.split()[1]), json.loads(body)


def ask(root: Path, data: bytes, then: bytes = b"") -> tuple[int, Any]:
    """Send `data`, then `then` in 64 KiB pieces for as long as the agent reads them; the
    answer, whenever it comes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(WAIT)
        client.connect(socket_of(root))
        client.sendall(data)
        with contextlib.suppress(ConnectionError):
            for start in range(0, len(then), 65536):
                client.sendall(then[start : start + 65536])
        raw = b""
        while chunk := client.recv(65536):
            raw += chunk
    return parse(raw)


def test_a_wrong_typed_field_is_400_naming_it(stack: Path) -> None:
    body = b'{"service": ["web"]}'
    assert ask(stack, head(stack, "POST", "/v1/restart", len(body)) + body) == (
        400,
        {"error": "service must be a string"},
    )


def test_a_10_mb_body_is_413_without_being_read(stack: Path) -> None:
    body = b"x" * (10 * 1024 * 1024)
    expected = (413, {"error": "request body larger than 64 KiB"})
    assert ask(stack, head(stack, "POST", "/v1/scale", len(body)), body) == expected
    chunked = head(stack, "POST", "/v1/scale", None, "Transfer-Encoding: chunked\r\n")
    pieces = b"".join(b"10000\r\n" + b"x" * 65536 + b"\r\n" for _ in range(160))
    assert ask(stack, chunked, pieces) == expected


def test_an_idle_connection_is_answered_408(stack: Path) -> None:
    status, body = ask(stack, b"")
    assert (status, body) == (
        408,
        {"error": "request timeout: the request did not arrive within 10s"},
    )


def test_200_clients_at_once_are_all_answered(stack: Path) -> None:
    async def crowd() -> list[int]:
        request = head(stack, "GET", "/v1/status", 0)
        connections = await asyncio.gather(
            *(asyncio.open_unix_connection(socket_of(stack)) for _ in range(200))
        )
        for _, writer in connections:
            writer.write(request)
        answers = [parse(await reader.read())[0] for reader, _ in connections]
        for _, writer in connections:
            writer.close()
        return answers

    assert asyncio.run(asyncio.wait_for(crowd(), WAIT)) == [200] * 200


def test_the_cli_answers_while_300_idle_connections_are_open(stack: Path) -> None:
    async def idle_crowd_then_ps() -> tuple[int, str, list[int]]:
        connections = [await asyncio.open_unix_connection(socket_of(stack)) for _ in range(300)]
        ps = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "sqlifier"),
            "ps",
            cwd=stack,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await ps.communicate()
        statuses = [parse(await reader.read())[0] for reader, _ in connections]
        for _, writer in connections:
            writer.close()
        return ps.returncode or 0, (out + err).decode(), statuses

    code, shown, statuses = asyncio.run(asyncio.wait_for(idle_crowd_then_ps(), WAIT))
    assert code == 0, shown
    assert "web-0" in shown
    # The ones pushed out for newer connections got 503, the rest 408 when their time was up.
    assert set(statuses) == {408, 503}
