"""`sqlifier secret ...`: the environment's own encrypted secrets (`secret://local/NAME`).

A value comes in on stdin or at a hidden prompt, never as an argument (arguments land in
shell history and in `ps`), and is never printed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys

import click

from sqlifier.agent.client import AgentClient, agent_alive
from sqlifier.cli.options import ENV, JSON, STACK_FILE
from sqlifier.cli.workspace import Context, load_context
from sqlifier.secrets.errors import SecretError
from sqlifier.secrets.local import MAX_VALUE_BYTES, LocalStore, SecretInfo
from sqlifier.store.audit import AuditLog, current_user

__all__ = ["group", "rotate_command"]

_COLUMNS = ("NAME", "VERSION", "VERSIONS", "UPDATED", "BY", "DELIVERED")


@click.group("secret")
def group() -> None:
    """Keep the environment's secrets in its encrypted store (secret://local/NAME)."""


@group.command("set")
@click.argument("name")
@ENV
@STACK_FILE
def set_(name: str, env: str | None, stack_file: str | None) -> int:
    """Store a new version of NAME, read from stdin or a hidden prompt (never an argument).

    On stdin, one trailing newline is dropped: `echo "$VALUE" | sqlifier secret set NAME`.
    """
    context = load_context(stack_file, env)
    store = LocalStore(context.state_dir, context.env)
    store.check_name(name)  # before the value is asked for
    value = _read_value(name, context.env)
    who = current_user()
    version = store.set(name, value, who)
    _audit(context, who, "secret set", name, f"version {version}")
    click.echo(
        f"stored {name} version {version} in {context.env}; "
        f"sqlifier secret rotate {name} delivers it to running instances"
    )
    return 0


@group.command("list")
@ENV
@STACK_FILE
@JSON
def list_(env: str | None, stack_file: str | None, as_json: bool) -> int:
    """The secrets' names, versions, and who updated them when; never their values."""
    context = load_context(stack_file, env)
    infos = LocalStore(context.state_dir, context.env).list()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
    elif infos:
        click.echo(_table(infos))
    else:
        click.echo(
            f"no secrets in {context.env}; "
            f"set one with sqlifier secret set NAME --env {context.env}"
        )
    return 0


@group.command("rm")
@click.argument("name")
@ENV
@STACK_FILE
def rm(name: str, env: str | None, stack_file: str | None) -> int:
    """Forget NAME and all its versions."""
    context = load_context(stack_file, env)
    LocalStore(context.state_dir, context.env).remove(name)
    _audit(context, current_user(), "secret rm", name, "removed")
    click.echo(f"removed {name} from {context.env}, with all its versions")
    return 0


@group.command("rotate")
@click.argument("name")
@ENV
@STACK_FILE
def rotate(name: str, env: str | None, stack_file: str | None) -> int:
    """Deliver NAME's current version to the running instances that use it."""
    return rotate_command(load_context(stack_file, env), name)


def rotate_command(context: Context, name: str) -> int:
    """Deliver secret `name`'s current version to the running instances that use it: the
    agent restarts them one at a time through the drain path, and marks the version
    delivered once all have it. Without a running agent there is nothing to deliver to:
    the next `up` starts every instance with the current version."""
    store = LocalStore(context.state_dir, context.env)
    info = store.require(name)
    if not agent_alive(context.state_dir):
        click.echo(
            f"the agent of {context.stack.name} ({context.env}) is not running: nothing to "
            f"rotate; sqlifier up starts every instance with {name} version {info.version}"
        )
        return 0
    client = AgentClient(context.state_dir, context.env, timeout=600)
    answer = client.request("POST", "/v1/secrets/rotate", {"name": name})
    if not answer.get("ok"):
        raise SecretError(str(answer.get("error")), name=name, env=context.env)
    services: dict[str, str] = answer.get("services", {})
    if not services:
        click.echo(f"no service uses secret://local/{name} in {context.env}: nothing to restart")
        return 0
    failed = {s: r for s, r in services.items() if r != "ok"}
    for service, result in services.items():
        shown = "restarted one instance at a time" if result == "ok" else result
        click.echo(f"{service}: {shown}")
    if failed:
        raise SecretError(
            f"{name} version {answer['version']} was not delivered to every instance "
            f"({', '.join(failed)}); see sqlifier ps and sqlifier logs",
            name=name,
            env=context.env,
        )
    click.echo(f"{name} version {answer['version']} delivered in {context.env}")
    return 0


def _read_value(name: str, env: str) -> str:
    """The value from stdin when it is not a terminal, else from a hidden prompt."""
    stdin = sys.stdin.buffer if sys.stdin is not None else None  # None: no file 0 at all
    if stdin is not None and stdin.isatty():
        value: str = click.prompt(
            f"value of {name} in {env}", hide_input=True, confirmation_prompt=True
        )
        return value
    data = (
        stdin.read(MAX_VALUE_BYTES + 3) if stdin else b""
    )  # enough to tell a value that is too long
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    if not data:
        raise SecretError(
            f"no value on stdin for secret {name} in {env}; nothing was stored; "
            f"pipe one in (printf '%s' \"$VALUE\" | sqlifier secret set {name} --env {env}) "
            "or run the command in a terminal to be asked for it",
            name=name,
            env=env,
        )
    if len(data) > MAX_VALUE_BYTES:
        raise SecretError(
            f"the value on stdin for secret {name} in {env} is longer than "
            f"{MAX_VALUE_BYTES} bytes (64 KiB); nothing was stored",
            name=name,
            env=env,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(
            f"the value on stdin for secret {name} in {env} is not UTF-8 text; nothing was stored",
            name=name,
            env=env,
        ) from None  # the exception would carry the bytes


def _audit(context: Context, who: str, what: str, name: str, result: str) -> None:
    target = f"{context.stack.name}/{context.env}/{name}"
    # a secret is not a service: service="" keeps it out of `audit --service`
    AuditLog(context.state_dir / "audit.db").record(who, what, target, result, service="")


def _table(infos: list[SecretInfo]) -> str:
    cells = [list(_COLUMNS)]
    for info in infos:
        delivered = "-" if info.delivered is None else str(info.delivered)
        cells.append(
            [
                info.name,
                str(info.version),
                str(info.versions),
                _time(info.updated),
                info.updated_by,
                delivered,
            ]
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def _time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
