"""NOTIFY: the rules' and the deploys' messages posted to the `[notify]` webhook.

It reports what happened as a value and never raises for the outside world's failures
(a refused connection, a timeout): the caller records the value and carries on.

One JSON POST per message (`runtime/http.py`), retried on connection errors, timeouts
and 5xx, with a doubling backoff; every attempt is bounded, so a whole call takes at most
`(retries + 1) * timeout + backoff * (2**retries - 1)` seconds. `Notifier` runs deliveries
in the background so a rule never waits for a webhook.

Every payload, a rule's NOTIFY or a deploy's notification, carries `text`: the message as
one human line. Slack's, Teams' and Mattermost's incoming webhooks show that field and
ignore the rest, so they work without a relay; other receivers keep the structured fields.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from sqlifier.runtime import http

__all__ = [
    "CLOSED",
    "DROPPED",
    "MAX_PENDING",
    "NO_WEBHOOK",
    "Delivery",
    "Notifier",
    "chat_text",
    "post_webhook",
]

MAX_PENDING = 100  # background deliveries a Notifier holds before it drops the oldest
_URL_SAFE = "/:@!$&'()*+,;=%-._~?"  # kept as written in a request target; the rest is quoted

DROPPED = "dropped: too many pending notifications"
NO_WEBHOOK = "no [notify] webhook configured"
CLOSED = "cancelled: the notifier closed"


def chat_text(stack: str, env: str, message: str, about: str = "") -> str:
    """The payload's `text`: `[stack/env] message (about)`, the line a chat channel shows."""
    suffix = f" ({about})" if about else ""
    return f"[{stack}/{env}] {message}{suffix}"


@dataclass(frozen=True, slots=True)
class Delivery:
    ok: bool
    attempts: int
    detail: str  # "HTTP 200", "timed out after 5s", "connection refused", "HTTP 500"


@dataclass(frozen=True, slots=True)
class _Target:
    https: bool
    host: str
    port: int
    path: str  # the request target, quoted
    headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class _Outcome:
    ok: bool
    detail: str
    retry: bool


async def post_webhook(
    url: str,
    payload: Mapping[str, Any],
    timeout: float = 5.0,
    retries: int = 2,
    backoff: float = 1.0,
) -> Delivery:
    """POST `payload` as JSON to `url`; how it went, after at most `retries` retries.

    Each attempt (connect, TLS, send, status line) gets `timeout` seconds; the waits between
    attempts are `backoff`, `2 * backoff`, `4 * backoff`... Values JSON cannot encode are
    sent as their `str()`.
    """
    try:
        body = json.dumps(payload, default=str).encode()
    except ValueError as exc:  # a circular reference
        return Delivery(False, 0, f"payload is not JSON: {exc}")
    target = _target(url)
    if isinstance(target, str):
        return Delivery(False, 0, target)
    # Loading the trust store takes tens of milliseconds: not on the event loop.
    context = await asyncio.to_thread(ssl.create_default_context) if target.https else None
    attempt = 0
    while True:
        attempt += 1
        outcome = await _attempt(target, context, body, timeout)
        if outcome.ok or not outcome.retry or attempt > retries:
            return Delivery(outcome.ok, attempt, outcome.detail)
        await asyncio.sleep(backoff * 2 ** (attempt - 1))


def _target(url: str) -> _Target | str:
    """The parsed URL and request head, or why the URL cannot be used."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"invalid webhook URL: {exc}"
    if parts.scheme not in ("http", "https"):
        # Only the scheme: the URL may hold a token.
        return f"not an http(s) URL (scheme {parts.scheme!r})"
    if not parts.hostname:
        return "invalid webhook URL: no host"
    https = parts.scheme == "https"
    path = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_URL_SAFE)
    headers = [
        ("Host", parts.netloc.rpartition("@")[2]),
        ("User-Agent", "sqlifier"),
        ("Content-Type", "application/json"),
    ]
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers.append(("Authorization", "Basic " + base64.b64encode(secret.encode()).decode()))
    if not headers[0][1].isascii():
        return "invalid webhook URL: the host must be ASCII (use its xn-- form)"
    return _Target(https, parts.hostname, port or (443 if https else 80), path, tuple(headers))


async def _attempt(
    target: _Target, context: ssl.SSLContext | None, body: bytes, timeout: float
) -> _Outcome:
    """One request, bounded by `timeout`."""
    outcome: _Outcome | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context else None,
            )
            try:
                outcome = await _response(target, reader, writer, body)
            finally:
                await http.close(writer)
    except TimeoutError:
        if outcome is None:  # the answer came; only closing took too long
            return _Outcome(False, f"timed out after {timeout:g}s", True)
    except ssl.SSLCertVerificationError as exc:
        return _Outcome(False, f"TLS: {exc.verify_message}", False)
    except ssl.SSLError as exc:
        return _Outcome(False, f"TLS: {exc.reason or exc}", True)
    except OSError as exc:
        return _Outcome(False, _reason(exc), True)
    except ValueError as exc:  # a request h11 will not write (a control character)
        return _Outcome(False, f"invalid webhook URL: {exc}", False)
    assert outcome is not None
    return outcome


async def _response(
    target: _Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> _Outcome:
    """The outcome the answer's status gives (informational answers skipped)."""
    try:
        answer = await http.exchange(
            reader, writer, "POST", target.path, target.headers, body, read_body=False
        )
    except http.ClosedEarly:
        return _Outcome(False, "connection closed without a response", True)
    except http.NotHttp:
        return _Outcome(False, "not an HTTP response", False)
    status = answer.status
    return _Outcome(200 <= status < 300, f"HTTP {status}", status >= 500)


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


class Notifier:
    """Delivers NOTIFY payloads in the background; results go to `on_result`.

    `notify` never waits. At most MAX_PENDING deliveries are pending; beyond that the
    oldest is cancelled and reported as dropped. `on_result` is called exactly once per
    payload: with the delivery, or with ok=False when it was dropped or `close` cancelled it.
    """

    def __init__(
        self,
        url: str | None,
        timeout: float,
        on_result: Callable[[Mapping[str, Any], Delivery], None],
        *,
        retries: int = 2,
        backoff: float = 1.0,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._on_result = on_result
        self._retries = retries
        self._backoff = backoff
        self._pending: dict[asyncio.Task[None], Mapping[str, Any]] = {}
        self._closed = False

    @property
    def pending(self) -> int:
        """Deliveries started and not yet reported."""
        return len(self._pending)

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Start delivering `payload`; returns at once. Call it from the event loop."""
        if self._url is None:
            self._on_result(payload, Delivery(False, 0, NO_WEBHOOK))
            return
        if self._closed:
            self._on_result(payload, Delivery(False, 0, CLOSED))
            return
        if len(self._pending) >= MAX_PENDING:
            oldest = next(iter(self._pending))
            dropped = self._pending.pop(oldest)
            oldest.cancel()
            self._on_result(dropped, Delivery(False, 0, DROPPED))
        task = asyncio.get_running_loop().create_task(self._deliver(self._url, payload))
        self._pending[task] = payload

    async def close(self) -> None:
        """Cancel every pending delivery, report each as not delivered, and wait for them."""
        self._closed = True
        pending, self._pending = self._pending, {}
        for task in pending:
            task.cancel()
        for payload in pending.values():
            self._on_result(payload, Delivery(False, 0, CLOSED))
        if pending:
            await asyncio.wait(pending)

    async def _deliver(self, url: str, payload: Mapping[str, Any]) -> None:
        delivery = await post_webhook(url, payload, self._timeout, self._retries, self._backoff)
        # No await between here and the report: a task that got this far is never
        # also reported as dropped or cancelled.
        task = asyncio.current_task()
        if task is not None and self._pending.pop(task, None) is not None:
            self._on_result(payload, delivery)
