"""Helpers for the isolation tests: an "outside" the tests create (a namespace with a
listener standing in for a host beyond the machine), and an app that calls out."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlifier.runtime.netns import cannot_isolate

OUTSIDE = "198.51.100.2"  # TEST-NET-2: a documentation network nothing real answers on
REASON = cannot_isolate()

# GET /call/HOST/PORT: connect to HOST:PORT and answer what it said, or the error.
CALL_APP = """\
import os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/call/"):
            _, _, host, port = self.path.split("/")
            try:
                with socket.create_connection((host, int(port)), timeout=3) as s:
                    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
                    body = b"ok " + s.recv(100).split(b"\\r\\n")[0]
            except OSError as exc:
                body = f"failed {exc}".encode()
        else:
            body = os.environ["INSTANCE"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

_LISTENER = """\
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(b"outside:%d" % port); c.close()
for port in map(int, sys.argv[1:]):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def outside(*ports: int) -> Iterator[str]:
    """A namespace reached from the host at OUTSIDE, listening on `ports`; removed after."""
    tag = f"sqto{os.getpid() % 100000}"
    _ip("netns", "add", tag)
    process = None
    try:
        _ip("link", "add", f"{tag}h", "type", "veth", "peer", "name", f"{tag}n")
        _ip("link", "set", f"{tag}n", "netns", tag)
        _ip("addr", "add", "198.51.100.1/24", "dev", f"{tag}h")
        _ip("link", "set", f"{tag}h", "up")
        _ip("-n", tag, "addr", "add", f"{OUTSIDE}/24", "dev", f"{tag}n")
        _ip("-n", tag, "link", "set", f"{tag}n", "up")
        _ip("-n", tag, "link", "set", "lo", "up")
        process = subprocess.Popen(
            ["ip", "netns", "exec", tag, sys.executable, "-c", _LISTENER, *map(str, ports)],
            stdout=subprocess.PIPE,
        )
        assert process.stdout is not None and process.stdout.readline() == b"ready\n"
        yield OUTSIDE
    finally:
        if process is not None:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        subprocess.run(["ip", "link", "del", f"{tag}h"], check=False, capture_output=True)
        _ip("netns", "del", tag)


def leftovers(digest: str) -> list[str]:
    """What isolation left on the machine for a stack (namespaces, links, nft tables)."""
    found = (
        [p.name for p in Path("/run/netns").glob(f"sq{digest}-*")]
        if Path("/run/netns").is_dir()
        else []
    )
    found += [p.name for p in Path("/sys/class/net").iterdir() if digest in p.name]
    tables = subprocess.run(
        ["nft", "list", "tables"], check=False, capture_output=True, text=True
    ).stdout
    found += [line for line in tables.splitlines() if digest in line]
    return found


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
