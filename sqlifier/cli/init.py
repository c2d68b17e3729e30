"""`sqlifier init`: scaffold a new stack."""

from __future__ import annotations

import re
from pathlib import Path

import click

from sqlifier.cli import scaffold
from sqlifier.errors import UserError
from sqlifier.store.audit import current_user

__all__ = ["command"]


@click.command("init")
@click.argument("directory", default=".")
@click.option("--name", help="The stack's name (default: the directory's name).")
def command(directory: str, name: str | None) -> int:
    """Create a stack in DIRECTORY: sqlifier.toml, two rules, a tiny web service and a
    .gitignore that keeps .sqlifier/ (tokens, keys, audit log) out of git.

    Refuses to overwrite any file that already exists; an existing .gitignore gets the
    .sqlifier/ line added instead.
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
    files = scaffold.files(stack_name, current_user())
    existing = [path for path in files if (root / path).exists() and path != scaffold.GITIGNORE]
    if existing:
        raise UserError(
            f"{directory} already has {', '.join(existing)}; sqlifier init never overwrites "
            "files (choose an empty directory)"
        )
    for path, content in files.items():
        target = root / path
        if path == scaffold.GITIGNORE and target.exists():
            click.echo(_ignore_state(target))
            continue
        _create(target, content)
        click.echo(f"created {target}")
    where = "" if directory == "." else f"cd {directory} && "
    click.echo(f"\nNext: {where}sqlifier check")
    return 0


def _stack_name(folder: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", folder.lower()).strip("-")
    return cleaned or "stack"


def _create(target: Path, content: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot create {target}: {exc.strerror}") from None


def _ignore_state(gitignore: Path) -> str:
    """Add `.sqlifier/` to an existing .gitignore unless a line already names it; what
    was done. The user's lines are kept as they are."""
    line = scaffold.GITIGNORE_LINE
    try:
        text = gitignore.read_text(encoding="utf-8")
        if {line, line.rstrip("/"), "/" + line, "/" + line.rstrip("/")} & {
            entry.strip() for entry in text.splitlines()
        }:
            return f"kept {gitignore} (it already ignores {line})"
        with gitignore.open("a", encoding="utf-8") as handle:
            handle.write(("" if text.endswith("\n") or not text else "\n") + line + "\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise UserError(f"cannot add {line} to {gitignore}: {why}") from None
    return f"added {line} to {gitignore}"
