"""`sqlifier ps`, `scale`, `restart`: what runs, and changing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sqlifier.agent.client import AgentClient, agent_alive, read_info
from sqlifier.cli.workspace import load_context
from sqlifier.errors import UserError
from sqlifier.runtime.process import is_same_process

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
        left = _left_behind(context.state_dir)
        if as_json:
            click.echo(json.dumps(left, indent=2))
        elif left:
            click.echo(table(left))
            click.echo(
                "\nthe agent is not running: these instances were left by one that died; "
                "sqlifier up adopts them, sqlifier down stops them"
            )
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


def _left_behind(state_dir: Path) -> list[dict[str, Any]]:
    """Instances a dead agent recorded that are still those processes."""
    info = read_info(state_dir) or {}
    if info.get("phase") not in ("starting", "running", "stopping"):
        return []
    alive = []
    for record in info.get("instances", []):
        pid, started = record.get("pid"), record.get("started")
        if pid and started and is_same_process(int(pid), float(started)):
            alive.append({**record, "state": "orphaned", "reason": "its agent died"})
    return alive


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
