"""`sqlifier config SERVICE`: a service's effective configuration in one environment, with
every secret masked (references are shown; values are never resolved here)."""

from __future__ import annotations

import json
import re
from typing import Any

import click

from sqlifier.cli.options import ENV, JSON, STACK_FILE, complete_services
from sqlifier.cli.workspace import load_context
from sqlifier.errors import UserError
from sqlifier.secrets.redact import MASK
from sqlifier.stack.envfile import read_env_file

__all__ = ["command"]

# Keys whose plain values are masked too: they look like secrets (check warns about them).
_SECRETISH = re.compile(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_KEY|PRIVATE_KEY|ACCESS_KEY)", re.I)


@click.command("config")
@click.argument("service", shell_complete=complete_services)
@ENV
@STACK_FILE
@JSON
def command(service: str, env: str | None, stack_file: str | None, as_json: bool) -> int:
    """SERVICE's effective configuration in an environment: the stack file with the
    environment's overrides and env_file applied; secrets as references, values masked."""
    context = load_context(stack_file, env)
    services = context.stack.services_for(context.env)
    spec = services.get(service)
    if spec is None:
        raise UserError(f"unknown service {service!r}; services: {', '.join(services)}")
    environment = context.stack.environment(context.env)
    merged: dict[str, dict[str, str]] = {}
    if environment.env_file is not None:
        path = context.stack.root / environment.env_file
        for key, value in read_env_file(path, environment.env_file).items():
            merged[key] = {"value": value, "from": f"env_file {environment.env_file}"}
    for key, value in spec.env.items():
        merged[key] = {"value": value, "from": "stack file"}
    env_out = {
        key: {**item, "value": MASK if _SECRETISH.search(key) else item["value"]}
        for key, item in sorted(merged.items())
    }
    secrets_out = {
        name: {
            "ref": ref.ref,
            "delivered_as": f"file {ref.file}" if ref.file else "environment variable",
            "refresh": ref.refresh,
            "value": MASK,
        }
        for name, ref in sorted(spec.secrets.items())
    }
    data: dict[str, Any] = {
        "service": spec.name,
        "env": context.env,
        "run": spec.run,
        "source": str(spec.source),
        "instances": spec.instances,
        "port": spec.port,
        "stateful": spec.stateful,
        "routes": [str(r) for r in spec.routes],
        "depends_on": list(spec.depends_on),
        "labels": dict(spec.labels),
        "environment": env_out,
        "secrets": secrets_out,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return 0
    click.echo(f"{spec.name} in {context.env}")
    for key in ("run", "source", "instances", "port", "stateful"):
        if data[key] is not None:
            click.echo(f"  {key}: {data[key]}")
    for key in ("routes", "depends_on"):
        if data[key]:
            click.echo(f"  {key}: {', '.join(data[key])}")
    for key, value in data["labels"].items():
        click.echo(f"  label {key}: {value}")
    if env_out:
        click.echo("  environment:")
        for key, item in env_out.items():
            click.echo(f"    {key}={item['value']}   ({item['from']})")
    if secrets_out:
        click.echo("  secrets:")
        for name, secret in secrets_out.items():
            every = secret["refresh"]
            refresh = f", refreshed every {every:g}s" if isinstance(every, float) else ""
            how = f"{secret['ref']}, as {secret['delivered_as']}{refresh}"
            click.echo(f"    {name}={MASK}   ({how})")
    return 0
