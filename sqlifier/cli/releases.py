"""`sqlifier releases SERVICE` and `sqlifier lock ...`: the releases kept for a service,
and the per-service deploy locks."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from sqlifier.cli.workspace import load_context
from sqlifier.delivery.locks import force_release, held_locks
from sqlifier.delivery.releases import Releases, releases_table
from sqlifier.errors import UserError
from sqlifier.store.audit import AuditLog, current_user

__all__ = ["lock", "releases"]

_ENV = click.option(
    "--env", "-e", "env", help="The environment (default: $SQLIFIER_ENV, else dev)."
)
_FILE = click.option(
    "-f", "--file", "stack_file", help="The stack file (default: found from here)."
)


@click.command("releases")
@click.argument("service")
@_ENV
@_FILE
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def releases(service: str, env: str | None, stack_file: str | None, as_json: bool) -> int:
    """The releases of SERVICE kept on disk, newest first: version, status, commit, who
    made it and why."""
    context = load_context(stack_file, env)
    services = context.stack.services_for(context.env)
    if service not in services:
        raise UserError(f"unknown service {service!r}; services: {', '.join(services)}")
    found = Releases(context.state_dir, context.env).list(service)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in found], indent=2))
    elif found:
        click.echo(releases_table(found))
    else:
        click.echo(f"no release of {service} in {context.env} yet")
    return 0


@click.group("lock")
def lock() -> None:
    """The deploy locks: one per service and environment."""


@lock.command("list")
@_ENV
@_FILE
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_locks(env: str | None, stack_file: str | None, as_json: bool) -> int:
    """Locks held now, stale ones (their process has ended) included."""
    context = load_context(stack_file, env)
    held = held_locks(context.state_dir, context.env)
    if as_json:
        click.echo(json.dumps([asdict(info) for info in held], indent=2))
    elif held:
        for info in held:
            click.echo(f"{info.service}: {info.describe()}")
    else:
        click.echo(f"no lock is held in {context.env}")
    return 0


@lock.command("release")
@click.argument("service")
@click.option("--force", is_flag=True, required=True, help="Break the lock (audited).")
@click.option(
    "--even-if-alive",
    is_flag=True,
    help="Also break a lock whose holder still runs (it may be mid-deploy).",
)
@_ENV
@_FILE
def release(
    service: str, force: bool, even_if_alive: bool, env: str | None, stack_file: str | None
) -> int:
    """Break SERVICE's lock: one left by a process that has ended (stale). Audited."""
    context = load_context(stack_file, env)
    audit = AuditLog(context.state_dir / "audit.db")
    broken = force_release(
        context.state_dir, context.env, service, current_user(), audit, alive_ok=even_if_alive
    )
    click.echo(f"broke the lock of {service}: it was {broken.describe()}")
    return 0
