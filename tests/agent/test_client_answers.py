"""The client reads the agent's answer with the standard library only: every framing of
HTTP/1.1 (Content-Length, chunks, the end of the connection), interim answers, and a
malformed answer refused with a message. Each answer comes from a real unix socket, sent
as written here, byte for byte; and from the real agent's HTTP side (h11) in test_api.py.

`sqlifier ps` against a running agent reads neither the stack file's model nor h11."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.agent.client import AgentClient
from sqlifier.errors import UserError
from tests.conftest import run_sqlifier


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    (tmp_path / "token").write_text("t0ken\n")
    return tmp_path


def _serve_once(state_dir: Path, answer: bytes) -> Iterator[list[bytes]]:
    """A unix socket that reads one request, sends `answer` in small pieces and closes."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(state_dir / "agent.sock"))
    server.listen(1)
    seen: list[bytes] = []

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            head, _, body = request.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            while len(body) < length:
                body += connection.recv(65536)
            seen.append(request)
            for start in range(0, len(answer), 7):  # pieces that cut lines and sizes apart
                connection.sendall(answer[start : start + 7])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield seen
    thread.join(timeout=10)
    server.close()


def ask(state_dir: Path, answer: bytes) -> tuple[object, bytes]:
    serving = _serve_once(state_dir, answer)
    seen = next(serving)
    try:
        return AgentClient(state_dir, "dev", timeout=10).request("GET", "/v1/status"), seen[0]
    finally:
        next(serving, None)


BODY = b'{"instances": [], "note": "caf\xc3\xa9"}'


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(BODY), BODY),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
        + BODY[:5]
        + b"\r\n%x;ext=1\r\n" % (len(BODY) - 5)
        + BODY[5:]
        + b"\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + BODY,  # until closed
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s"
        % (len(BODY), BODY),
    ],
    ids=["content-length", "chunked", "until-close", "interim-100"],
)
def test_every_framing_of_an_answer_is_read(state_dir: Path, answer: bytes) -> None:
    data, request = ask(state_dir, answer)
    assert data == {"instances": [], "note": "café"}
    assert request.startswith(b"GET /v1/status HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer t0ken\r\n" in request
    assert b"\r\nConnection: close\r\n" in request


def test_an_error_status_is_the_agents_message(state_dir: Path) -> None:
    body = b'{"error": "no service named wbe"}'
    with pytest.raises(UserError, match="no service named wbe"):
        ask(
            state_dir, b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTQ/1.1 200 OK\r\n\r\n{}", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n{}", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 200 OK\r\nBad\r\n\r\n{}", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n{}", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\n X: a\r\n\r\n{}", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n{}", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n{}", "unknown transfer coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n", "longer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "closed before the whole answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "closed before a complete answer"),
        (b"HTTP/1.1 200 OK\r\n\r\nnot json", "broke off GET /v1/status"),
    ],
)
def test_a_malformed_answer_is_refused_with_a_message(
    state_dir: Path, answer: bytes, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        ask(state_dir, answer)


def test_ps_against_a_running_agent_reads_neither_the_stack_model_nor_h11(tmp_path: Path) -> None:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "app.py").write_text(
        "import os, socket, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
        "time.sleep(600)\n"
    )
    (tmp_path / "sqlifier.toml").write_text(
        '[stack]\nname = "p"\nrules = []\n\n[metrics]\nlisten = "off"\n\n'
        '[services.web]\nsource = "web"\nrun = "python3 app.py"\n'
    )
    up = run_sqlifier("up", "--detach", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    try:
        script = (
            "import json, sys\nfrom sqlifier.cli.main import run\n"
            "code = run(['ps', '--json'])\nprint(json.dumps([code, sorted(sys.modules)]))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        code, loaded = json.loads(done.stdout.splitlines()[-1])
        assert code == 0
        assert '"instance": "web-0"' in done.stdout
        heavy = ("h11", "sqlifier.stack.model", "sqlifier.stack.stackfile", "tomllib")
        assert [name for name in heavy if name in loaded] == []
    finally:
        run_sqlifier("down", cwd=tmp_path)
