"""`sqlifier releases` and `sqlifier lock`: the deploy bricks as a user sees them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlifier.delivery.locks import read_lock
from sqlifier.delivery.releases import Releases
from sqlifier.spec import load_stack
from sqlifier.store.audit import AuditLog
from tests.conftest import run_sqlifier

STACK = '[stack]\nname = "d"\n\n[services.web]\nsource = "web"\nrun = "python3 app.py"\n'

HOLDER = """\
import sys, time
from pathlib import Path
from sqlifier.delivery.locks import ServiceLock
lock = ServiceLock(Path(sys.argv[1]), "dev", "web", "deploy", "alice", "v2", "fix checkout")
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_releases_lists_what_was_made(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "app.py").write_text("print('hi')\n")
    stack, _ = load_stack(tmp_path / "sqlifier.toml")
    Releases(tmp_path / ".sqlifier" / "dev", "dev").make(stack, "web", "v1", reason="first")
    listed = json.loads(run_sqlifier("releases", "web", "--json", cwd=tmp_path).stdout)
    assert [(r["version"], r["status"], r["reason"]) for r in listed] == [("v1", "built", "first")]
    text = run_sqlifier("releases", "web", cwd=tmp_path).stdout
    assert text.splitlines()[0].startswith("VERSION") and "v1" in text
    unknown = run_sqlifier("releases", "wbe", cwd=tmp_path)
    assert unknown.returncode == 1 and "unknown service 'wbe'; services: web" in unknown.stderr


def test_a_stale_lock_is_listed_and_broken_with_force(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    state = tmp_path / ".sqlifier" / "dev"
    state.mkdir(parents=True)
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(state)], stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        live = run_sqlifier("lock", "list", cwd=tmp_path).stdout
        assert (
            live.startswith("web: locked by alice since ") and "(deploy v2: fix checkout)" in live
        )
        refused = run_sqlifier("lock", "release", "web", "--force", cwd=tmp_path)
        assert refused.returncode == 1
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    stale = json.loads(run_sqlifier("lock", "list", "--json", cwd=tmp_path).stdout)
    assert stale[0]["stale"] is True and stale[0]["user"] == "alice"
    broken = run_sqlifier("lock", "release", "web", "--force", cwd=tmp_path)
    assert broken.returncode == 0, broken.stderr
    assert read_lock(state, "dev", "web") is None
    entries = [
        e for e in AuditLog(state / "audit.db").entries() if e.what == "lock release --force"
    ]
    assert entries and entries[-1].result.startswith("ok: broke the stale lock of alice")
    assert run_sqlifier("lock", "list", cwd=tmp_path).stdout.strip() == "no lock is held in dev"


def test_plan_compares_with_the_live_release_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(
        STACK + 'env = { LOG_LEVEL = "info" }\nroutes = ["/"]\n'
        '[environments.production]\napproval = "required"\napprovers = ["alice"]\n'
        "[environments.production.services.web]\ninstances = 3\n"
    )
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "app.py").write_text("print('hi')\n")
    stack, _ = load_stack(tmp_path / "sqlifier.toml")
    store = Releases(tmp_path / ".sqlifier" / "production", "production")
    store.make(stack, "web", "v1")
    store.mark("web", "v1", "live")
    text = (tmp_path / "sqlifier.toml").read_text().replace('"info"', '"debug"')
    (tmp_path / "sqlifier.toml").write_text(text)
    before = sorted(str(p) for p in (tmp_path / ".sqlifier").rglob("*"))
    result = run_sqlifier("plan", "--env", "production", "--version", "v2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "web in production: v1 -> v2"
    assert "  ~ env.LOG_LEVEL: info -> debug" in lines
    assert "  instances: 3 (unchanged)" in lines
    assert "  approval: required (approvers: alice)" in lines
    assert sorted(str(p) for p in (tmp_path / ".sqlifier").rglob("*")) == before
    as_json = json.loads(run_sqlifier("plan", "--env", "production", "--json", cwd=tmp_path).stdout)
    assert as_json[0]["current"] == "v1" and as_json[0]["problems"] == []
