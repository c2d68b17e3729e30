"""The error hierarchy documented at the top of errors.py names every exception class."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re

import sqlifier
from sqlifier import errors

_NAMED = re.compile(r"[├└]── ([A-Za-z_][A-Za-z0-9_]*)")
_ROOT = re.compile(r"^    ([A-Za-z_][A-Za-z0-9_]*)\b", re.MULTILINE)


def exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in a module of the package, by name."""
    found: dict[str, type[BaseException]] = {}
    for module in pkgutil.walk_packages(sqlifier.__path__, "sqlifier."):
        if module.name.endswith(".__main__"):
            continue
        for value in vars(importlib.import_module(module.name)).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.name
            ):
                found[value.__name__] = value
    return found


def test_the_documented_tree_names_every_exception_class() -> None:
    text = errors.__doc__ or ""
    roots = {name for name in _ROOT.findall(text) if not hasattr(builtins, name)}
    documented = set(_NAMED.findall(text)) | roots
    defined = set(exception_classes())
    assert defined - documented == set(), "add these to the tree at the top of errors.py"
    assert documented - defined == set(), "these are in errors.py's tree but not in the code"


def test_each_documented_error_has_the_parent_the_tree_gives_it() -> None:
    classes = exception_classes()
    parents: list[str] = []
    checked = 0
    for line in (errors.__doc__ or "").splitlines():
        root = _ROOT.match(line)
        if root:
            parents = [root.group(1)]
            continue
        named = _NAMED.search(line)
        if named is None:
            continue
        depth = (named.start() - 4) // 4 + 1  # a branch under the root is at depth 1
        name = named.group(1)
        del parents[depth:]
        assert len(parents) == depth, f"{name} is drawn deeper than a parent"
        assert parents[-1] in {b.__name__ for b in classes[name].__bases__}, (name, parents)
        parents.append(name)
        checked += 1
    assert checked == len(classes) - 1  # every class but the root, SqlifierError
