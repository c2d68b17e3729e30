"""The stack file: a typed model of `sqlifier.toml`, read once at the edge.

    stackfile.py  find and load the stack file (the entry point: `load_stack`)
    tomlpos.py    where each key and value was written, for positioned errors
    reader.py     one table's keys read into typed values, each mistake a diagnostic
    assemble.py   the tables put together: services, environment overrides, the checks
                  that need every service at once (dependencies, routes, ports)
    model.py      the typed model the rest of sqlifier trusts
    slo.py        a service's `slo` key: objectives, window, budget policy
    rulefiles.py  the rule files the stack names, parsed and checked
    crosscheck.py what needs the rules and the stack together: a SCALE that a service's
                  fixed port cannot hold
    envfile.py    an environment's env file

Builds on the rule language (`lang`): rule files, and the analysis expressions of a
rollout. Imports nothing from delivery, the engine or the edges.
"""

from __future__ import annotations

from sqlifier.stack.model import Service, Stack
from sqlifier.stack.stackfile import STACK_FILE, find_stack, load_stack

__all__ = ["STACK_FILE", "Service", "Stack", "find_stack", "load_stack"]
