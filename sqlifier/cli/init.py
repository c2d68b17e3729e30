"""`sqlifier init`: scaffold a new stack."""

from __future__ import annotations

import re
from pathlib import Path

import click

from sqlifier.cli import scaffold
from sqlifier.errors import UserError

__all__ = ["command"]


@click.command("init")
@click.argument("directory", default=".")
@click.option("--name", help="The stack's name (default: the directory's name).")
def command(directory: str, name: str | None) -> int:
    """Create a stack in DIRECTORY: sqlifier.toml, two rules and a tiny web service.

    Refuses to overwrite any file that already exists.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise UserError(f"{directory} exists and is not a directory")
    stack_name = name or _stack_name(root.resolve().name)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", stack_name):
        raise UserError(
            f"invalid stack name {stack_name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 63 characters)"
        )
    files = scaffold.files(stack_name)
    existing = [path for path in files if (root / path).exists()]
    if existing:
        raise UserError(
            f"{directory} already has {', '.join(existing)}; sqlifier init never overwrites "
            "files (choose an empty directory)"
        )
    for path, content in files.items():
        target = root / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot create {target}: {exc.strerror}") from None
        click.echo(f"created {target}")
    where = "" if directory == "." else f"cd {directory} && "
    click.echo(f"\nNext: {where}sqlifier check")
    return 0


def _stack_name(folder: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", folder.lower()).strip("-")
    return cleaned or "stack"
