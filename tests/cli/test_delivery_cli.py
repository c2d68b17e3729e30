"""`sqlifier releases` and `sqlifier lock`: the deploy bricks as a user sees them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sqlifier.delivery.dora import (
    CHANGE_FAILURE_RATE,
    DEPLOYMENT_FREQUENCY,
    LEAD_TIME,
    RECOVERY_TIME,
)
from sqlifier.delivery.events import DEPLOY_START, ROLLOUT_COMPLETE, deploy_event
from sqlifier.delivery.locks import read_lock
from sqlifier.delivery.releases import Releases
from sqlifier.stack import load_stack
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

    def state() -> list[str]:  # everything but the audit log, where the plan is recorded
        return sorted(str(p) for p in (tmp_path / ".sqlifier").rglob("*") if "audit" not in p.name)

    before = state()
    result = run_sqlifier("plan", "--env", "production", "--version", "v2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "web in production: v1 -> v2"
    assert "  ~ env.LOG_LEVEL: info -> debug" in lines
    assert "  instances: 3 (unchanged)" in lines
    assert "  approval: required (approvers: alice)" in lines
    assert state() == before
    audit = json.loads(run_sqlifier("audit", "--env", "production", "--json", cwd=tmp_path).stdout)
    assert [(e["what"], e["target"], e["result"]) for e in audit if e["what"] == "plan"] == [
        ("plan", "d/production/web v2", "ok")
    ]
    as_json = json.loads(run_sqlifier("plan", "--env", "production", "--json", cwd=tmp_path).stdout)
    assert as_json[0]["current"] == "v1" and as_json[0]["problems"] == []


def test_dora_reads_the_audit_log(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    state = tmp_path / ".sqlifier" / "dev"
    state.mkdir(parents=True)
    now = time.time()
    # Two deploys of web in the last 30 days, committed 2 h and 4 h before their rollouts
    # completed: 2 / 30 days = 0.467 per week; lead time median(2 h, 4 h) = 3 h; no failure.
    for version, done, lead in (("v1", now - 3 * 86400, 7200.0), ("v2", now - 86400, 14400.0)):
        for what, at in ((DEPLOY_START, done - 600), (ROLLOUT_COMPLETE, done)):
            audit = AuditLog(state / "audit.db", clock=lambda at=at: at)
            deploy_event(audit, what, who="alice", stack="d", env="dev", service="web",
                         version=version, commit="c" + version, commit_time=done - lead,
                         deploy_id=version)  # fmt: skip
    audit_times = AuditLog(state / "audit.db").entries()
    assert len(audit_times) == 4
    result = run_sqlifier("dora", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = {m["name"]: m for m in json.loads(result.stdout)["metrics"]}
    assert len(metrics) == 4
    assert metrics[DEPLOYMENT_FREQUENCY]["value"] == pytest.approx(2 / 30 * 7, abs=0.01)
    assert metrics[LEAD_TIME]["value"] == pytest.approx(3.0)
    assert metrics[LEAD_TIME]["tier"] == "high"
    assert metrics[CHANGE_FAILURE_RATE]["value"] == 0.0
    assert metrics[RECOVERY_TIME]["value"] is None  # nothing failed: nothing to recover from
    text = run_sqlifier("dora", cwd=tmp_path).stdout
    assert text.startswith("DORA for dev, the last 30d:")
    bad = run_sqlifier("dora", "--since", "forever", cwd=tmp_path)
    assert bad.returncode == 1 and "expected a duration like 7d" in bad.stderr
