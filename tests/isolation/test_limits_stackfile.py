"""`resources` in the stack file: Kubernetes' quantities for cpu and memory, and an error
naming the line, the column and what would be valid for anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sqlifier.delivery.records import service_config, service_from_config
from sqlifier.errors import DiagnosticsError
from sqlifier.stack import load_stack
from sqlifier.stack.model import Resources


def resources(tmp_path: Path, value: str) -> Resources | None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(f'[stack]\nname = "t"\n\n[services.web]\nrun = "x"\nresources = {value}\n')
    stack, _ = load_stack(path)
    return stack.services["web"].resources


def errors(tmp_path: Path, value: str) -> list[tuple[int, int, str]]:
    with pytest.raises(DiagnosticsError) as caught:
        resources(tmp_path, value)
    return [(d.line, d.col, d.message) for d in caught.value.diagnostics]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{ cpu = 0.5, memory = "256Mi" }', Resources(0.5, 256 * 1024**2)),
        ('{ cpu = "500m" }', Resources(0.5, None)),
        ('{ cpu = 2, memory = "1Gi" }', Resources(2.0, 1024**3)),
        ('{ memory = "500M" }', Resources(None, 500_000_000)),
        ('{ memory = "1.5Gi" }', Resources(None, 1536 * 1024**2)),
        ("{ memory = 67108864 }", Resources(None, 64 * 1024**2)),
    ],
)
def test_quantities_are_kubernetes_ones(tmp_path: Path, value: str, expected: Resources) -> None:
    assert resources(tmp_path, value) == expected


def test_a_service_without_resources_has_none(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text('[stack]\nname = "t"\n\n[services.web]\nrun = "x"\n')
    assert load_stack(path)[0].services["web"].resources is None


def test_a_bad_cpu_is_refused_where_it_is(tmp_path: Path) -> None:
    assert errors(tmp_path, '{ cpu = "half" }') == [
        (
            6,
            21,
            "services.web.resources.cpu must be a number of cores above 0 and at most 1024,"
            " like 0.5 or \"500m\", found 'half'",
        )
    ]
    assert errors(tmp_path, "{ cpu = 0 }")[0][2].endswith("found 0")


def test_a_bad_memory_is_refused_where_it_is(tmp_path: Path) -> None:
    assert errors(tmp_path, '{ memory = "256MB" }') == [
        (
            6,
            24,
            'services.web.resources.memory must be a size of at least 1Mi, like "256Mi", "1Gi"'
            " or \"500M\" (a bare number is bytes), found '256MB'",
        )
    ]
    assert errors(tmp_path, '{ memory = "1Ki" }')[0][2].endswith("found '1Ki'")


def test_an_unknown_key_or_an_empty_table_is_refused(tmp_path: Path) -> None:
    (message,) = [m for _, _, m in errors(tmp_path, "{ cpus = 1 }")]
    assert message == "unknown key 'cpus' in resources; valid: cpu, memory"
    assert errors(tmp_path, "{}") == [
        (6, 13, 'services.web.resources is empty; like { cpu = 0.5, memory = "256Mi" }')
    ]
    assert errors(tmp_path, '"1Gi"')[0][2] == (
        "services.web.resources must be a table, like [services.web.resources]"
    )


def test_a_release_records_the_resources_it_was_made_with(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "t"\n\n[services.web]\nrun = "x"\nresources = { cpu = 0.5, memory = "1Gi" }\n'
    )
    web = load_stack(path)[0].services["web"]
    assert service_from_config(json.loads(json.dumps(service_config(web)))) == web
