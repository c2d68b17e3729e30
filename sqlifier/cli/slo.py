"""`sqlifier slo [SERVICE]`: each objective's window, good and total requests, the budget
left, the burn rates over 5m, 30m, 1h, 6h and 3d, and when the budget runs out at the
1-hour rate. Read from the SLO history (`.sqlifier/<env>/slo.db`), which the agent
writes every minute, so it works with the agent stopped too."""

from __future__ import annotations

import json
import time

import click

from sqlifier.cli.options import ENV, JSON, STACK_FILE, complete_services
from sqlifier.cli.workspace import load_context
from sqlifier.delivery.budget import policy_for
from sqlifier.engine.slo import SloCounts, SloFigures, figures
from sqlifier.errors import UserError
from sqlifier.store.slo import SloStore

__all__ = ["command"]


@click.command("slo")
@click.argument("service", required=False, shell_complete=complete_services)
@ENV
@STACK_FILE
@JSON
def command(service: str | None, env: str | None, stack_file: str | None, as_json: bool) -> int:
    """Service level objectives: budget left, burn rates, time to exhaustion."""
    context = load_context(stack_file, env)
    services = context.stack.services_for(context.env)
    if service is not None and service not in services:
        raise UserError(f"unknown service {service!r}; services: {', '.join(services)}")
    names = [service] if service is not None else list(services)
    with_slo = [n for n in names if services[n].slo is not None]
    if not with_slo:
        what = f"service {service} has" if service else "no service has"
        raise UserError(
            f"{what} no slo in {context.stack.path.name}; add one, like "
            f'slo = {{ availability = "99.9%", window = "30d" }} under [services.{names[0]}]'
        )
    now = time.time()
    path = context.state_dir / "slo.db"
    store = SloStore(path) if path.exists() else None
    found: list[SloFigures] = []
    try:
        for name in with_slo:
            slo = services[name].slo
            assert slo is not None
            for objective in slo.objectives:
                counts = SloCounts(objective.target, slo.window)
                if store is not None:
                    store.load(name, objective.name, counts, now)
                found.append(figures(name, objective.name, counts, now))
    finally:
        if store is not None:
            store.close()
    if as_json:
        rows = []
        for item in found:
            row = item.to_json()
            row["policy"] = policy_for(context.stack, context.env, item.service).value
            rows.append(row)
        click.echo(json.dumps(rows, indent=2))
        return 0
    for item in found:
        spec = services[item.service].slo
        assert spec is not None
        threshold = next(
            (o.threshold for o in spec.objectives if o.name == item.objective and o.threshold),
            None,
        )
        click.echo("\n".join(_lines(item, threshold)))
    if store is None:
        click.echo(f"(nothing recorded yet in {path}: the agent records while it runs)")
    return 0


def _lines(item: SloFigures, threshold: float | None) -> list[str]:
    what = item.objective
    if threshold is not None:
        what += f" (within {threshold * 1000:g}ms)"
    left = "no requests yet" if item.budget_left is None else f"{item.budget_left * 100:.1f}%"
    share = f" ({item.good / item.total * 100:.3f}% good)" if item.total else ""
    rates = "  ".join(
        f"{_duration(w)} {'-' if r is None else f'{r:.2f}'}" for w, r in item.burn_rates.items()
    )
    return [
        f"{item.service}: {what} {item.target * 100:g}% over {_duration(item.window)}",
        f"  good/total: {item.good:,.0f} / {item.total:,.0f}{share}",
        f"  budget left: {left}",
        f"  burn rate: {rates}",
        f"  exhausted: {_exhaustion(item)}",
    ]


def _exhaustion(item: SloFigures) -> str:
    if item.budget_left is not None and item.budget_left <= 0:
        return "now: the budget is spent"
    if item.exhaustion is None:
        return "not at the current rate"
    return f"in {_duration(item.exhaustion)} at the 1h burn rate"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            value = seconds / size
            return f"{value:g}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{seconds:.0f}s"
