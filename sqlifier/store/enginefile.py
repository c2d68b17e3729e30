"""The rules' state across agent restarts, read from `engine.json`: a corrupt file is set
aside, said and audited, and the rules start without it (never silently)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

from sqlifier.engine.machine import Engine
from sqlifier.engine.persist import load_state, save_state
from sqlifier.store.audit import AuditLog
from sqlifier.store.files import set_aside

__all__ = ["restore_engine"]


def restore_engine(
    engine: Engine,
    path: Path,
    now: float,
    audit: AuditLog,
    target: str,
    say: Callable[[str], None],
) -> str | None:
    """Load the rules' state a previous agent saved in `path` (engine.json) into `engine`.

    A missing file is a first start. A file that cannot be read as that state (cut short,
    edited, written differently) is renamed aside, the reset is said (`say`) and audited
    against `target`, and the rules start without their cooldowns, budgets, pauses and
    rollbacks done. What was said, or None when nothing was reset.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        problem, kept = f"cannot be read ({exc.strerror or exc})", path
    else:
        fresh = save_state(engine)
        try:
            data = json.loads(text)
            load_state(engine, data["engine"], now, saved_at=float(data["saved_at"]))
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            engine.states.clear()  # whatever the half-read file set goes
            engine.by_rule.clear()
            load_state(engine, fresh, now)
            what = "is not JSON" if isinstance(exc, json.JSONDecodeError) else "is not valid"
            detail = repr(exc.args[0]) + " is missing" if isinstance(exc, KeyError) else exc
            problem, kept = f"{what} ({detail})", set_aside(path)
    message = (
        f"{path.name} {problem}: the rules start without their saved state (cooldowns, "
        f"action budgets, pauses, rollbacks done); the file is kept as {kept.name}"
    )
    say(f"rules {message}")
    with contextlib.suppress(Exception):  # the audit log's own trouble is said elsewhere
        audit.record(
            "agent", "rules state reset", target, "ok", why=message, details={"kept": str(kept)}
        )
    return message
