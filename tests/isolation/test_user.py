"""`user = "..."`: instances run as that account (uid, gid, no supplementary groups, read
from /proc/PID/status) and own their DATA_DIR; a missing account is a positioned error."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.runtime.private import private_dir
from sqlifier.runtime.supervisor import Supervisor
from sqlifier.secrets.resolver import SecretResolver
from sqlifier.stack import load_stack
from sqlifier.store.audit import AuditLog
from tests.apps import APP
from tests.isolation.nets import REASON

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
NOBODY = pwd.getpwnam("nobody")
# The system's interpreter: the test's own may sit in a folder only root can enter.
PYTHON = "/usr/bin/python3"


@pytest.fixture
def root() -> Iterator[Path]:
    """A stack folder the account can reach (pytest's own folders are root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="sqlifier-user-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def status_ids(pid: int) -> dict[str, str]:
    """Uid, Gid (the real id, first of four) and Groups from /proc/PID/status."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "Uid": fields["Uid"].split()[0],
        "Gid": fields["Gid"].split()[0],
        "Groups": fields["Groups"].strip(),
    }


def test_instances_run_as_the_account_and_own_their_data(root: Path) -> None:
    (root / "app.py").write_text(APP)
    (root / "app.py").chmod(0o644)
    path = root / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "t"\n[services.db]\n'
        f'run = "{PYTHON} app.py"\nstateful = true\nuser = "nobody"\n'
        'probes.readiness = { http = "/", period = "100ms" }\n'
    )
    stack, _ = load_stack(path)
    seen: dict[str, object] = {}

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", root / ".sqlifier" / "dev")
        try:
            await supervisor.start(ready_timeout=20)
            instance = supervisor.instances["db"][0]
            assert instance.launched is not None and instance.data_dir is not None
            seen["status"] = status_ids(instance.launched.pid)
            seen["data"] = instance.data_dir.stat()
            seen["starts"] = (instance.data_dir / "starts").stat()
        finally:
            await supervisor.stop()

    asyncio.run(main())
    status = seen["status"]
    assert isinstance(status, dict)
    assert (status["Uid"], status["Gid"], status["Groups"]) == (
        str(NOBODY.pw_uid),
        str(NOBODY.pw_gid),
        "",
    )
    data, starts = seen["data"], seen["starts"]
    assert isinstance(data, os.stat_result) and isinstance(starts, os.stat_result)
    assert (data.st_uid, data.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid)
    assert starts.st_uid == NOBODY.pw_uid  # written by the instance itself


def test_a_missing_account_is_a_positioned_error(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text('[stack]\nname = "t"\n[services.db]\nrun = "x"\nuser = "no-such-user-x"\n')
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path)
    assert str(caught.value) == (
        f"{path}:5:8: error: services.db.user: no user 'no-such-user-x' on this machine; "
        "create it (useradd --system no-such-user-x) or name an existing account"
    )


@pytest.mark.skipif(REASON is not None, reason=f"cannot isolate here: {REASON}")
def test_an_isolated_instance_runs_as_the_account_in_its_namespace(root: Path) -> None:
    (root / "app.py").write_text(APP)
    (root / "app.py").chmod(0o644)
    path = root / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "t"\n[services.web]\n'
        f'run = "{PYTHON} app.py"\nuser = "nobody"\nisolation = "network"\n'
        'probes.readiness = { http = "/", period = "100ms" }\n'
    )
    stack, _ = load_stack(path)
    seen: dict[str, object] = {}

    async def main() -> None:
        supervisor = Supervisor(stack, "dev", root / ".sqlifier" / "dev")
        try:
            await supervisor.start(ready_timeout=20)
            instance = supervisor.instances["web"][0]
            assert instance.launched is not None
            seen["status"] = status_ids(instance.launched.pid)
            seen["netns"] = os.readlink(f"/proc/{instance.launched.pid}/ns/net")
            seen["host"] = instance.host
        finally:
            await supervisor.stop()

    asyncio.run(main())
    status = seen["status"]
    assert isinstance(status, dict)
    assert (status["Uid"], status["Gid"], status["Groups"]) == (
        str(NOBODY.pw_uid),
        str(NOBODY.pw_gid),
        "",
    )
    assert seen["netns"] != os.readlink("/proc/self/ns/net")
    assert str(seen["host"]).startswith("10.")


def test_its_secret_files_are_the_accounts_and_only_its(root: Path) -> None:
    # The instance reads its secret file and serves it: it can, as the account.
    (root / "app.py").write_text(READS_SECRET)
    (root / "app.py").chmod(0o644)
    path = root / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "t"\n[services.api]\n'
        f'run = "{PYTHON} app.py"\nuser = "nobody"\n'
        'secrets.TOKEN_FILE = { ref = "env://SQLIFIER_TEST_TOKEN", file = "token" }\n'
        'probes.readiness = { http = "/", period = "100ms" }\n'
    )
    stack, _ = load_stack(path)
    state = root / ".sqlifier" / "dev"
    state.mkdir(parents=True)
    seen: dict[str, object] = {}

    async def main() -> None:
        resolver = SecretResolver(
            stack, "dev", state, AuditLog(state / "audit.db"),
            environ={"SQLIFIER_TEST_TOKEN": "s3cret-token-value"},
        )  # fmt: skip
        supervisor = Supervisor(
            stack, "dev", state, secrets=resolver.for_instance, after_stop=resolver.forget
        )
        try:
            await supervisor.start(ready_timeout=20)
            instance = supervisor.instances["api"][0]
            with urllib.request.urlopen(f"http://127.0.0.1:{instance.port}/", timeout=10) as r:
                seen["served"] = r.read().decode()
            folder = private_dir(state, "secrets", instance.id)
            seen["folder"] = folder.stat()
            seen["file"] = (folder / "token").stat()
        finally:
            await supervisor.stop()

    asyncio.run(main())
    assert seen["served"] == "s3cret-token-value"
    folder, file = seen["folder"], seen["file"]
    assert isinstance(folder, os.stat_result) and isinstance(file, os.stat_result)
    # The folder stays the agent's (it writes the file again at a restart), searchable
    # but not listable by others; the file is the account's alone.
    assert (folder.st_uid, folder.st_mode & 0o777) == (0, 0o701)
    assert (file.st_uid, file.st_mode & 0o777) == (NOBODY.pw_uid, 0o600)


READS_SECRET = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

with open(os.environ["TOKEN_FILE"]) as f:  # once, at the start, as a service would
    body = f.read().encode()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
