"""`sqlifier render --env E [-o DIR]`: the manifests a Kubernetes environment applies.

On stdout as one YAML stream (`---` between objects), or with `-o DIR` one file per object,
numbered in apply order; `--json` prints them as one Kubernetes List. Nothing is sent to a
cluster, and no secret is resolved: a Secret's keys are listed with empty values.
"""

from __future__ import annotations

from pathlib import Path

import click

from sqlifier.cli.options import ENV, JSON, STACK_FILE
from sqlifier.cli.output import print_diagnostics
from sqlifier.cli.workspace import load_context
from sqlifier.platform.kubernetes.render import render, to_json, to_yaml, write_dir

__all__ = ["command"]


@click.command("render")
@ENV
@STACK_FILE
@click.option(
    "-o",
    "--output",
    "output",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Write one file per object into DIR (default: one YAML stream on stdout).",
)
@JSON
def command(env: str | None, stack_file: str | None, output: str | None, as_json: bool) -> int:
    """The manifests of a Kubernetes environment, as YAML to read, diff and keep."""
    context = load_context(stack_file, env)
    print_diagnostics(list(context.warnings))
    objects = render(context.stack, context.env)
    if output is not None:
        written = write_dir(objects, Path(output), f"sqlifier render --env {context.env}")
        click.echo(f"wrote {len(written)} manifests to {output}", err=True)
    elif as_json:
        click.echo(to_json(objects), nl=False)
    else:
        click.echo(to_yaml(objects), nl=False)
    return 0
