"""The stack file: a typed model of `sqlifier.toml`, read once at the edge.

    stackfile.py  find and load the stack file (the entry point: `load_stack`)
    tomlpos.py    where each key and value was written, for positioned errors
    reader.py     one table's keys read into typed values, each mistake a diagnostic
    assemble.py   the tables put together: services, environment overrides, the checks
                  that need every service at once (dependencies, routes, ports)
    model.py      the typed model the rest of sqlifier trusts
    names.py      where the stack file is, what its names may be (standard library only)
    slo.py        a service's `slo` key: objectives, window, budget policy
    rulefiles.py  the rule files the stack names, parsed and checked
    crosscheck.py what needs the rules and the stack together: a SCALE that a service's
                  fixed port cannot hold
    limitcheck.py what needs them together too: a share of a limit no service declares
    envfile.py    an environment's env file
    kubernetes.py a Kubernetes environment: its `kubernetes` table, what its services must be
    tls.py        `[router] tls` read, and the certificate files it names checked

Builds on the rule language (`lang`): rule files, and the analysis expressions of a
rollout. Imports nothing from delivery, the engine or the edges.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlifier.stack.model import Service, Stack
    from sqlifier.stack.names import STACK_FILE, find_stack
    from sqlifier.stack.stackfile import load_stack

__all__ = ["STACK_FILE", "Service", "Stack", "find_stack", "load_stack"]

# Each loaded when first asked for: a command that only finds the stack file (names.py)
# does not pay for the reader and the model.
_HOME = {
    "STACK_FILE": "names",
    "Service": "model",
    "Stack": "model",
    "find_stack": "names",
    "load_stack": "stackfile",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'sqlifier.stack' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sqlifier.stack.{_HOME[name]}"), name)
