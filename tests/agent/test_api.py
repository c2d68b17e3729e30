"""The agent's API over a real unix socket: routing, typed requests, one error shape.

The API object and its server path (`runtime/http.py`) are the agent's own; the routes
here are small endpoints of the test's, so each error can be provoked on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sqlifier.agent.api import Api, Reply, Route
from sqlifier.agent.client import AgentClient
from sqlifier.agent.endpoints import Endpoints
from sqlifier.agent.files import agent_files
from sqlifier.agent.openapi import OPENAPI
from sqlifier.agent.requests import Empty, Scale, Traffic
from sqlifier.errors import UserError
from sqlifier.runtime import http

TOKEN = "secret-token"
WAIT = 10.0


class Calls:
    def __init__(self) -> None:
        self.seen: list[tuple[object, str]] = []

    async def echo(self, request: Any, who: str) -> Reply:
        self.seen.append((request, who))
        return 200, {"ok": True, **dataclasses.asdict(request)}

    async def boom(self, request: Empty, who: str) -> Reply:
        raise RuntimeError("a bug")


class Served:
    """The API served on a unix socket by an event loop in a thread."""

    def __init__(self, state_dir: Path, **limits: Any) -> None:
        self.calls = Calls()
        routes = [
            Route("POST", "/v1/scale", Scale, self.calls.echo),
            Route("POST", "/v1/traffic", Traffic, self.calls.echo),
            Route("GET", "/v1/status", Empty, self.calls.echo),
            Route("GET", "/v1/boom", Empty, self.calls.boom),
        ]
        self.api = Api(TOKEN, routes, **limits)
        self.files = agent_files(state_dir)
        self.files["token"].write_text(TOKEN)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None

    def start(self) -> None:
        self.thread.start()
        opening = asyncio.start_unix_server(self.api.serve, path=str(self.files["socket"]))
        self.server = asyncio.run_coroutine_threadsafe(opening, self.loop).result(WAIT)

    def stop(self) -> None:
        async def close() -> None:
            assert self.server is not None
            self.server.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()

    def raw(self, data: bytes) -> bytes:
        """Send `data` as it is; everything the agent answers until it closes."""

        async def exchange() -> bytes:
            reader, writer = await asyncio.open_unix_connection(str(self.files["socket"]))
            writer.write(data)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer

        return asyncio.run(asyncio.wait_for(exchange(), WAIT))

    def ask(self, method: str, path: str, body: bytes = b"{}", token: str = TOKEN) -> Answer:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {token}\r\n"
            f"X-Sqlifier-User: tester\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return Answer.parse(self.raw(head.encode() + body))


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @classmethod
    def parse(cls, raw: bytes) -> Answer:
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        fields = [line.split(": ", 1) for line in lines[1:]]
        headers = {name.lower(): value for name, value in fields}
        assert int(headers["content-length"]) == len(body)
        kind = headers["content-type"]
        return cls(int(lines[0].split()[1]), headers, json.loads(body) if "json" in kind else body)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- routing ----------------------------------------------------------------------------


def test_a_request_reaches_its_endpoint_as_a_typed_value(served: Served) -> None:
    answer = served.ask("POST", "/v1/scale", b'{"service": "web", "instances": 3, "x": 1}')
    assert (answer.status, answer.body) == (200, {"ok": True, "service": "web", "instances": 3})
    assert served.calls.seen == [(Scale("web", 3), "tester")]


def test_a_wrong_method_is_405_naming_the_allowed_one(served: Served) -> None:
    answer = served.ask("GET", "/v1/scale")
    assert answer.status == 405
    assert answer.headers["allow"] == "POST"
    assert answer.body == {"error": "GET is not allowed on /v1/scale; use POST"}
    assert served.calls.seen == []


def test_an_unknown_path_is_404(served: Served) -> None:
    answer = served.ask("POST", "/v1/nothing")
    assert (answer.status, answer.body) == (404, {"error": "no such endpoint: POST /v1/nothing"})


def test_a_missing_or_wrong_token_is_401_before_anything_else(served: Served) -> None:
    answer = served.ask("GET", "/v1/nothing", token="guess")
    assert (answer.status, answer.body) == (401, {"error": "missing or wrong token"})


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/scale", b'{"service": "web"}', "instances is required"),
        ("/v1/scale", b'{"service": "web", "instances": null}', "instances is required"),
        ("/v1/scale", b'{"service": 7, "instances": 1}', "service must be a string"),
        (
            "/v1/scale",
            b'{"service": "", "instances": 1}',
            "service must not be empty",
        ),
        (
            "/v1/scale",
            b'{"service": "web", "instances": 1001}',
            "instances must be a whole number from 0 to 1000",
        ),
        (
            "/v1/scale",
            b'{"service": "web", "instances": true}',
            "instances must be a whole number from 0 to 1000",
        ),
        (
            "/v1/traffic",
            b'{"service": "web", "canary_percent": 100.5}',
            "canary_percent must be a number from 0 to 100",
        ),
        ("/v1/scale", b"[1, 2]", "the body must be a JSON object"),
    ],
)
def test_a_body_that_does_not_match_its_schema_is_400_naming_the_field(
    served: Served, path: str, body: bytes, message: str
) -> None:
    answer = served.ask("POST", path, body)
    assert (answer.status, answer.body) == (400, {"error": message})
    assert served.calls.seen == []


def test_a_body_that_is_not_json_is_400(served: Served) -> None:
    answer = served.ask("POST", "/v1/scale", b"{service")
    assert answer.status == 400
    assert answer.body["error"].startswith("bad request: the body is not JSON: ")


# -- failures never close the connection without an answer --------------------------------


def test_a_bug_is_a_500_with_an_id_also_in_the_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="sqlifier.http"):
        answer = served.ask("GET", "/v1/boom")
    assert answer.status == 500
    ident = answer.body["error"].split()[2].rstrip(":")
    assert answer.body == {
        "error": f"internal error {ident}: a bug in sqlifier; the agent's log has it"
    }
    [record] = caplog.records
    assert record.getMessage() == f"error {ident} answering GET /v1/boom"
    assert record.exc_info is not None and str(record.exc_info[1]) == "a bug"


def test_a_request_that_is_not_http_is_answered_400(served: Served) -> None:
    answer = Answer.parse(served.raw(b"GARBAGE\r\n\r\n"))
    assert answer.status == 400
    assert answer.body["error"].startswith("bad request: ")


@pytest.mark.parametrize("size", [http.MAX_HEAD, 4 * http.MAX_HEAD])
def test_a_head_too_large_is_answered_431(served: Served, size: int) -> None:
    head = b"GET /v1/status HTTP/1.1\r\nHost: agent\r\nX-Big: " + b"a" * size
    answer = Answer.parse(served.raw(head + b"\r\n\r\n"))
    assert (answer.status, answer.body) == (431, {"error": "request header fields too large"})


def test_a_body_over_the_limit_is_answered_413_without_reading_it(served: Served) -> None:
    head = b"POST /v1/scale HTTP/1.1\r\nHost: agent\r\nContent-Length: 70000\r\n\r\n"
    answer = Answer.parse(served.raw(head))
    assert (answer.status, answer.body) == (413, {"error": "request body larger than 64 KiB"})


# -- the CLI's client against it ----------------------------------------------------------


def test_the_client_gets_the_answer_and_errors_as_messages(served: Served, tmp_path: Path) -> None:
    client = AgentClient(tmp_path, "dev", timeout=WAIT)
    assert client.request("POST", "/v1/scale", {"service": "web", "instances": 2}) == {
        "ok": True,
        "service": "web",
        "instances": 2,
    }
    with pytest.raises(UserError, match=r"^canary_percent must be a number from 0 to 100$"):
        client.request("POST", "/v1/traffic", {"service": "web", "canary_percent": -1})


def test_the_client_says_when_nothing_runs(tmp_path: Path) -> None:
    agent_files(tmp_path)["token"].write_text(TOKEN)
    with pytest.raises(UserError, match="nothing is running for environment 'dev'"):
        AgentClient(tmp_path, "dev").request("GET", "/v1/status")


# -- the description and the routes agree ------------------------------------------------


def test_every_route_of_the_agent_is_described_and_every_description_served() -> None:
    endpoints = Endpoints.__new__(Endpoints)  # routes() reads no component
    served = {(route.method.lower(), route.path) for route in endpoints.routes()}
    described = {(method, path) for path, item in OPENAPI["paths"].items() for method in item}
    assert served == described


# -- clients that are slow, idle, too many or hostile -----------------------------------


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Served]:
    """An API that waits 0.3 s for a request and keeps 4 connections at most."""
    server = Served(tmp_path, timeout=0.3, max_connections=4)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_an_idle_connection_is_answered_408_when_its_time_is_up(impatient: Served) -> None:
    answer = Answer.parse(impatient.raw(b""))
    assert (answer.status, answer.body) == (
        408,
        {"error": "request timeout: the request did not arrive within 0.3s"},
    )


def test_a_slowloris_client_is_answered_408_however_often_it_sends_a_byte(
    impatient: Served,
) -> None:
    async def drip() -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(impatient.files["socket"]))
        head = b"GET /v1/status HTTP/1.1\r\nHost: agent\r\nX-Padding: " + b"a" * 1000
        answer = asyncio.create_task(reader.read())
        for byte in head:  # a byte every 10 ms: each read is quick, the whole head is not
            if answer.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
            await asyncio.wait([answer], timeout=0.01)
        writer.close()
        return await answer

    answer = Answer.parse(asyncio.run(asyncio.wait_for(drip(), WAIT)))
    assert answer.status == 408


def test_the_connection_waiting_longest_is_pushed_out_for_a_new_one(impatient: Served) -> None:
    async def crowd() -> tuple[list[bytes], Answer]:
        socket = str(impatient.files["socket"])
        idle = [await asyncio.open_unix_connection(socket) for _ in range(6)]
        await asyncio.sleep(0)  # no wait for time: the server has taken the ones it will
        head = f"GET /v1/status HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        reader, writer = await asyncio.open_unix_connection(socket)
        writer.write(head.encode())
        prompt = Answer.parse(await reader.read())
        writer.close()
        answers = [await r.read() for r, _ in idle]
        for _, w in idle:
            w.close()
        return answers, prompt

    answers, prompt = asyncio.run(asyncio.wait_for(crowd(), WAIT))
    assert prompt.status == 200  # the prompt client is answered, crowd or not
    statuses = sorted(Answer.parse(a).status for a in answers)
    assert 503 in statuses and set(statuses) <= {408, 503}
    pushed = next(Answer.parse(a) for a in answers if Answer.parse(a).status == 503)
    assert pushed.body == {
        "error": "too many connections at once: this one waited longest for its request"
    }


def test_a_body_nested_too_deeply_is_400_not_a_bug(served: Served) -> None:
    answer = served.ask("POST", "/v1/scale", b"[" * 60000)
    assert (answer.status, answer.body) == (
        400,
        {"error": "bad request: the body is nested too deeply"},
    )
