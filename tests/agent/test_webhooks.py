"""NOTIFY against real HTTP(S) servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sqlifier.agent.actions import rule_payload
from sqlifier.agent.executor import Executor
from sqlifier.agent.webhooks import (
    CLOSED,
    DROPPED,
    MAX_PENDING,
    NO_WEBHOOK,
    Delivery,
    Notifier,
    post_webhook,
)
from sqlifier.cli import scaffold
from sqlifier.delivery.rollout.messages import Notify
from sqlifier.engine.state import Command
from sqlifier.stack.stackfile import load_stack
from tests.servers import QuietServer, free_port

PY = shlex.quote(sys.executable)
WAIT = 10.0  # generous bound on waiting for something that happens at once


# -- a recording webhook --------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    path: str
    headers: Mapping[str, str]
    body: bytes


class Hook(QuietServer):
    """Records each POST and answers with the next of `statuses` (200 once they run out)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HookHandler)
        self.statuses: list[int] = []
        self.requests: list[Request] = []

    def url(self, path: str = "/hook", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.server_address[1]}{path}"


class _HookHandler(BaseHTTPRequestHandler):
    server: Hook

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(Request(self.path, dict(self.headers.items()), body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(server: Hook) -> Iterator[Hook]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)


@pytest.fixture
def hook() -> Iterator[Hook]:
    with serving(Hook()) as server:
        yield server


class Silent:
    """Accepts connections and never answers; counts them."""

    def __init__(self) -> None:
        self.connections = 0
        self.connected = asyncio.Event()
        self.disconnected = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.connected.set()
        try:
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):
                    pass
            self.disconnected.set()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[Silent, str]]:
    silent = Silent()
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield silent, f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        await server.wait_closed()


def post(url: str, payload: Mapping[str, Any] | None = None, **options: Any) -> Delivery:
    options.setdefault("backoff", 0)
    return asyncio.run(post_webhook(url, payload or {"rule": "r"}, **options))


# -- post_webhook ---------------------------------------------------------------------


def test_a_webhook_gets_one_json_post(hook: Hook) -> None:
    payload = {"rule": "cpu-high", "service": "web", "value": 93.5}
    assert post(hook.url("/hook?channel=ops"), payload) == Delivery(True, 1, "HTTP 200")
    [request] = hook.requests
    assert request.path == "/hook?channel=ops"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "sqlifier"
    assert json.loads(request.body) == payload


def test_values_json_cannot_encode_are_sent_as_text(hook: Hook) -> None:
    assert post(hook.url(), {"dir": Path("/srv/web")}).ok
    assert json.loads(hook.requests[0].body) == {"dir": "/srv/web"}


def test_credentials_in_the_url_become_basic_auth(hook: Hook) -> None:
    url = hook.url().replace("://", "://ops:s%40cret@")
    assert post(url).ok
    assert hook.requests[0].headers["Authorization"] == "Basic b3BzOnNAY3JldA=="  # ops:s@cret


def test_a_5xx_is_retried(hook: Hook) -> None:
    hook.statuses = [500]
    assert post(hook.url()) == Delivery(True, 2, "HTTP 200")
    assert [r.body for r in hook.requests] == [b'{"rule": "r"}'] * 2


def test_retries_stop_after_the_last_one(hook: Hook) -> None:
    hook.statuses = [500, 502, 503, 504]
    assert post(hook.url(), retries=2) == Delivery(False, 3, "HTTP 503")
    assert len(hook.requests) == 3


def test_a_4xx_is_not_retried(hook: Hook) -> None:
    hook.statuses = [404]
    assert post(hook.url()) == Delivery(False, 1, "HTTP 404")
    assert len(hook.requests) == 1


def test_a_server_that_never_answers_times_out_each_attempt() -> None:
    async def main() -> tuple[Delivery, int]:
        async with silent_server() as (silent, url):
            delivery = await post_webhook(url, {"rule": "r"}, timeout=0.3, backoff=0)
            return delivery, silent.connections

    assert asyncio.run(main()) == (Delivery(False, 3, "timed out after 0.3s"), 3)


def test_a_refused_connection_is_retried_then_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    assert post(url, retries=1) == Delivery(False, 2, "connection refused")


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("ftp://example.com/hook", "not an http(s) URL (scheme 'ftp')"),
        ("example.com/hook", "not an http(s) URL (scheme '')"),
        ("http://", "invalid webhook URL: no host"),
        ("http://127.0.0.1:99999/", "invalid webhook URL: Port out of range 0-65535"),
    ],
)
def test_an_unusable_url_is_reported_without_an_attempt(url: str, detail: str) -> None:
    assert post(url) == Delivery(False, 0, detail)


@pytest.fixture
def tls_hook(tmp_path: Path) -> Iterator[tuple[Hook, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Hook()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server, cert


def test_https_is_delivered_to_a_trusted_server(
    tls_hook: tuple[Hook, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cert = tls_hook
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the system trust store, as OpenSSL reads it
    assert post(server.url(scheme="https")) == Delivery(True, 1, "HTTP 200")
    assert json.loads(server.requests[0].body) == {"rule": "r"}


def test_an_untrusted_certificate_is_not_retried(tls_hook: tuple[Hook, Path]) -> None:
    server, _ = tls_hook
    assert post(server.url(scheme="https")) == Delivery(False, 1, "TLS: self-signed certificate")
    assert server.requests == []


# -- Notifier -------------------------------------------------------------------------


Results = list[tuple[Mapping[str, Any], Delivery]]


def recorder() -> tuple[Results, asyncio.Event, Callable[[Mapping[str, Any], Delivery], None]]:
    results: Results = []
    reported = asyncio.Event()

    def on_result(payload: Mapping[str, Any], delivery: Delivery) -> None:
        results.append((payload, delivery))
        reported.set()

    return results, reported, on_result


def test_the_notifier_delivers_in_the_background(hook: Hook) -> None:
    async def main() -> Results:
        results, reported, on_result = recorder()
        notifier = Notifier(hook.url(), 5.0, on_result)
        notifier.notify({"rule": "r"})
        async with asyncio.timeout(WAIT):
            await reported.wait()
        await notifier.close()
        return results

    assert asyncio.run(main()) == [({"rule": "r"}, Delivery(True, 1, "HTTP 200"))]
    assert len(hook.requests) == 1


def test_notify_returns_before_the_server_answers_and_close_cancels() -> None:
    async def main() -> None:
        results, _, on_result = recorder()
        async with silent_server() as (silent, url):
            notifier = Notifier(url, 60.0, on_result)
            notifier.notify({"rule": "r"})
            assert (results, notifier.pending) == ([], 1)
            async with asyncio.timeout(WAIT):
                await silent.connected.wait()  # the loop runs on while the delivery waits
            assert results == []
            await notifier.close()
            assert results == [({"rule": "r"}, Delivery(False, 0, CLOSED))]
            assert notifier.pending == 0
            async with asyncio.timeout(WAIT):
                await silent.disconnected.wait()  # the request was abandoned, not left open

    asyncio.run(main())


def test_notify_after_close_reports_the_payload_as_not_delivered(hook: Hook) -> None:
    async def main() -> Results:
        results, _, on_result = recorder()
        notifier = Notifier(hook.url(), 5.0, on_result)
        await notifier.close()
        notifier.notify({"rule": "late"})
        return results

    assert asyncio.run(main()) == [({"rule": "late"}, Delivery(False, 0, CLOSED))]
    assert hook.requests == []


def test_too_many_pending_notifications_drop_the_oldest() -> None:
    async def main() -> tuple[Results, int, Results]:
        results, _, on_result = recorder()
        async with silent_server() as (_, url):
            notifier = Notifier(url, 60.0, on_result)
            for n in range(MAX_PENDING + 1):
                notifier.notify({"n": n})
            dropped, pending = list(results), notifier.pending
            await notifier.close()
        return dropped, pending, results[1:]

    dropped, pending, closed = asyncio.run(main())
    assert dropped == [({"n": 0}, Delivery(False, 0, DROPPED))]
    assert DROPPED == "dropped: too many pending notifications"
    assert pending == MAX_PENDING == 100
    assert closed == [({"n": n}, Delivery(False, 0, CLOSED)) for n in range(1, MAX_PENDING + 1)]


def test_without_a_webhook_notify_only_reports() -> None:
    results, _, on_result = recorder()
    Notifier(None, 5.0, on_result).notify({"rule": "r"})
    assert results == [({"rule": "r"}, Delivery(False, 0, NO_WEBHOOK))]
    assert NO_WEBHOOK == "no [notify] webhook configured"


# -- the payloads: `text` for chat webhooks -------------------------------------------


def test_a_rules_notify_reaches_a_chat_webhook_as_text(hook: Hook) -> None:
    command = Command(
        firing=1,
        t=1700000000.0,
        rule="crit",
        service="pay",
        target="pay",
        verb="NOTIFY",
        detail="",
        reason="log_error() > 10",
        text="pay is failing: token s3cret",
    )
    payload = rule_payload("shop", "production", command, lambda s: s.replace("s3cret", "***"))
    assert post(hook.url(), payload).ok
    assert json.loads(hook.requests[0].body) == {
        "stack": "shop",
        "env": "production",
        "rule": "crit",
        "service": "pay",
        "message": "pay is failing: token ***",
        "reason": "log_error() > 10",
        "time": 1700000000.0,
        "text": "[shop/production] pay is failing: token *** (rule crit, service pay)",
    }


def test_a_deploy_notification_reaches_a_chat_webhook_as_text(hook: Hook, tmp_path: Path) -> None:
    for path, content in scaffold.files("shop").items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(content)
    stack, _ = load_stack(tmp_path / "sqlifier.toml")
    sent: list[dict[str, Any]] = []
    # Only the record's notification is exercised: no platform, releases or audit log.
    executor = Executor(stack, "dev", tmp_path, None, None, None, print, lambda: 5.0, sent.append)  # type: ignore[arg-type]
    run = SimpleNamespace(service="web", id="d-7", version="v2")
    executor.record(run, Notify("promote", "web v2 promoted"))  # type: ignore[arg-type]
    assert post(hook.url(), sent[0]).ok
    assert json.loads(hook.requests[0].body) == {
        "stack": "shop",
        "env": "dev",
        "service": "web",
        "deploy": "d-7",
        "event": "promote",
        "version": "v2",
        "message": "web v2 promoted",
        "time": 5.0,
        "text": "[shop/dev] web v2 promoted (deploy d-7)",
    }
