"""The TOML position scanner finds every key and value that tomllib reads."""

from __future__ import annotations

import tomllib

import pytest

from sqlifier.lang.source import Source
from sqlifier.stack.tomlpos import Path, locate

DOCUMENTS = {
    "tables and pairs": """\
[stack]
name = "shop"   # a comment with = and [brackets]
rules = ["rules/*.sql", "more/*.sql"]

[services.web]
run = "python3 -m web --port $PORT"
instances = 2
env = { LOG_LEVEL = "info", "quoted.key" = 'x' }
""",
    "dotted keys and nesting": """\
[services]
web.run = "a"
web.probes.readiness = { http = "/ready", period = "2s" }
"api".run = 'b'

[services.api.probes]
liveness.http = "/live"
""",
    "multi-line values": '''\
[services.web]
run = """
python3 -m web
  --flag = [not a table]
"""
routes = [
  "/a",   # first
  "/b",
]
note = \'\'\'it's "fine"\'\'\'
instances = 3
''',
    "arrays of tables": """\
[[ports]]
name = "http"
number = 80

[[ports]]
name = "https"
number = 443

[environments.production.services.web]
instances = 4
when = 1979-05-27 07:32:00Z
""",
    "escapes in keys and strings": """\
"a\\"b" = "x\\"y = z"
c = 'd'
""",
}


def walk(value: object, path: Path = ()) -> list[Path]:
    paths: list[Path] = []
    if isinstance(value, dict):
        for key, item in value.items():
            paths.append((*path, key))
            paths.extend(walk(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths.append((*path, index))
            paths.extend(walk(item, (*path, index)))
    return paths


@pytest.mark.parametrize("text", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_every_path_tomllib_reads_has_a_position(text: str) -> None:
    data = tomllib.loads(text)
    positions = locate(text)
    for path in walk(data):
        assert positions.key(path) is not None or positions.value(path) is not None, path


@pytest.mark.parametrize("text", DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_key_spans_point_at_the_key_as_written(text: str) -> None:
    source = Source(text)
    positions = locate(text)
    for path, span in positions.keys.items():
        written = source.line_text(span.line)[span.col - 1 : span.end_col - 1]
        last = path[-1]
        if isinstance(last, int):
            continue
        assert written.strip("\"'") == last or written.startswith('"'), (path, written)


def test_value_spans_cover_the_value() -> None:
    text = DOCUMENTS["tables and pairs"]
    source = Source(text)
    positions = locate(text)

    def shown(path: Path) -> str:
        span = positions.value(path)
        assert span is not None
        return source.line_text(span.line)[span.col - 1 : span.end_col - 1]

    assert shown(("stack", "name")) == '"shop"'
    assert shown(("stack", "rules", 1)) == '"more/*.sql"'
    assert shown(("services", "web", "instances")) == "2"
    assert shown(("services", "web", "env", "quoted.key")) == "'x'"


def test_positions_after_a_multi_line_string_are_right() -> None:
    positions = locate(DOCUMENTS["multi-line values"])
    assert positions.keys[("services", "web", "routes")].start == (6, 1)
    assert positions.values[("services", "web", "routes", 1)].start == (8, 3)
    assert positions.keys[("services", "web", "instances")].start == (11, 1)


def test_arrays_of_tables_are_indexed() -> None:
    positions = locate(DOCUMENTS["arrays of tables"])
    assert positions.keys[("ports", 1, "number")].start == (7, 1)
    assert positions.key(("ports", 1, "missing")) == positions.keys[("ports", 1)]


def test_a_path_that_is_not_written_falls_back_to_its_table() -> None:
    positions = locate(DOCUMENTS["tables and pairs"])
    assert positions.key(("services", "web", "probes")) == positions.keys[("services", "web")]
    assert positions.key(("nothing",)) is None
