"""`sqlifier logs`: what a service's instances wrote, filtered by instance, level, time.

`--json` prints each line as the JSON object the log holds (`t`, `stream`, `level`,
`line`) with the `instance` that wrote it: one object a line (JSON Lines), so that
`--follow --json` can be read line by line as it goes.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sqlifier.cli.options import ENV, JSON, STACK_FILE, complete_services
from sqlifier.cli.workspace import load_context, on_cluster
from sqlifier.errors import UserError

__all__ = ["logs"]

_RANK = {"debug": 0, "info": 1, "warn": 2, "error": 3, "critical": 4}
_LEVEL_ALIASES = {"warning": "warn", "fatal": "critical"}
_SINCE = re.compile(r"^([0-9]+)(s|m|h|d)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@click.command("logs")
@click.argument("service", shell_complete=complete_services)
@ENV
@STACK_FILE
@click.option("--follow", "-F", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
@click.option("--instance", "-i", help="Only this instance, like web-1.")
@click.option(
    "--level", "-l", help="Only lines at this level or worse: debug, info, warn, error, critical."
)
@click.option("--since", help="Only lines from the last D, like 10m or 2h.")
@JSON
def logs(
    service: str,
    env: str | None,
    stack_file: str | None,
    follow: bool,
    instance: str | None,
    level: str | None,
    since: str | None,
    as_json: bool,
) -> int:
    """Print SERVICE's log lines, oldest first: time, instance, level, line."""
    context = load_context(stack_file, env)
    services = context.stack.services_for(context.env)
    if service not in services:
        raise UserError(f"unknown service {service!r}; services: {', '.join(services)}")
    if instance is not None and not instance.startswith(f"{service}-"):
        raise UserError(f"instance {instance!r} is not one of {service}'s (they are {service}-N)")
    minimum = _level(level)
    if on_cluster(context):
        from sqlifier.cli import cluster  # noqa: PLC0415 (the Kubernetes client: when used)

        window = _since(since) if since else None
        show = _as_json if as_json else _as_text
        return cluster.logs(context, service, instance, minimum, window, follow, show)
    start = time.time() - _since(since) if since else 0.0
    folder = context.state_dir / "logs"
    mine = re.compile(rf"{re.escape(instance)}\.log") if instance else _instances_of(service)
    current = _files(folder, mine)
    if instance is not None and not current and not follow:
        kept = [p.name.removesuffix(".log") for p in _files(folder, _instances_of(service))]
        raise UserError(
            f"no log of instance {instance!r} in {context.env}; "
            + (f"{service}'s instances with logs: {', '.join(kept)}" if kept else "none yet")
        )
    records: list[dict[str, Any]] = []
    offsets: dict[Path, int] = {}
    for path in [*_rotated(current), *current]:
        found, offsets[path] = _read(path, minimum, start)
        records.extend(found)
    show = _as_json if as_json else _as_text
    for record in sorted(records, key=lambda item: float(item["t"])):
        click.echo(show(record))
    if follow:
        _follow(folder, mine, minimum, offsets, show)
    return 0


def _as_text(record: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(record["t"]))
    return f"{stamp} {record['instance']} {record['level'].upper():<8} {record['line']}"


def _as_json(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


def _files(folder: Path, mine: re.Pattern[str]) -> list[Path]:
    """This service's (or instance's) current log files: `web-0.log`, not `web-api-0.log`."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if mine.fullmatch(p.name))


def _level(level: str | None) -> int:
    if level is None:
        return 0
    name = _LEVEL_ALIASES.get(level.lower(), level.lower())
    if name not in _RANK:
        raise UserError(f"unknown level {level!r}; levels: {', '.join(_RANK)}")
    return _RANK[name]


def _since(text: str) -> float:
    match = _SINCE.match(text)
    if not match:
        raise UserError(f"--since takes a duration like 30s, 10m, 2h or 1d, not {text!r}")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def _rotated(paths: list[Path]) -> list[Path]:
    older = []
    for path in paths:
        for index in range(9, 0, -1):
            candidate = path.with_name(f"{path.name}.{index}")
            if candidate.exists():
                older.append(candidate)
    return older


def _read(
    path: Path, minimum: int, start: float, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """The records of one log file from `offset` that pass the filters, each with the
    instance that wrote it, and where it stopped."""
    instance = path.name.split(".log", 1)[0]
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    complete = data[: data.rfind(b"\n") + 1]
    records = []
    for raw in complete.splitlines():
        record = _record(raw)
        if record and _RANK.get(record["level"], 1) >= minimum and record["t"] >= start:
            records.append({"t": record["t"], "instance": instance, **record})
    return records, offset + len(complete)


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    ok = (
        isinstance(record, dict)
        and {"t", "level", "line"} <= record.keys()
        and isinstance(record["t"], int | float)
        and isinstance(record["level"], str)
    )
    return record if ok else None


def _follow(
    folder: Path,
    mine: re.Pattern[str],
    minimum: int,
    offsets: dict[Path, int],
    show: Callable[[dict[str, Any]], str],
) -> None:
    """Print what is appended from where the first read stopped; across a rotation, the
    rest of the old file (now `.1`) first."""
    try:
        while True:
            time.sleep(0.2)
            for path in _files(folder, mine):
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue  # between a rotation's rename and the next write
                offset = offsets.get(path, 0)
                records: list[dict[str, Any]] = []
                if size < offset:  # rotated: finish the old file, then start the new
                    older = path.with_name(path.name + ".1")
                    records, _ = _read(older, minimum, 0.0, offset)
                    offset = 0
                more, offsets[path] = _read(path, minimum, 0.0, offset)
                for record in [*records, *more]:
                    click.echo(show(record))
    except KeyboardInterrupt:
        return


def _instances_of(service: str) -> re.Pattern[str]:
    """The current log files of `service`'s instances: `web-0.log`, not `web-api-0.log`."""
    return re.compile(rf"{re.escape(service)}-\d+\.log")
