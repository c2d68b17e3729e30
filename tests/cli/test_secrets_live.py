"""Secrets as a user meets them: set in the local store, delivered only to the instance
that declares them (as a variable or a 0600 file), masked in its output, never in a file
under .sqlifier/, audited on every read, rotated with zero failed requests, and kept apart
per environment.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_sqlifier
from tests.load import Load
from tests.secrets.servers import needs_bao, running_openbao
from tests.servers import free_port

APP = """\
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

secret = os.environ.get("DB_PASSWORD", "")
# A careless service: it prints its secret at start (the agent must mask it).
print("INFO connecting with password " + secret, flush=True)
print("ERROR the same, encoded: " + __import__("base64").b64encode(secret.encode()).decode(), flush=True)

class Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    def do_GET(self):
        token_file = os.environ.get("API_TOKEN", "")
        token = open(token_file).read() if token_file and os.path.exists(token_file) else None
        body = json.dumps({
            "instance": os.environ["INSTANCE"],
            "db_password": os.environ.get("DB_PASSWORD"),
            "token_file": token_file or None,
            "token": token,
            "token_mode": oct(os.stat(token_file).st_mode & 0o777) if token else None,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""

FIRST = "correct horse battery staple"
SECOND = "Tr0ub4dor&3-rotated"
TOKEN = "tok-5f2b9c0e71"


def get(port: int, path: str = "/") -> dict[str, object]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        return dict(json.loads(connection.getresponse().read()))
    finally:
        connection.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    port, other_port = free_port(), free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "sec"\n\n[router]\nlisten = "127.0.0.1:{port}"\n\n'
        f'[services.app]\nrun = "{sys.executable} app.py"\ninstances = 2\nroutes = ["/"]\n'
        'stop_timeout = "5s"\nprobes.readiness = { http = "/", period = "200ms" }\n'
        "[services.app.secrets]\n"
        'DB_PASSWORD = "secret://local/db_password"\n'
        'API_TOKEN = { ref = "env://SEC_TEST_TOKEN", file = "api_token" }\n\n'
        f'[services.other]\nrun = "{sys.executable} app.py"\nport = {other_port}\n'
        'probes.readiness = { http = "/", period = "200ms" }\n'
    )
    os.environ["SEC_TEST_TOKEN"] = TOKEN
    try:
        yield tmp_path, port, other_port
    finally:
        run_sqlifier("down", cwd=tmp_path)
        run_sqlifier("down", "--env", "production", cwd=tmp_path)
        os.environ.pop("SEC_TEST_TOKEN", None)


def files_containing(root: Path, *values: str) -> list[str]:
    needles = [v.encode() for v in values]
    needles += [base64.b64encode(v.encode()) for v in values]
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            found += [f"{path} has {n!r}" for n in needles if n in data]
    return found


def test_secrets_reach_only_their_instances_and_no_file(stack: tuple[Path, int, int]) -> None:
    root, port, other_port = stack
    result = run_sqlifier("secret", "set", "db_password", cwd=root, stdin=FIRST + "\n")
    assert result.returncode == 0, result.stderr
    assert FIRST not in result.stdout + result.stderr
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr

    answer = get(port)
    assert answer["db_password"] == FIRST and answer["token"] == TOKEN
    assert answer["token_mode"] == "0o600"
    token_file = Path(str(answer["token_file"]))
    assert ".sqlifier" not in str(token_file)
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    other = get(other_port)
    assert other["db_password"] is None and other["token"] is None  # least privilege

    logs = run_sqlifier("logs", "app", cwd=root).stdout
    assert "connecting with password ****" in logs and "encoded: ****" in logs
    assert FIRST not in logs
    shown = (
        run_sqlifier("ps", "--json", cwd=root).stdout
        + run_sqlifier("config", "app", cwd=root).stdout
    )
    assert FIRST not in shown and TOKEN not in shown
    assert (
        "DB_PASSWORD=****   (secret://local/db_password"
        in run_sqlifier("config", "app", cwd=root).stdout
    )

    audit = run_sqlifier("rules", "list", cwd=root)  # the agent is up and answering
    assert audit.returncode == 0
    with sqlite3.connect(root / ".sqlifier" / "dev" / "audit.db") as db:
        reads = db.execute(
            "SELECT who, target, result FROM audit WHERE what = 'secret read'"
        ).fetchall()
    assert len(reads) == 4  # 2 instances x 2 references
    assert all(r[2] == "ok" for r in reads)
    assert any("app-0 DB_PASSWORD <- secret://local/db_password" in r[1] for r in reads)

    assert run_sqlifier("down", cwd=root).returncode == 0
    assert not token_file.exists()  # secret files go with their instance
    assert files_containing(root / ".sqlifier", FIRST, TOKEN) == []


def test_rotation_restarts_one_at_a_time_with_no_failed_request(
    stack: tuple[Path, int, int],
) -> None:
    root, port, _ = stack
    assert run_sqlifier("secret", "set", "db_password", cwd=root, stdin=FIRST).returncode == 0
    assert run_sqlifier("up", "--detach", cwd=root).returncode == 0
    assert get(port)["db_password"] == FIRST
    assert run_sqlifier("secret", "set", "db_password", cwd=root, stdin=SECOND).returncode == 0
    assert get(port)["db_password"] == FIRST  # set only stores
    with Load(port, clients=4, pause=0) as load:
        rotate = run_sqlifier("secret", "rotate", "db_password", cwd=root)
    assert rotate.returncode == 0, rotate.stderr
    assert load.outcomes["200"] > 10 and load.failed == {}, load.outcomes
    assert {str(get(port)["db_password"]) for _ in range(4)} == {SECOND}
    # the replacements kept their secret files when the instances they replaced stopped
    assert {str(get(port)["token"]) for _ in range(4)} == {TOKEN}
    listed = json.loads(run_sqlifier("secret", "list", "--json", cwd=root).stdout)
    assert listed[0]["version"] == 2 and listed[0]["delivered"] == 2
    assert files_containing(root / ".sqlifier", FIRST, SECOND) == []


def test_a_reference_that_cannot_be_resolved_blocks_the_start(stack: tuple[Path, int, int]) -> None:
    root, _, _ = stack
    up = run_sqlifier("up", "--detach", "--timeout", "5", cwd=root)  # db_password never set
    assert up.returncode == 1
    assert "secret DB_PASSWORD: no secret db_password in dev" in up.stderr


def test_environments_are_kept_apart(stack: tuple[Path, int, int]) -> None:
    root, _, _ = stack
    assert run_sqlifier("secret", "set", "db_password", cwd=root, stdin=FIRST).returncode == 0
    up = run_sqlifier("up", "--detach", "--env", "production", "--timeout", "5", cwd=root)
    assert up.returncode == 1  # set in dev: production has no such secret
    assert "no secret db_password in production" in up.stderr
    assert FIRST not in up.stderr


VAULT_STACK = """\
[stack]
name = "vault"

[services.app]
run = "{python} app.py"
port = {port}
probes.readiness = {{ http = "/", period = "200ms" }}

[services.app.secrets]
DB_PASSWORD = "vault://secret/shop/db#password"
"""


@needs_bao
def test_openbao_values_reach_the_instance_and_a_policy_denial_is_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "sqlifier.toml").write_text(VAULT_STACK.format(python=sys.executable, port=port))
    (tmp_path / "bao").mkdir()
    with running_openbao(tmp_path / "bao") as bao, bao.client() as root:
        root.secrets.kv.v2.create_or_update_secret(path="shop/db", secret={"password": FIRST})
        root.sys.create_or_update_policy(
            name="billing", policy='path "secret/data/billing/*" { capabilities = ["read"] }'
        )
        denied = root.auth.token.create(policies=["billing"], ttl="10m")["auth"]["client_token"]
        try:
            for key, value in bao.environ().items():
                monkeypatch.setenv(key, value)
            assert run_sqlifier("up", "--detach", cwd=tmp_path).returncode == 0
            assert get(port)["db_password"] == FIRST
            assert run_sqlifier("down", cwd=tmp_path).returncode == 0
            assert files_containing(tmp_path / ".sqlifier", FIRST) == []

            monkeypatch.setenv("VAULT_TOKEN", denied)
            up = run_sqlifier("up", "--detach", "--timeout", "5", cwd=tmp_path)
            assert up.returncode == 1
            assert (
                "secret DB_PASSWORD: vault://secret/shop/db#password: permission denied (403) "
                "— the token's policy does not allow reading secret/data/shop/db"
            ) in up.stderr
            assert denied not in up.stderr and bao.root_token not in up.stderr
        finally:
            run_sqlifier("down", cwd=tmp_path)


def test_refresh_delivers_a_changed_upstream_value(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "db_password.txt").write_text(FIRST + "\n")
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "refresh"\n\n[services.app]\nrun = "{sys.executable} app.py"\n'
        f'port = {port}\nprobes.readiness = {{ http = "/", period = "200ms" }}\n'
        "[services.app.secrets]\n"
        'DB_PASSWORD = { ref = "file://db_password.txt", refresh = "1s" }\n'
    )
    try:
        assert run_sqlifier("up", "--detach", cwd=tmp_path).returncode == 0
        assert get(port)["db_password"] == FIRST
        (tmp_path / "db_password.txt").write_text(SECOND + "\n")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if get(port)["db_password"] == SECOND:
                    break
            except OSError:
                pass  # one instance on a fixed port: it restarts in place
            time.sleep(0.2)
        assert get(port)["db_password"] == SECOND
        rows: list[tuple[str, str]] = []
        while time.monotonic() < deadline and not rows:  # recorded once the restart ends
            with sqlite3.connect(tmp_path / ".sqlifier" / "dev" / "audit.db") as db:
                query = "SELECT target, result FROM audit WHERE what = 'secret rotate'"
                rows = db.execute(query).fetchall()
            time.sleep(0.2)
        assert rows == [("refresh/dev/app (refresh: file://db_password.txt changed)", "ok")]
    finally:
        run_sqlifier("down", cwd=tmp_path)
    assert files_containing(tmp_path / ".sqlifier", FIRST, SECOND) == []


def test_config_shows_the_effective_configuration_masked(tmp_path: Path) -> None:
    (tmp_path / "production.env").write_text("LOG_LEVEL=warning\nAPI_TOKEN=plain-token-123\n")
    (tmp_path / "sqlifier.toml").write_text(
        '[stack]\nname = "cfg"\n\n[environments.production]\nenv_file = "production.env"\n\n'
        '[services.web]\nrun = "python3 app.py"\nenv = { LOG_LEVEL = "info", MODE = "web" }\n'
        "[services.web.secrets]\n"
        'DB_PASSWORD = "secret://local/db_password"\n'
        'TLS_KEY = { ref = "file://tls.key", file = "tls.key", refresh = "5m" }\n\n'
        "[environments.production.services.web]\ninstances = 3\n"
    )
    result = run_sqlifier("config", "web", "--env", "production", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["instances"] == 3
    assert data["environment"] == {
        "API_TOKEN": {"value": "****", "from": "env_file production.env"},
        "LOG_LEVEL": {"value": "info", "from": "stack file"},
        "MODE": {"value": "web", "from": "stack file"},
    }
    assert data["secrets"]["TLS_KEY"] == {
        "ref": "file://tls.key",
        "delivered_as": "file tls.key",
        "refresh": 300.0,
        "value": "****",
    }
    text = run_sqlifier("config", "web", "--env", "production", cwd=tmp_path).stdout
    assert "plain-token-123" not in text
    assert "TLS_KEY=****   (file://tls.key, as file tls.key, refreshed every 300s)" in text
    unknown = run_sqlifier("config", "wbe", cwd=tmp_path)
    assert unknown.returncode == 1 and "unknown service 'wbe'; services: web" in unknown.stderr
