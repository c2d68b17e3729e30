"""`sqlifier audit`, `audit verify` and `audit reset`: read the audit log, check its
chain, and start a new one on purpose when the old one is lost or damaged.

They use the environment's `audit.db` directly, so they work without a running agent.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import click

from sqlifier.agent.client import agent_alive
from sqlifier.agent.files import keep_private
from sqlifier.cli.options import ENV, JSON, STACK_FILE, complete_services, duration
from sqlifier.cli.workspace import Context, display_path, load_context
from sqlifier.errors import UserError
from sqlifier.stack.model import PlatformKind
from sqlifier.store.audit import HEAD_FILE, AuditEntry, AuditLog, VerifyResult, lost_entries
from sqlifier.store.audit import current_user as audit_user
from sqlifier.store.files import StateFileError, set_aside

__all__ = ["group"]

_COLUMNS = ("time (utc)", "who", "what", "target", "result", "why")


@click.group("audit", invoke_without_command=True)
@ENV
@STACK_FILE
@JSON
@click.option("--since", help="Only entries from the last D, like 30m, 24h or 7d.")
@click.option(
    "--service", "-s", shell_complete=complete_services, help="Only entries about service S."
)
@click.pass_context
def group(
    ctx: click.Context,
    env: str | None,
    stack_file: str | None,
    as_json: bool,
    since: str | None,
    service: str | None,
) -> int:
    """Who did what, to what, when and why, and how it ended (oldest first).

    `sqlifier audit verify` checks that no entry was changed or removed.
    """
    if ctx.invoked_subcommand is not None:
        if since or service:
            raise UserError("--since and --service select entries to list; verify checks all")
        return 0
    context = load_context(stack_file, env)
    start = time.time() - duration(since) if since else None
    log = _cluster_log(context) or _open(context)
    entries = [] if log is None else log.entries(since=start, service=service)
    if as_json:
        click.echo(json.dumps([_as_json(entry) for entry in entries], indent=2))
    elif log is None:
        click.echo(f"no audit log yet for {context.stack.name} ({context.env})")
    elif not entries:
        click.echo(f"no audit entries{_selection(since, service)}")
    else:
        click.echo(_table(entries))
    return 0


@group.command("verify")
@ENV
@STACK_FILE
@JSON
@click.pass_context
def verify(ctx: click.Context, env: str | None, stack_file: str | None, as_json: bool) -> int:
    """Check the hash chain; exit 1 naming an entry changed or removed."""
    above = ctx.parent.params if ctx.parent else {}
    context = load_context(stack_file or above.get("stack_file"), env or above.get("env"))
    in_cluster = _cluster_log(context)
    if in_cluster is not None:
        return _report(in_cluster.verify(), in_cluster.where, as_json or bool(above.get("as_json")))
    lost = lost_entries(context.state_dir / "audit.db")
    log = None if lost is not None else _open(context)
    if lost is not None:
        result = VerifyResult(False, 0, f"{lost}: every entry was removed", 1)
    else:
        result = VerifyResult(True, 0) if log is None else log.verify()
    if as_json or above.get("as_json"):
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
    elif result.ok:
        none_yet = " (no audit log yet)" if log is None else ""
        click.echo(f"{_count(result.entries)}, chain intact{none_yet}")
    else:
        path = display_path(context.state_dir / "audit.db")
        click.echo(f"{path}: {_count(result.entries)}, chain broken: {result.problem}", err=True)
    return 0 if result.ok else 1


@group.command("reset")
@ENV
@STACK_FILE
@click.pass_context
def reset(ctx: click.Context, env: str | None, stack_file: str | None) -> int:
    """Start a new audit log when the old one is lost or damaged (it is kept aside).

    Refused while the stack runs, and when the log is intact. The reset is recorded as the
    new log's first entry, naming the old file and what was wrong with it.
    """
    above = ctx.parent.params if ctx.parent else {}
    context = load_context(stack_file or above.get("stack_file"), env or above.get("env"))
    if context.stack.environment(context.env).platform is PlatformKind.KUBERNETES:
        raise UserError(
            f"the audit log of {context.env} is kept in its cluster, and is never reset; "
            "audit reset starts a new local log (of an environment on this machine)"
        )
    path = context.state_dir / "audit.db"
    shown = display_path(path)
    if agent_alive(context.state_dir):
        raise UserError(
            f"{context.stack.name} ({context.env}) is running; run sqlifier down before "
            "resetting its audit log"
        )
    problem = _problem(path)
    if problem is None and not path.exists():
        raise UserError(f"there is no audit log at {shown} yet; there is nothing to reset")
    if problem is None:
        raise UserError(
            f"{shown} is intact ({_count(AuditLog(path).verify().entries)}, chain intact); "
            "there is nothing to reset"
        )
    keep_private(context.state_dir.parent)
    head = context.state_dir / HEAD_FILE
    kept = set_aside(path)
    old_head = None
    if head.exists():
        old_head = head.with_name(kept.stem + ".head")
        head.rename(old_head)
    AuditLog(path).record(
        audit_user(),
        "audit reset",
        f"{context.stack.name}/{context.env}",
        "ok",
        why=f"a new log: the old one {problem}; it is kept as {kept.name}",
        details={"kept": str(kept), "head": None if old_head is None else str(old_head)},
        service="",
    )
    click.echo(
        f"started a new audit log {shown}: the old one {problem}; it is kept as "
        f"{display_path(kept)}. The reset is the new log's first entry"
    )
    return 0


def _cluster_log(context: Context) -> Any:
    """The audit log kept in the cluster, for a Kubernetes environment; None otherwise."""
    if context.stack.environment(context.env).platform is not PlatformKind.KUBERNETES:
        return None
    from sqlifier.platform.kubernetes.audit import ClusterAudit  # noqa: PLC0415
    from sqlifier.platform.kubernetes.locks import open_environment  # noqa: PLC0415

    return ClusterAudit(
        open_environment(context.stack, context.env), context.stack.name, context.env
    )


def _report(result: VerifyResult, where: str, as_json: bool) -> int:
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
    elif result.ok:
        click.echo(f"{_count(result.entries)}, chain intact")
    else:
        click.echo(f"{where}: {_count(result.entries)}, chain broken: {result.problem}", err=True)
    return 0 if result.ok else 1


def _problem(path: Path) -> str | None:
    """What is wrong with the log at `path` that a reset would mend; None when intact."""
    lost = lost_entries(path)
    if lost is not None:
        return f"lost its entries ({lost})"
    if not path.exists():
        return None
    try:
        result = AuditLog(path, lost_ok=True).verify()
    except StateFileError as exc:
        return exc.reason
    return None if result.ok else f"has a broken chain ({result.problem})"


def _open(context: Context) -> AuditLog | None:
    path = context.state_dir / "audit.db"
    lost = lost_entries(path)
    if lost is not None:
        raise UserError(
            f"{display_path(path)}: {lost}: its entries were lost; restore it from a backup, "
            "or start a new log with `sqlifier audit reset`"
        )
    if not path.exists():
        return None
    try:
        return AuditLog(path, lost_ok=True)
    except StateFileError as exc:  # not a database, or one the user cannot write
        remedy = "" if exc.reason == exc.sqlite else "; start a new log with `sqlifier audit reset`"
        shown = display_path(path)
        raise UserError(f"cannot open the audit log {shown}: {exc.sqlite}{remedy}") from None
    except sqlite3.Error as exc:
        raise UserError(f"cannot open the audit log {display_path(path)}: {exc}") from None


def _selection(since: str | None, service: str | None) -> str:
    about = f" about {service}" if service else ""
    return about + (f" in the last {since}" if since else "")


def _count(entries: int) -> str:
    return f"{entries} entr{'y' if entries == 1 else 'ies'}"


def _time(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, dt.UTC)


def _as_json(entry: AuditEntry) -> dict[str, Any]:
    fields = dataclasses.asdict(entry)
    return {"time": _time(entry.at).isoformat().replace("+00:00", "Z"), **fields}


def _table(entries: list[AuditEntry]) -> str:
    cells = [[c.upper() for c in _COLUMNS]]
    for e in entries:
        when = _time(e.at).strftime("%Y-%m-%d %H:%M:%S")
        cells.append([when, e.who, e.what, e.target, e.result, e.why or "-"])
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in cells
    )
