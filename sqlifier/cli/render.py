"""`sqlifier render --env E [-o DIR]`: the manifests a Kubernetes environment applies.

On stdout as one YAML stream (`---` between objects), or with `-o DIR` one file per object,
numbered in apply order; `--json` prints them as one Kubernetes List. Nothing is sent to a
cluster, and no secret is resolved: a Secret's keys are listed with empty values.

When a service has an `slo`, its Prometheus rules come too (docs/slo.md, "On Kubernetes"):
`-o DIR` writes them to DIR/prometheus/prometheus-rules.yaml (beside the manifests, not
among them: the file is no Kubernetes object), `--prometheus-rules` prints them alone, and
`--prometheus-operator` makes them a PrometheusRule object among the manifests instead.
"""

from __future__ import annotations

from pathlib import Path

import click

from sqlifier.cli.options import ENV, JSON, STACK_FILE
from sqlifier.cli.output import print_diagnostics
from sqlifier.cli.workspace import load_context
from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.render import render, to_json, to_yaml, write_dir
from sqlifier.platform.kubernetes.render_common import Target
from sqlifier.platform.kubernetes.slo_rules import (
    prometheus_rule,
    rule_groups,
    rules_text,
    threshold_notes,
    write_rules,
)

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
@click.option(
    "--prometheus-rules",
    "rules_only",
    is_flag=True,
    help="Print only the Prometheus rules of the services' SLOs (a rules file).",
)
@click.option(
    "--prometheus-operator",
    "operator",
    is_flag=True,
    help="Put the SLOs' Prometheus rules among the manifests, as a PrometheusRule.",
)
@JSON
def command(
    env: str | None,
    stack_file: str | None,
    output: str | None,
    rules_only: bool,
    operator: bool,
    as_json: bool,
) -> int:
    """The manifests of a Kubernetes environment, as YAML to read, diff and keep."""
    context = load_context(stack_file, env)
    print_diagnostics(list(context.warnings))
    if rules_only and output is not None:
        raise UserError(
            "--prometheus-rules prints the rules on stdout; with -o DIR they are written to "
            "DIR/prometheus/prometheus-rules.yaml: give one or the other"
        )
    objects = [] if rules_only else render(context.stack, context.env)
    groups = rule_groups(context.stack, context.env)
    if rules_only and not groups:
        raise UserError(
            f"no service of environment {context.env} has an slo: there are no Prometheus "
            'rules to print; give a service one, like slo = { availability = "99.9%" }'
        )
    for note in threshold_notes(context.stack, context.env) if groups else ():
        click.echo(f"warning: {note}", err=True)
    if operator and groups:
        objects.append(prometheus_rule(Target.of(context.stack, context.env), groups))
    if rules_only and not operator:
        click.echo(
            rules_text(groups, f"sqlifier render --env {context.env} --prometheus-rules"),
            nl=False,
        )
    elif output is not None:
        command_line = f"sqlifier render --env {context.env}"
        written = write_dir(objects, Path(output), command_line)
        rules = write_rules(Path(output), [] if operator else groups, command_line)
        also = f" and {rules}" if rules is not None else ""
        click.echo(f"wrote {len(written)} manifests to {output}{also}", err=True)
    elif as_json:
        click.echo(to_json(objects), nl=False)
    else:
        click.echo(to_yaml(objects), nl=False)
    return 0
