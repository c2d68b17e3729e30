"""`env_file` of an environment: `KEY=value` lines for its services' environment.

    # comments and blank lines are ignored
    export LOG_LEVEL=debug      # `export ` is allowed; so are quotes around the value
    GREETING="hello world"

Values are taken as written (no variable expansion). The stack's own `env` wins over the
file, as `environment:` wins over `env_file:` in a compose file.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlifier.errors import UserError

__all__ = ["read_env_file"]

_LINE = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")


def read_env_file(path: Path, display: str) -> dict[str, str]:
    """The variables of an env file; UserError naming the file and line otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{display}: env_file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{display}: cannot read the env_file: {exc}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise UserError(
                f"{display}:{number}: expected KEY=value (a name of letters, digits and _), "
                f"found {line[:40]!r}"
            )
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values
