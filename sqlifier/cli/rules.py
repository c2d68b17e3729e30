"""`sqlifier rules ...`: list, explain, test, backtest, pause and resume rules."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from sqlifier.agent.client import AgentClient, agent_alive
from sqlifier.agent.kubernetes_requests import ClusterAgentClient, cluster_client
from sqlifier.cli.options import ENV, JSON, STACK_FILE, complete_services, duration, resolve_env
from sqlifier.cli.workspace import Context, display_path, load_context
from sqlifier.engine.compiled import CompiledRule
from sqlifier.engine.machine import Settings
from sqlifier.engine.replay import (
    Replay,
    Sample,
    compare_actions,
    compile_rules,
    read_expected,
    read_samples,
    samples_from_history,
    show_time,
)
from sqlifier.errors import DiagnosticsError, UserError
from sqlifier.signals.slo import is_slo_key, replay_values
from sqlifier.stack import load_stack
from sqlifier.stack.model import PlatformKind, Stack
from sqlifier.stack.rulefiles import load_rules
from sqlifier.store.audit import current_user
from sqlifier.store.decisions import DecisionLog
from sqlifier.store.history import History
from sqlifier.store.slo import SloStore

__all__ = ["group"]


# The longest virtual time `rules test` replays: some two minutes of ticks, one a second.
MAX_REPLAY = 31 * 86400


@click.group("rules")
def group() -> None:
    """See, test and control the stack's rules."""


# --- live: list, explain, pause, resume ---------------------------------------------------


def _client(env: str | None, stack_file: str | None) -> AgentClient | ClusterAgentClient:
    context = load_context(stack_file, env)
    if context.stack.environment(context.env).platform is PlatformKind.KUBERNETES:
        return cluster_client(context.stack, context.env, current_user())  # no port: ConfigMaps
    if not agent_alive(context.state_dir):
        raise UserError(
            f"the agent of {context.stack.name} ({context.env}) is not running; "
            "start it with sqlifier up (rules test and rules backtest work without it)"
        )
    return AgentClient(context.state_dir, context.env)


@group.command("list")
@ENV
@STACK_FILE
@JSON
def list_rules(env: str | None, stack_file: str | None, as_json: bool) -> int:
    """One line per rule and service: state, current values, last firing."""
    answer = _client(env, stack_file).request("GET", "/v1/rules")
    rows: list[dict[str, Any]] = answer["rules"]
    # What concerns every rule goes to stderr, so that --json prints the rows alone.
    for problem in (answer.get("error"), answer.get("decisions_error")):
        if problem:
            click.echo(f"rules: {problem}\n", err=True)
    if as_json:
        # One object per rule and service, like every other listing; a paused engine
        # shows in each row's state.
        click.echo(json.dumps(rows, indent=2))
        return 0
    if answer.get("paused"):
        click.echo("all rules are paused (sqlifier rules resume turns them back on)\n")
    if not rows:
        click.echo("no rules are evaluated yet")
        return 0
    cells = [["RULE", "SERVICE", "STATE", "VALUE", "LAST FIRED"]]
    for row in rows:
        values = "; ".join(f"{k}: {v}" for k, v in row["values"].items())
        state = row["state"] + (
            " (dry run)" if row.get("dry_run") and row["state"] != "dry run" else ""
        )
        cells.append([row["rule"], row["service"], state, values, _ago(row.get("last_fired"))])
    click.echo(_table(cells))
    return 0


@group.command("explain")
@click.argument("rule")
@click.option(
    "--service",
    "-s",
    shell_complete=complete_services,
    help="The service (default: every service the rule applies to).",
)
@ENV
@STACK_FILE
@JSON
def explain(
    rule: str, service: str | None, env: str | None, stack_file: str | None, as_json: bool
) -> int:
    """Why RULE did or did not fire: its window, its values against the thresholds, its
    last decisions. RULE is its RULE name, or FILE:LINE."""
    query: dict[str, Any] = {"rule": rule}
    if service:
        query["service"] = service
    answer = _client(env, stack_file).request("POST", "/v1/rules/explain", query)
    if not answer.get("ok"):
        raise UserError(str(answer.get("error")))
    if as_json:
        click.echo(json.dumps(answer["explain"], indent=2))
        return 0
    for index, item in enumerate(answer["explain"]):
        if index:
            click.echo("")
        click.echo(render_explain(item))
    return 0


def render_explain(item: dict[str, Any]) -> str:
    lines = [f"{item['rule']} for {item['service']}: {item['state']}"]
    if item.get("note"):
        lines.append(f"  {item['note']}")
    for test in item["tests"]:
        line = f"  {test['test']}: {test['value']}"
        if test.get("threshold"):
            verdict = {True: "holds", False: "does not hold", None: "no data"}[test.get("holds")]
            line += f" (needs {test['threshold']}: {verdict})"
        if test.get("window") and test["kind"] == "level":
            line += f"; held {test['held']} of {test['window']}"
        elif test.get("window"):
            line += f" in the last {test['window']}"
        lines.append(line)
    if item.get("cooldown_until"):
        lines.append(f"  cooldown until {_when(item['cooldown_until'])}")
    for target, used in item.get("budget", {}).items():
        lines.append(f"  action budget of {target}: {used}")
    for target, holder in item.get("locks", {}).items():
        lines.append(f"  lock on {target} held by {holder}")
    if item.get("paused"):
        lines.append("  paused: it is evaluated but does not act")
    if item.get("dry_run"):
        lines.append("  DRY RUN: it records what it would do and does nothing")
    decisions = item.get("decisions") or []
    if decisions:
        lines.append("  last decisions:")
        for d in decisions[-10:]:
            what = f" {d['action']} {d['detail']}" if d.get("action") else ""
            lines.append(f"    {_when(d['t'])}  {d['outcome']}{what}: {d['reason']}")
    else:
        lines.append("  no decisions recorded yet")
    return "\n".join(lines)


@group.command("pause")
@click.argument("rule", required=False)
@ENV
@STACK_FILE
def pause(rule: str | None, env: str | None, stack_file: str | None) -> int:
    """Stop RULE (or, without RULE, all automation) from acting; it is still evaluated
    and explained. Recorded in the audit log."""
    return _switch("pause", rule, env, stack_file)


@group.command("resume")
@click.argument("rule", required=False)
@ENV
@STACK_FILE
def resume(rule: str | None, env: str | None, stack_file: str | None) -> int:
    """Let RULE (or, without RULE, all automation) act again."""
    return _switch("resume", rule, env, stack_file)


def _switch(what: str, rule: str | None, env: str | None, stack_file: str | None) -> int:
    answer = _client(env, stack_file).request("POST", f"/v1/rules/{what}", {"rule": rule})
    if not answer.get("ok"):
        raise UserError(str(answer.get("error")))
    click.echo(answer["message"])
    return 0


# --- offline: test and backtest ------------------------------------------------------------


def _load(
    files: tuple[str, ...], stack_path: str | None
) -> tuple[list[CompiledRule], Stack | None]:
    """Checked rules (FILES, else the stack's) and the stack, when one is named."""
    stack = None
    if stack_path is not None:
        stack, _ = load_stack(Path(stack_path), stack_path)
    if files:
        paths = [(Path(f), _rule_name(Path(f), f, stack)) for f in dict.fromkeys(files)]
    elif stack is not None:
        paths = [(p, _rule_name(p, display_path(p), stack)) for p in stack.rule_files()]
    else:
        paths = []
    loaded = load_rules(paths, stack.service_names if stack else None)
    errors = [d for d in loaded.diagnostics if d.is_error]
    if errors:
        raise DiagnosticsError(errors)
    return compile_rules([f.rules for f in loaded.files if f.rules is not None]), stack


def _rule_name(path: Path, given: str, stack: Stack | None) -> str:
    """Rules are named FILE:LINE relative to the stack's folder, as the agent names them."""
    if stack is None:
        return given
    try:
        return str(path.resolve().relative_to(stack.root.resolve()))
    except ValueError:
        return given


def _settings(stack: Stack | None) -> Settings:
    if stack is None:
        return Settings()
    engine = stack.engine
    return Settings(engine.scale_down_delay, engine.action_budget, engine.action_window)


@group.command("test")
@click.argument("rules", nargs=-1, required=True, type=click.Path())
@click.option(
    "--samples",
    "samples_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV: t,service,signal,value,message.",
)
@click.option(
    "-f",
    "--file",
    "--stack",
    "stack_file",
    type=click.Path(dir_okay=False),
    help="A stack file: instance counts, services, [engine] (default: none).",
)
@ENV
@click.option("--until", help="Run the clock to this time (default: the last sample's).")
@click.option(
    "--explain", "with_decisions", is_flag=True, help="Also print the decisions not to act."
)
@click.option(
    "--expect",
    "expect_file",
    type=click.Path(dir_okay=False),
    help="Expected actions (JSON or CSV); exit 1 on any difference.",
)
@JSON
def test(
    rules: tuple[str, ...],
    samples_file: str,
    stack_file: str | None,
    env: str | None,
    until: str | None,
    with_decisions: bool,
    expect_file: str | None,
    as_json: bool,
) -> int:
    """Replay SAMPLES through RULES on a virtual clock and print every action with its time.

    Nothing runs: actions complete at once in a simulated stack. Each service starts with
    the stack file's instance count (or 1), on release `current` with `previous_stable`
    before it.
    """
    env = resolve_env(env)
    compiled, stack = _load(rules, stack_file)
    samples, epoch = read_samples(Path(samples_file), samples_file)
    end = _until(until, samples_file) if until else None
    if end is not None and epoch is not None and end < 10 * 365 * 86400:
        end += epoch
    instances = {n: s.instances for n, s in stack.services_for(env).items()} if stack else {}
    labels = {n: s.labels for n, s in stack.services_for(env).items()} if stack else {}
    start = epoch if epoch is not None else 0.0
    stop = end if end is not None else (samples[-1].t if samples else start)
    if stop - start > MAX_REPLAY:
        raise UserError(
            f"{samples_file}: the replay would run {(stop - start) / 86400:,.0f} days of virtual "
            f"time, from {'the first sample' if epoch is not None else 'second 0'} to "
            f"{'--until' if end is not None else 'the last sample'}; rules test replays at most "
            f"{MAX_REPLAY // 86400} days (a tick a second): trim the samples or set --until"
        )
    replay = Replay(compiled, samples, instances, _settings(stack), env, labels)
    actions = replay.run(start=start, until=end)
    rows = [a.to_json(epoch) for a in actions]
    if as_json:
        out: Any = rows
        if with_decisions:
            out = {
                "actions": rows,
                "decisions": [_decision_json(d, epoch) for d in replay.decisions],
            }
        click.echo(json.dumps(out, indent=2))
    else:
        if with_decisions:
            for d in replay.decisions:
                what = f" {d.action} {d.detail}" if d.action else ""
                click.echo(
                    f"{_t(d.t, epoch):>8}  {d.rule}  {d.service}  {d.outcome}{what}: {d.reason}"
                )
            click.echo("")
        for row in rows:
            click.echo(f"{_t(row['t'], None):>8}  {_action_line(row)}")
        click.echo(
            f"{len(rows)} action{'s' * (len(rows) != 1)} in {len(samples)} samples", err=True
        )
    if expect_file:
        problems = compare_actions(rows, read_expected(Path(expect_file), expect_file))
        for problem in problems:
            click.echo(f"{expect_file}: {problem}", err=True)
        if problems:
            return 1
    return 0


def _decision_json(decision: Any, epoch: float | None) -> dict[str, Any]:
    data: dict[str, Any] = decision.to_json()
    data["t"] = show_time(decision.t, epoch)
    return data


def _t(t: Any, epoch: float | None) -> str:
    if isinstance(t, str):
        return t
    if epoch is not None:
        return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{t:g}s"


def _until(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"--until {text}: expected seconds or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@group.command("backtest")
@click.argument("rules", nargs=-1, type=click.Path())
@click.option("--since", default="24h", show_default=True, help="How far back: 30m, 24h, 7d.")
@ENV
@STACK_FILE
@JSON
def backtest(
    rules: tuple[str, ...], since: str, env: str | None, stack_file: str | None, as_json: bool
) -> int:
    """Run RULES (default: the stack's) over the recorded history and show what they would
    have done, beside what the running rules actually did."""
    context = load_context(stack_file, env)
    compiled, _ = _load(rules, str(context.stack_file))
    seconds = duration(since)
    now = time.time()
    path = context.state_dir / "history.db"
    if not path.exists():
        raise UserError(
            f"no history recorded for {context.stack.name} ({context.env}) yet: "
            f"{display_path(path)} does not exist; the agent records it while it runs"
        )
    services = context.stack.services_for(context.env)
    history = History(path)
    try:
        rows = history.read(now - seconds, now, _services_read(compiled, services))
        # SLO signals are computed again from the SLO history, for any window a rule asks.
        samples = samples_from_history(
            r for r in rows if _needed(r[2], compiled) and not is_slo_key(r[2])
        )
    finally:
        history.close()
    samples = sorted(samples + _slo_samples(context, compiled, now - seconds, now), key=_at)
    replay = Replay(
        compiled,
        samples,
        {n: s.instances for n, s in services.items()},
        _settings(context.stack),
        context.env,
        {n: s.labels for n, s in services.items()},
    )
    replay.run(start=now - seconds, until=now)
    would = [a.to_json(now) for a in replay.actions]
    did: list[dict[str, Any]] = []
    decisions = context.state_dir / "decisions.db"
    if decisions.exists():
        did = [
            {
                "t": _t(d["t"], 0.0),
                "rule": d["rule"],
                "service": d["service"],
                "action": d["action"],
                "detail": d["detail"],
                "reason": d["reason"],
            }
            for d in DecisionLog(decisions).read(
                since=now - seconds, outcomes=("fired", "would fire"), limit=10_000
            )
        ]
    if as_json:
        click.echo(json.dumps({"since": now - seconds, "would": would, "did": did}, indent=2))
        return 0
    click.echo(f"backtest over the last {since} ({len(samples)} recorded values):\n")
    click.echo(f"would have done ({len(would)}):")
    for row in would:
        click.echo(f"  {row['t']}  {_action_line(row)}")
    click.echo(f"\nactually done ({len(did)}):")
    for row in did:
        click.echo(f"  {row['t']}  {_action_line(row)}")
    return 0


def _slo_samples(
    context: Context, rules: list[CompiledRule], since: float, until: float
) -> list[Sample]:
    keys = {t.key for rule in rules for t in rule.tests if is_slo_key(t.key)}
    path = context.state_dir / "slo.db"
    if not keys or not path.exists():
        return []
    store = SloStore(path)
    try:
        services = context.stack.services_for(context.env)
        rows = replay_values(services, store, keys, since, until)
        return [Sample(t, service, key, value) for t, service, key, value in rows]
    finally:
        store.close()


def _at(sample: Sample) -> float:
    return sample.t


def _services_read(rules: list[CompiledRule], services: Mapping[str, Any]) -> set[str]:
    """Only the history of the services the rules apply to is read."""
    wanted: set[str] = set()
    for rule in rules:
        wanted.update(rule.candidates(services))
        wanted.update(t.service for t in rule.tests if t.service is not None)
    return wanted


def _needed(key: str, rules: list[CompiledRule]) -> bool:
    """Only the signals the rules read (and the instance counts) are replayed."""
    if key in ("instances", "ready_instances"):
        return True
    base = "log" if key.startswith("log.") else key
    return any(t.key == base for rule in rules for t in rule.tests)


def _action_line(row: Mapping[str, Any]) -> str:
    return f"{row['rule']}  {row['service']}  {row['action']} {row['detail']}  ({row['reason']})"


# --- printing ---------------------------------------------------------------------------


def _table(cells: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in cells
    )


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M:%SZ")


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    seconds = max(0, int(time.time() - t))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"
