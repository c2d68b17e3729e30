"""Which stack file and which rule files a command works on."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlifier.cli.options import resolve_env
from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.errors import DiagnosticsError, UserError
from sqlifier.stack.names import ENV_NAME, STACK_FILE, find_stack

if TYPE_CHECKING:
    from sqlifier.stack.model import Stack

__all__ = [
    "Context",
    "Place",
    "Workspace",
    "display_path",
    "load_context",
    "locate",
    "on_cluster",
    "resolve",
]


@dataclass
class Workspace:
    stack: Stack | None
    stack_display: str | None
    rule_paths: list[tuple[Path, str]]
    diagnostics: list[Diagnostic] = field(default_factory=list)


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the current directory when inside it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def resolve(files: tuple[str, ...], stack_file: str | None) -> Workspace:
    """The stack (given, named among `files`, or found from here up) and the rule files.

    Rule files are `files` when given, else those the stack's `rules` patterns match.
    """
    named_stacks = [f for f in files if f.endswith(".toml")]
    rule_args = [f for f in files if not f.endswith(".toml")]
    if stack_file is None and named_stacks:
        stack_file = named_stacks[0]
    path = Path(stack_file) if stack_file else find_stack(Path.cwd())
    workspace = Workspace(None, None, [])
    if path is not None:
        workspace.stack_display = stack_file if stack_file else display_path(path)
        from sqlifier.stack.stackfile import load_stack  # noqa: PLC0415

        try:
            workspace.stack, warnings = load_stack(path, workspace.stack_display)
            workspace.diagnostics.extend(warnings)
        except DiagnosticsError as exc:
            workspace.diagnostics.extend(exc.diagnostics)
    if rule_args:
        seen: set[Path] = set()
        for name in rule_args:
            try:
                key = Path(name).resolve()
            except (OSError, RuntimeError):  # a symbolic link loop: reading it says so
                key = Path(name).absolute()
            if key not in seen:
                seen.add(key)
                workspace.rule_paths.append((Path(name), name))
    elif workspace.stack is not None:
        stack = workspace.stack
        workspace.rule_paths = [(p, display_path(p)) for p in stack.rule_files()]
        if not workspace.rule_paths:
            workspace.diagnostics.append(
                Diagnostic(
                    workspace.stack_display or STACK_FILE,
                    1,
                    1,
                    Severity.WARNING,
                    f"the rule patterns {', '.join(stack.rules)} match no file"
                    if stack.rules
                    else "the stack file names no rule files (stack.rules is empty)",
                )
            )
    elif path is None and not named_stacks:
        raise UserError(
            f"no {STACK_FILE} in {Path.cwd()} or its parents, and no files given; "
            "name rule files (sqlifier check rules/*.sql) or create a stack with sqlifier init"
        )
    return workspace


@dataclass(frozen=True)
class Context:
    """A stack, the environment a command works on, and that environment's state."""

    stack: Stack
    env: str
    state_dir: Path
    stack_file: Path
    warnings: tuple[Diagnostic, ...] = ()


@dataclass(frozen=True)
class Place:
    """Where a command's environment keeps its state, found without reading the stack."""

    env: str
    state_dir: Path
    stack_file: Path


def locate(stack_file: str | None, env: str | None) -> Place:
    """The stack file and the environment's state folder, the stack file not read: what a
    command that only asks the running agent needs (`ps`). The same errors as
    `load_context` for a missing stack file or a bad environment."""
    path = _stack_path(stack_file)
    env = _env(env)
    return Place(env, path.parent / ".sqlifier" / env, path.resolve())


def load_context(stack_file: str | None, env: str | None) -> Context:
    """The stack (an invalid one is refused with every diagnostic) and the environment
    (`resolve_env`: `--env`, after or before the subcommand, else $SQLIFIER_ENV, else dev)."""
    from sqlifier.stack.stackfile import load_stack  # noqa: PLC0415 (not for `locate`)

    path = _stack_path(stack_file)
    stack, warnings = load_stack(path, display_path(path))
    env = _env(env)
    return Context(stack, env, stack.root / ".sqlifier" / env, path.resolve(), tuple(warnings))


def _stack_path(stack_file: str | None) -> Path:
    path = Path(stack_file) if stack_file else find_stack(Path.cwd())
    if path is None:
        raise UserError(
            f"no {STACK_FILE} in {Path.cwd()} or its parents; "
            "create a stack with sqlifier init, or name one with -f FILE"
        )
    return path


def _env(env: str | None) -> str:
    env = resolve_env(env)
    if not ENV_NAME.match(env):  # it names a folder under .sqlifier: nothing else
        raise UserError(
            f"invalid environment {env!r} (from --env or SQLIFIER_ENV): an environment is "
            "lower-case letters, digits, '_' and '-', starting with a letter, like production"
        )
    return env


def on_cluster(context: Context) -> bool:
    """Whether the context's environment runs on Kubernetes (cli/cluster.py runs it)."""
    return context.stack.environment(context.env).platform.value == "kubernetes"
