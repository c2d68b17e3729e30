"""`$NAME` and `${NAME}` in a service's `run`, read from the instance's environment.

A service runs without a shell unless it says `shell = true`, yet `run = "app --port $PORT"`
is what anyone used to a Procfile writes. So the command is split into words first (like a
shell would), then each word's `$NAME` and `${NAME}` are replaced by the variable's value,
so a value with spaces stays one argument. `$$` is a literal dollar; a `$` followed by
anything that is not a name (`$5`, `a$`) is kept as written. An unknown name is an error:
the check names it where it can know (the service's `env` and `secrets`, the variables
sqlifier sets, the environment sqlifier runs in), the start of the instance otherwise.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping

from sqlifier.errors import UserError
from sqlifier.stack.model import Service
from sqlifier.stack.reader import StackReader
from sqlifier.stack.tomlpos import Path as KeyPath

__all__ = [
    "INSTANCE_NAMES",
    "UnknownName",
    "check_run",
    "expand",
    "names_in",
]

# The variables every instance gets from sqlifier (DATA_DIR only when stateful).
INSTANCE_NAMES = ("PORT", "SERVICE", "INSTANCE", "INSTANCE_INDEX", "RELEASE", "ENV")

_REFERENCE = re.compile(r"\$(?:\$|\{([^}]*)\}?|([A-Za-z_][A-Za-z0-9_]*))")
_VALID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class UnknownName(UserError):
    """A `$NAME` of a command names no variable of its environment, or is malformed."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def _references(text: str) -> Iterable[tuple[re.Match[str], str | None]]:
    """Each `$...` of `text` with the name it refers to (None for `$$`)."""
    for match in _REFERENCE.finditer(text):
        if match.group(0) == "$$":
            yield match, None
            continue
        braced, bare = match.group(1), match.group(2)
        if bare is not None:
            yield match, bare
            continue
        if not match.group(0).endswith("}") or not _VALID.match(braced or ""):
            raise UnknownName(
                match.group(0),
                f"{match.group(0)!r} is not a variable reference: write ${{NAME}} with a name "
                "of letters, digits and '_', or $$ for a literal dollar",
            )
        yield match, braced


def names_in(text: str) -> list[str]:
    """The variable names `text` refers to, in order (UnknownName if one is malformed)."""
    return [name for _, name in _references(text) if name is not None]


def expand(text: str, env: Mapping[str, str]) -> str:
    """`text` with each `$NAME`/`${NAME}` replaced by its value in `env` and `$$` by `$`;
    UnknownName names the first variable `env` does not hold."""
    out: list[str] = []
    at = 0
    for match, name in _references(text):
        out.append(text[at : match.start()])
        at = match.end()
        if name is None:
            out.append("$")
        elif name in env:
            out.append(env[name])
        else:
            raise UnknownName(
                name,
                f"${name} is not set in the instance's environment: set it in the service's "
                "env (or secrets), or write $$ for a literal dollar",
            )
    out.append(text[at:])
    return "".join(out)


def check_run(
    reader: StackReader,
    services: Mapping[str, Service],
    paths: Mapping[tuple[str, str], KeyPath],
    overlay: Mapping[str, Mapping[str, object]],
    env: str | None,
) -> None:
    """Report each `$NAME` in a `run` (without `shell = true`) that no instance of its
    service can have: not in its `env` or `secrets`, not set by sqlifier, not in the
    environment sqlifier runs in. With an env file the name may come from it: the start
    of the instance tells then. For an environment (`env`), only the services its `overlay`
    changes in a way that matters are looked at: the others were, as base services."""
    environments = reader.data.get("environments")
    environments = environments if isinstance(environments, dict) else {}
    files = {k: v.get("env_file") for k, v in environments.items() if isinstance(v, dict)}
    env_file = any(files.values()) if env is None else bool(files.get(env))
    looked_at = {"run", "env", "secrets", "stateful", "shell"}
    for name in services if env is None else [n for n, o in overlay.items() if looked_at & set(o)]:
        service = services.get(name)
        if service is None or service.shell:
            continue
        known = {*service.env, *service.secrets, *INSTANCE_NAMES, *os.environ}
        if service.stateful:
            known.add("DATA_DIR")
        where = paths.get((name, "run"), ("services", name, "run"))
        try:
            words = shlex.split(service.run)
            unknown = [n for word in words for n in names_in(word) if n not in known]
        except UnknownName as exc:
            reader.error(where, f"services.{name}.run: {exc}")
            continue
        except ValueError:
            continue  # the start says it cannot split the command
        if unknown and not env_file:
            reader.error(
                where,
                f"services.{name}.run uses ${unknown[0]}, which its instances do not have",
                f"set {unknown[0]} in [services.{name}.env], or write $$ for a literal dollar; "
                f"instances have {', '.join(INSTANCE_NAMES)}, their env and secrets",
            )
