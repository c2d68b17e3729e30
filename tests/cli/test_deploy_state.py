"""State-aware rollbacks end to end, with the example shop's payment gateway and its real
Alembic project on SQLite (examples/shop/services/alembic.ini, migrations/).

A git repository gets the example's services folder in three commits, tagged v1 (the
payments table, 0001), v2 (+ the additive 0002, declared in `compatible_schemas`) and v3
(+ the destructive 0003). One stack, under load all along, goes through the story:

- v1, then v2: each migration runs before the release's canary takes traffic, and each
  release records the revision it ran against;
- from v2, a rollback to v1 goes ahead: v2 declared 0002 compatible, v1's code runs on it;
- v3 (from v1, migrating 0002 -> 0003), then a rollback to v1 or to v2 is refused with
  both revisions named, and nothing changes; with --force it goes ahead, and the audit
  log says so.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, ROOT
from tests.load import Load
from tests.servers import free_port

EXAMPLE = ROOT / "examples" / "shop"
VERSIONS = EXAMPLE / "services" / "migrations" / "versions"
# The revisions each tag adds, and the stack file's compatible_schemas from then on.
TAGS = {
    "v1": ("0001_payments.py", ""),
    "v2": ("0002_payment_note.py", 'compatible_schemas = ["0002"]\n'),
    "v3": ("0003_drop_created.py", 'compatible_schemas = ["0002"]\n'),
}
SERVICE = "payment-gateway"


def example_commands() -> tuple[str, str]:
    """The example shop's own `migrate` and `schema_version` for the payment gateway."""
    spec = tomllib.loads((EXAMPLE / "sqlifier.toml").read_text())["services"][SERVICE]
    return spec["migrate"], spec["schema_version"]


def stack_file(port: int, compatible: str) -> str:
    migrate, schema_version = example_commands()
    return (
        f'[stack]\nname = "ledger"\n\n[router]\nlisten = "127.0.0.1:{port}"\n\n'
        '[metrics]\nlisten = "off"\n\n'
        f"[services.{SERVICE}]\n"
        'source = "services"\n'
        f'run = "python3 shop_service.py {SERVICE}"\n'
        'routes = ["/api/pay"]\n'
        f"migrate = {json.dumps(migrate)}\n"
        f"schema_version = {json.dumps(schema_version)}\n"
        f"{compatible}"
        'probes.readiness = { http = "/health/ready", period = "300ms" }\n'
        # A fresh process answers its first requests slower: warm before taking traffic.
        'warmup = { requests = 20, path = "/api/pay" }\n\n'
        f"[services.{SERVICE}.rollout]\n"
        'steps = ["50%", "100%"]\npause = "1s"\ninterval = "1s"\nbake = "1s"\nmin_requests = 5\n'
    )


class Ledger:
    """The stack in a git repository at tmp_path, run by the real `sqlifier` with the
    venv's `python3` (it has Alembic) first on PATH."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "GIT_AUTHOR_NAME": "alice",
            "GIT_AUTHOR_EMAIL": "alice@example.com",
            "GIT_COMMITTER_NAME": "alice",
            "GIT_COMMITTER_EMAIL": "alice@example.com",
        }
        self.env.pop("SQLIFIER_DEBUG", None)

    def git(self, *args: str) -> None:
        subprocess.run(["git", *args], cwd=self.root, env=self.env, check=True, capture_output=True)

    def make_repository(self) -> None:
        """Commits tagged v1, v2 and v3, each adding one migration."""
        ignored = shutil.ignore_patterns("__pycache__", "*.pyc", "mode-*", "payments.db")
        shutil.copytree(EXAMPLE / "services", self.root / "services", ignore=ignored)
        versions = self.root / "services" / "migrations" / "versions"
        for name, _ in TAGS.values():
            (versions / name).unlink()
        (self.root / ".gitignore").write_text(".sqlifier/\n")
        self.git("init", "-q", "-b", "main")
        for tag, (name, compatible) in TAGS.items():
            shutil.copy(VERSIONS / name, versions / name)
            (self.root / "sqlifier.toml").write_text(stack_file(self.port, compatible))
            self.git("add", "-A")
            self.git("commit", "-q", "-m", f"payments ledger {tag}")
            self.git("tag", tag)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "sqlifier"), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def deploy(self, tag: str) -> None:
        """Deploy the release of `tag`, with the stack file as it was at that commit."""
        self.git("checkout", "-q", tag)
        result = self.run("deploy", "--service", SERVICE, "--version", tag, "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{SERVICE} {tag}" in result.stdout and "— complete" in result.stdout

    def releases(self) -> dict[str, dict[str, Any]]:
        """The deployed releases (the tags), without the one `up` started."""
        result = self.run("releases", SERVICE, "--json")
        assert result.returncode == 0, result.stderr
        return {r["version"]: r for r in json.loads(result.stdout) if r["version"] in TAGS}

    def statuses(self) -> dict[str, str]:
        return {version: r["status"] for version, r in self.releases().items()}

    def serving(self) -> set[str]:
        """The releases of the payment gateway's running instances."""
        result = self.run("ps", "--json")
        assert result.returncode == 0, result.stderr
        return {row["release"] for row in json.loads(result.stdout) if row["service"] == SERVICE}

    def wait_serving(self, release: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while (seen := self.serving()) != {release}:
            assert time.monotonic() < deadline, f"still serving {seen}, not only {release}"
            time.sleep(0.2)

    def database(self) -> tuple[str, list[str]]:
        """The database's Alembic revision and the payments table's columns."""
        path = self.root / ".sqlifier" / "dev" / "data" / SERVICE / "payments.db"
        with sqlite3.connect(path) as db:
            (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
            columns = [row[1] for row in db.execute("PRAGMA table_info(payments)")]
        db.close()
        return str(revision), columns

    def audit(self) -> list[dict[str, Any]]:
        result = self.run("audit", "--json")
        assert result.returncode == 0, result.stderr
        entries: list[dict[str, Any]] = json.loads(result.stdout)
        return entries


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    stack = Ledger(tmp_path)
    stack.make_repository()
    stack.git("checkout", "-q", "v1")
    up = stack.run("up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    yield stack
    stack.run("down")


def refusal(target: str, recorded: str) -> str:
    """Why the agent refuses a rollback to `target` with the database at 0003."""
    return (
        f"rollback of payment-gateway to {target} refused: {target} ran against schema "
        f"revision {recorded}, but the database is now at revision 0003 (migrated by v3), "
        "and no release declares 0003 backward compatible (compatible_schemas). "
        f"{target}'s code may fail on it, and moving traffic cannot undo a migration. "
        f"Migrate the database back to {recorded} first, or pass --force to roll back "
        "anyway (audited)"
    )


def test_rollbacks_cross_additive_migrations_and_refuse_destructive_ones_unless_forced(
    ledger: Ledger,
) -> None:
    with Load(ledger.port, "/api/pay", clients=2) as load:
        ledger.deploy("v1")
        assert ledger.database() == ("0001", ["id", "amount_cents", "created"])
        ledger.deploy("v2")
        assert ledger.database() == ("0002", ["id", "amount_cents", "created", "note"])
        releases = ledger.releases()
        assert releases["v1"]["details"]["schema"] == "0001"
        assert releases["v2"]["details"]["schema"] == "0002"
        assert releases["v2"]["config"]["compatible_schemas"] == ["0002"]

        # Additive: v1 runs on 0002, which v2 declared compatible.
        back = ledger.run("rollback", "--service", SERVICE)
        assert back.returncode == 0, back.stdout + back.stderr
        assert "rolled back" in back.stdout
        ledger.wait_serving("v1")
        assert ledger.statuses() == {"v1": "live", "v2": "rolled back"}
        assert ledger.database()[0] == "0002"  # a rollback moves traffic, never the schema

        # Destructive: 0003 drops a column v1 and v2 use, and no release declares it.
        ledger.deploy("v3")
        assert ledger.database() == ("0003", ["id", "amount_cents", "note"])
        before = ledger.releases()
        assert before["v3"]["details"]["schema"] == "0003"
        assert {v: r["status"] for v, r in before.items()} == {
            "v1": "superseded",
            "v2": "rolled back",
            "v3": "live",
        }
        targets = (("v1", "0001"), ("v2", "0002"))  # v1: the last stable release, the default
        for to, recorded in targets:
            args = ("--to", to) if to == "v2" else ()
            refused = ledger.run("rollback", "--service", SERVICE, *args)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            said = " ".join(refused.stderr.split())
            assert f"rollback of payment-gateway refused: {refusal(to, recorded)}" in said
        assert [(e["what"], e["target"], e["result"]) for e in ledger.audit()[-2:]] == [
            ("rollback", f"ledger/dev/{SERVICE} {to}", f"refused: {refusal(to, recorded)}")
            for to, recorded in targets
        ]
        assert ledger.releases() == before  # nothing changed
        assert ledger.serving() == {"v3"}

        forced = ledger.run(
            "rollback", "--service", SERVICE, "--to", "v2", "--force", "--reason", "v3 bug"
        )
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "forced across the schema check" in forced.stdout
        ledger.wait_serving("v2")
    assert ledger.statuses() == {"v1": "superseded", "v2": "live", "v3": "rolled back"}
    assert ledger.database()[0] == "0003"
    force = [e for e in ledger.audit() if e["what"] == "rollback force"]
    assert len(force) == 1, force
    assert (force[0]["target"], force[0]["result"]) == (f"ledger/dev/{SERVICE} v2", "ok")
    assert force[0]["why"] == f"forced across the schema check: {refusal('v2', '0002')}"
    served = sum(1 for _, status, _ in load.answers if status == 200)
    assert served > 50 and load.failed == {}, load.failed
