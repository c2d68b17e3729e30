"""`sqlifier ps`, `scale`, `restart`: what runs, and changing it."""

from __future__ import annotations

import json
from typing import Any

import click

from sqlifier.agent.client import AgentClient, agent_alive
from sqlifier.cli.workspace import load_context
from sqlifier.errors import UserError

__all__ = ["ps", "restart", "scale", "table"]

_ENV = click.option(
    "--env", "-e", "env", help="The environment (default: $SQLIFIER_ENV, else dev)."
)
_FILE = click.option(
    "-f", "--file", "stack_file", help="The stack file (default: found from here)."
)
_COLUMNS = ("service", "instance", "state", "pid", "address", "restarts", "reason")


@click.command("ps")
@_ENV
@_FILE
@click.option("--json", "as_json", is_flag=True, help="Print the instances as JSON.")
def ps(env: str | None, stack_file: str | None, as_json: bool) -> int:
    """Services and instances with state, pid, address, restarts."""
    context = load_context(stack_file, env)
    if not agent_alive(context.state_dir):
        if as_json:
            click.echo("[]")
        else:
            click.echo(f"nothing is running for {context.stack.name} ({context.env})")
        return 0
    status = AgentClient(context.state_dir, context.env).request("GET", "/v1/status")
    instances: list[dict[str, Any]] = status["instances"]
    if as_json:
        click.echo(json.dumps(instances, indent=2))
        return 0
    click.echo(table(instances))
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[c.upper() for c in _COLUMNS]]
    cells += [["-" if row.get(c) is None else str(row.get(c)) for c in _COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(_COLUMNS) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in cells
    )


@click.command("scale")
@click.argument("service")
@click.argument("instances", type=click.IntRange(0, 1000))
@_ENV
@_FILE
def scale(service: str, instances: int, env: str | None, stack_file: str | None) -> int:
    """Run INSTANCES instances of SERVICE: only the added or removed ones change."""
    return _operate("scale", {"service": service, "instances": instances}, env, stack_file)


@click.command("restart")
@click.argument("service")
@_ENV
@_FILE
def restart(service: str, env: str | None, stack_file: str | None) -> int:
    """Replace SERVICE's instances one at a time, each after its replacement is ready."""
    return _operate("restart", {"service": service}, env, stack_file)


def _operate(what: str, body: dict[str, Any], env: str | None, stack_file: str | None) -> int:
    context = load_context(stack_file, env)
    answer = AgentClient(context.state_dir, context.env).request("POST", f"/v1/{what}", body)
    if not answer.get("ok"):
        raise UserError(str(answer.get("error")))
    mine = [i for i in answer["status"]["instances"] if i["service"] == body["service"]]
    click.echo(table(mine))
    return 0
