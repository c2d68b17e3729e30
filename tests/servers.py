"""Helpers the socket tests share: a free port, a quiet threaded HTTP server, and the
data planes to run a router test against."""

from __future__ import annotations

import shutil
import socket
from http.server import ThreadingHTTPServer

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client (the proxy) that closes a kept-alive connection is no error


# Both data planes; HAProxy's runs when the binary is installed (.ci/run installs it).
KINDS = [
    "embedded",
    pytest.param(
        "haproxy",
        marks=pytest.mark.skipif(
            shutil.which("haproxy") is None, reason="haproxy is not installed"
        ),
    ),
]
